/* The board's pin map and parts, in one place (Arduino Uno / ATmega328P at 16 MHz).
 *
 * SPI (hardware): D13 = SCK, D11 = MOSI (to every pot's SDI), D10 = SS (kept an output,
 * also chip select 1). Pots: Microchip MCP4231-104 (two 7-bit pots, 100 kOhm, 129 taps)
 * or MCP4131-104 (one); each edge is the resistance between a pot's wiper and its
 * terminal B: R = R_W + code R_AB / N (netlists/digipot.toml).
 * Edge k (1-based) is wiper EDGE_WIPER[k-1] of the pot whose chip select is the
 * Arduino pin EDGE_CS[k-1]; two edges share a dual pot's chip select.
 * Arduino pins: D0..D7 = PD0..PD7, D8..D13 = PB0..PB5, A0..A5 (14..19) = PC0..PC5.
 */
#ifndef HIL_PINS_H
#define HIL_PINS_H

#ifndef BOARD_EDGES
#define BOARD_EDGES 16          /* edges served, 1 .. 30; make avr EDGES=... */
#endif

#define POT_TAPS 128            /* N (7-bit parts: codes 0 .. 128) */
#define POT_R_AB 100000.0       /* ohms, end to end (the -104 parts) */
#define POT_R_W 75.0            /* ohms, wiper (data sheet typical) */
#define BOARD_MODEL "ResistorBoard-MCP4231-104"

#define UART_BAUD 115200UL      /* drivers/resistor-board.md */

/* chip select pin and wiper of each edge: 15 dual pots, D10 first (it is SPI's SS) */
#define EDGE_PINS_CS    10, 10, 9, 9, 8, 8, 7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, \
                        14, 14, 15, 15, 16, 16, 17, 17, 18, 18, 19, 19
#define EDGE_PINS_WIPER 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, \
                        0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1

#if BOARD_EDGES < 1 || BOARD_EDGES > 30
#error "BOARD_EDGES must be 1 .. 30 (15 chip selects x 2 wipers)"
#endif

#endif
