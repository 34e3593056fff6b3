/* The resistor board on an ATmega328P: UART (interrupt-driven receive), SPI to the
 * pots, chip selects. Everything else is the portable core (core/board.c). */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/pgmspace.h>
#include <stdint.h>

#include "../core/board.h"
#include "../core/mcp4xxx.h"
#include "pins.h"

static const uint8_t EDGE_CS[30] PROGMEM = {EDGE_PINS_CS};
static const uint8_t EDGE_WIPER[30] PROGMEM = {EDGE_PINS_WIPER};

/* -- pins ---------------------------------------------------------------------- */
static volatile uint8_t *pin_port(uint8_t pin)
{
    return pin < 8 ? &PORTD : pin < 14 ? &PORTB : &PORTC;
}

static uint8_t pin_mask(uint8_t pin)
{
    return (uint8_t)(1u << (pin < 8 ? pin : pin < 14 ? pin - 8 : pin - 14));
}

static void pin_output_high(uint8_t pin)
{
    volatile uint8_t *ddr = pin < 8 ? &DDRD : pin < 14 ? &DDRB : &DDRC;
    *pin_port(pin) |= pin_mask(pin);      /* high first: no pot selected while it becomes an output */
    *ddr |= pin_mask(pin);
}

/* -- SPI: master, mode 0,0, f_osc/4 = 4 MHz (the MCP4xxx take up to 10 MHz) ----- */
static void spi_init(void)
{
    uint8_t k;
    pin_output_high(10);                  /* SS must be an output for master mode */
    for (k = 0; k < BOARD_EDGES; k++)
        pin_output_high(pgm_read_byte(&EDGE_CS[k]));
    DDRB |= _BV(PB3) | _BV(PB5);          /* MOSI, SCK */
    SPCR = _BV(SPE) | _BV(MSTR);
}

static void spi_byte(uint8_t v)
{
    SPDR = v;
    while (!(SPSR & _BV(SPIF)))
        ;
}

static void pot(void *ctx, uint8_t edge, uint16_t code)
{
    uint8_t pin = pgm_read_byte(&EDGE_CS[edge]), frame[2];
    (void)ctx;
    mcp4xxx_frame(pgm_read_byte(&EDGE_WIPER[edge]), code, frame);
    *pin_port(pin) &= (uint8_t)~pin_mask(pin);
    spi_byte(frame[0]);
    spi_byte(frame[1]);
    *pin_port(pin) |= pin_mask(pin);
}

/* -- UART: 115200 8N1, double speed (U2X: 2.1 % off at 16 MHz, as Arduino's core) -- */
#define RX_SIZE 128u                      /* a power of two */
static volatile uint8_t rx_buf[RX_SIZE];
static volatile uint8_t rx_head, rx_tail;

ISR(USART_RX_vect)
{
    uint8_t c = UDR0, next = (uint8_t)((rx_head + 1) & (RX_SIZE - 1));
    if (next != rx_tail) {                /* full: the byte is lost (the driver waits for replies) */
        rx_buf[rx_head] = c;
        rx_head = next;
    }
}

static void uart_init(void)
{
    UCSR0A = _BV(U2X0);
    UBRR0 = (uint16_t)(F_CPU / (8UL * UART_BAUD) - 1);
    UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00);
}

static void put(void *ctx, const char *s, uint16_t n)
{
    (void)ctx;
    while (n--) {
        while (!(UCSR0A & _BV(UDRE0)))
            ;
        UDR0 = (uint8_t)*s++;
    }
}

static struct board b;

int main(void)
{
    static const char model[] = BOARD_MODEL;
    const struct board_config cfg = {BOARD_EDGES, POT_TAPS, POT_R_AB, POT_R_W, model};
    const struct board_io io = {put, pot, 0};

    spi_init();
    uart_init();
    board_init(&b, &cfg, &io);            /* every pot to the middle of the range */
    sei();
    for (;;) {
        while (rx_tail != rx_head) {
            char c = (char)rx_buf[rx_tail];
            rx_tail = (uint8_t)((rx_tail + 1) & (RX_SIZE - 1));
            board_feed(&b, &c, 1);
        }
    }
}
