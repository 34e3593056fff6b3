/* The resistor board's protocol core (drivers/resistor-board.md): parsing, range
 * checks, the tap arithmetic, the error queue. Plain C99, no hardware calls: the
 * platform hands it bytes (board_feed) and gets back reply bytes and pot writes
 * through the two callbacks of struct board_io.
 *
 * Tap model (netlists/digipot.toml, Microchip MCP41x1/MCP42x1): between the wiper
 * and terminal B, R = R_W + code R_AB / N, code = 0 .. N; g = 1 / R (siemens).
 */
#ifndef HIL_BOARD_H
#define HIL_BOARD_H

#include <stdint.h>

#ifndef BOARD_MAX_EDGES
#define BOARD_MAX_EDGES 30          /* 15 chip selects x 2 wipers (pins.h) */
#endif
#define BOARD_QUEUE 10              /* error queue depth; the 10th entry becomes -350 */
#define BOARD_FIELD_MAX 24          /* longest number a driver sends: "-1.2345678901234567e-05," */
#define BOARD_LINE_MAX (40 + BOARD_FIELD_MAX * BOARD_MAX_EDGES)

typedef float real_t;               /* the AVR's double is a float: the host build uses the same */

struct board_io {
    void (*put)(void *ctx, const char *s, uint16_t n);      /* reply bytes */
    void (*pot)(void *ctx, uint8_t edge, uint16_t code);     /* set edge (0-based) to a tap code */
    void *ctx;
};

struct board_config {
    uint8_t edges;                  /* m, 1 .. BOARD_MAX_EDGES */
    uint16_t taps;                  /* N; codes 0 .. N */
    real_t r_ab, r_w;               /* ohms */
    const char *model;              /* *IDN? model field (RAM string, no commas) */
};

struct board_error {
    int16_t code;
    uint8_t what;                   /* which parameter (BW_*), for the message */
    uint8_t edge;                   /* 1-based edge it concerns, 0 if none */
};

struct board {
    struct board_config cfg;
    struct board_io io;
    real_t g_lo, g_hi;              /* range: g(N), g(0) */
    uint16_t code[BOARD_MAX_EDGES];
    struct board_error err[BOARD_QUEUE];
    uint8_t nerr;
    uint16_t len, line_max;         /* line_max = 40 + 24 m: an EDGE:ALL at 17 significant digits */
    uint8_t overrun;
    char line[BOARD_LINE_MAX + 1];
};

/* 0 on success, -1 if the configuration is unusable (no edges, too many, N < 1, R <= 0). */
int board_init(struct board *b, const struct board_config *cfg, const struct board_io *io);
/* Feed received bytes; every complete line is executed. */
void board_feed(struct board *b, const char *s, uint16_t n);
/* *RST: every edge to the tap nearest the geometric middle of the range. */
void board_reset(struct board *b);
/* g = 1 / (R_W + code R_AB / N), siemens. */
real_t board_g(const struct board_config *cfg, uint16_t code);
/* The code whose conductance is nearest g (S); g inside the range. */
uint16_t board_code(const struct board_config *cfg, real_t g);

#endif
