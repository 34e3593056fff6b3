/* SPI frames of Microchip's MCP41x1/MCP41x2 (one pot) and MCP42x1/MCP42x2 (two pots)
 * 7/8-bit digital potentiometers (DS22060, section 7): a 16-bit "write data"
 * command, MSB first, SPI mode 0,0:
 *   byte 0 = AD3..AD0 (memory address: 0 wiper 0, 1 wiper 1) | C1 C0 = 00 (write) | D9 D8
 *   byte 1 = D7..D0
 * A code of N (128 on 7-bit parts) is full scale: the wiper at terminal A. */
#ifndef HIL_MCP4XXX_H
#define HIL_MCP4XXX_H

#include <stdint.h>

static inline void mcp4xxx_frame(uint8_t wiper, uint16_t code, uint8_t out[2])
{
    out[0] = (uint8_t)(((wiper & 0x0F) << 4) | ((code >> 8) & 0x03));
    out[1] = (uint8_t)(code & 0xFF);
}

#endif
