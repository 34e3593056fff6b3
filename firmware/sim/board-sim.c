/* The AVR image itself on simavr: the ATmega328P's UART0 bridged to a pseudo-terminal
 * (simavr's uart_pty part), its SPI output traced as the pots would receive it.
 *
 *   board-sim IMAGE.elf
 *
 * Prints the terminal's path (a client opens ASRL<path>::INSTR) on a line of stdout that
 * starts with /dev/ (simavr prints its own notes there too), then one line per byte the
 * SPI sends, "spi BYTE PORTB PORTC PORTD" (hex): the port registers say which chip
 * select (avr/pins.h) is low.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "avr_ioport.h"
#include "avr_spi.h"
#include "avr_uart.h"
#include "sim_avr.h"
#include "sim_elf.h"
#include "uart_pty.h"

static uart_pty_t uart;

/* data-space addresses of the ATmega328P's output port registers */
#define PORTB_ADDR 0x25
#define PORTC_ADDR 0x28
#define PORTD_ADDR 0x2B

static void spi_byte(struct avr_irq_t *irq, uint32_t value, void *param)
{
    avr_t *avr = param;
    (void)irq;
    printf("spi %02X %02X %02X %02X\n", value & 0xFF, avr->data[PORTB_ADDR], avr->data[PORTC_ADDR],
           avr->data[PORTD_ADDR]);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    static elf_firmware_t fw;
    avr_t *avr;
    if (argc != 2) {
        fprintf(stderr, "usage: board-sim IMAGE.elf\n");
        return 2;
    }
    if (elf_read_firmware(argv[1], &fw)) {
        fprintf(stderr, "board-sim: cannot read %s\n", argv[1]);
        return 1;
    }
    avr = avr_make_mcu_by_name("atmega328p");
    if (!avr) {
        fprintf(stderr, "board-sim: simavr has no atmega328p core\n");
        return 1;
    }
    avr_init(avr);
    avr_load_firmware(avr, &fw);
    avr->frequency = 16000000;
    uart_pty_init(avr, &uart);
    uart_pty_connect(&uart, '0');
    printf("%s\n", uart.pty.slavename);
    fflush(stdout);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_SPI_GETIRQ(0), SPI_IRQ_OUTPUT), spi_byte, avr);
    for (;;) {
        int state = avr_run(avr);
        if (state == cpu_Done || state == cpu_Crashed) {
            fprintf(stderr, "board-sim: the AVR stopped (state %d)\n", state);
            return 1;
        }
    }
}
