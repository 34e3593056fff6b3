/* The resistor board's protocol core; see board.h and drivers/resistor-board.md. */
#include "board.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef __AVR__
#include <avr/pgmspace.h>
#define FLASH PROGMEM
#define flash_strcpy strcpy_P
#define flash_byte(p) pgm_read_byte(p)
#define SQRT sqrt
#define STRTOR strtod
#else
#include <stdio.h>
#define FLASH
#define flash_strcpy strcpy
#define flash_byte(p) (*(p))
#define SQRT sqrtf
#define STRTOR strtof
#endif

enum { E_NONE = 0, E_TYPE = -104, E_NOT_ALLOWED = -108, E_MISSING = -109, E_HEADER = -113,
       E_RANGE = -222, E_OVERFLOW = -350, E_OVERRUN = -363 };

/* what a parameter error concerns, for its message */
enum { BW_NONE, BW_INDEX, BW_VALUE, BW_COUNT };

/* -- the command table (SCPI notation: upper case = short form, [..] optional) -- */
enum { C_IDN, C_RST, C_CLS, C_OPC, C_ERR, C_COUNT, C_RANGE, C_COND, C_COND_Q, C_ALL, C_ALL_Q, C_NEAR_Q };

struct command {
    char pattern[24];
    uint8_t id;
};

static const struct command COMMANDS[] FLASH = {
    {"*IDN?", C_IDN}, {"*RST", C_RST}, {"*CLS", C_CLS}, {"*OPC?", C_OPC},
    {"SYSTem:ERRor[:NEXT]?", C_ERR}, {"EDGE:COUNt?", C_COUNT}, {"EDGE:RANGe?", C_RANGE},
    {"EDGE:CONDuctance", C_COND}, {"EDGE:CONDuctance?", C_COND_Q}, {"EDGE:ALL", C_ALL},
    {"EDGE:ALL?", C_ALL_Q}, {"EDGE:NEARest?", C_NEAR_Q},
};
#define N_COMMANDS (sizeof(COMMANDS) / sizeof(COMMANDS[0]))

/* -- output ------------------------------------------------------------------ */
static void put(struct board *b, const char *s) { b->io.put(b->io.ctx, s, (uint16_t)strlen(s)); }

static void put_flash(struct board *b, const char *s)
{
    char buf[32];
    flash_strcpy(buf, s);
    put(b, buf);
}

static void put_int(struct board *b, int v)
{
    char buf[8];
    char *p = buf + sizeof buf - 1;
    unsigned u = (unsigned)(v < 0 ? -v : v);
    *p = 0;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    put(b, p);
}

/* 9 significant digits: enough to give back a float exactly */
static void put_real(struct board *b, real_t v)
{
    char buf[20];
#ifdef __AVR__
    dtostre(v, buf, 8, DTOSTR_UPPERCASE);
#else
    snprintf(buf, sizeof buf, "%.8E", (double)v);
#endif
    put(b, buf);
}

/* -- the error queue ------------------------------------------------------------ */
static void push(struct board *b, int16_t code, uint8_t what, uint8_t edge)
{
    struct board_error e = {code, what, edge};
    if (b->nerr >= BOARD_QUEUE) {          /* the newest entry becomes the overflow, as SCPI says */
        e.code = E_OVERFLOW;
        e.what = BW_NONE;
        e.edge = 0;
        b->err[BOARD_QUEUE - 1] = e;
        return;
    }
    b->err[b->nerr++] = e;
}

static const char M_TYPE[] FLASH = "Data type error";
static const char M_NOT_ALLOWED[] FLASH = "Parameter not allowed";
static const char M_MISSING[] FLASH = "Missing parameter";
static const char M_HEADER[] FLASH = "Undefined header";
static const char M_RANGE[] FLASH = "Data out of range";
static const char M_OVERFLOW[] FLASH = "Queue overflow";
static const char M_OVERRUN[] FLASH = "Input buffer overrun";
static const char M_NONE[] FLASH = "No error";
static const char W_INDEX[] FLASH = "; edge index";
static const char W_VALUE[] FLASH = " conductance";
static const char W_COUNT[] FLASH = "; one value per edge";

static void put_next_error(struct board *b)
{
    const char *m = M_NONE;
    struct board_error e = {0, BW_NONE, 0};
    if (b->nerr) {
        e = b->err[0];
        memmove(b->err, b->err + 1, (size_t)(b->nerr - 1) * sizeof b->err[0]);
        b->nerr--;
    }
    switch (e.code) {
    case E_TYPE: m = M_TYPE; break;
    case E_NOT_ALLOWED: m = M_NOT_ALLOWED; break;
    case E_MISSING: m = M_MISSING; break;
    case E_HEADER: m = M_HEADER; break;
    case E_RANGE: m = M_RANGE; break;
    case E_OVERFLOW: m = M_OVERFLOW; break;
    case E_OVERRUN: m = M_OVERRUN; break;
    default: break;
    }
    put_int(b, e.code);
    put(b, ",\"");
    put_flash(b, m);
    if (e.what == BW_INDEX) {
        put_flash(b, W_INDEX);
    } else if (e.what == BW_VALUE) {
        put(b, "; edge ");
        put_int(b, e.edge);
        put_flash(b, W_VALUE);
    } else if (e.what == BW_COUNT) {
        put_flash(b, W_COUNT);
    }
    put(b, "\"\n");
}

/* -- the tap arithmetic ---------------------------------------------------------- */
real_t board_g(const struct board_config *cfg, uint16_t code)
{
    return 1.0f / (cfg->r_w + (real_t)code * cfg->r_ab / (real_t)cfg->taps);
}

/* the nearest tap in conductance, as hil.spice.devices.Digipot.param_from_g */
uint16_t board_code(const struct board_config *cfg, real_t g)
{
    real_t x = (1.0f / g - cfg->r_w) * (real_t)cfg->taps / cfg->r_ab;
    long lo = x <= 0 ? 0 : (long)x;       /* floor for x >= 0 */
    long hi;
    if (lo > (long)cfg->taps)
        lo = cfg->taps;
    hi = lo + 1 > (long)cfg->taps ? (long)cfg->taps : lo + 1;
    if (fabsf(board_g(cfg, (uint16_t)hi) - g) < fabsf(board_g(cfg, (uint16_t)lo) - g))
        return (uint16_t)hi;
    return (uint16_t)lo;
}

static void set_code(struct board *b, uint8_t k, uint16_t code)
{
    b->code[k] = code;
    b->io.pot(b->io.ctx, k, code);
}

void board_reset(struct board *b)
{
    uint16_t code = board_code(&b->cfg, SQRT(b->g_lo * b->g_hi));
    uint8_t k;
    for (k = 0; k < b->cfg.edges; k++)
        set_code(b, k, code);
}

int board_init(struct board *b, const struct board_config *cfg, const struct board_io *io)
{
    if (cfg->edges < 1 || cfg->edges > BOARD_MAX_EDGES || cfg->taps < 1 || cfg->taps > 1023 ||
        !(cfg->r_ab > 0) || !(cfg->r_w > 0))
        return -1;
    memset(b, 0, sizeof *b);
    b->cfg = *cfg;
    b->io = *io;
    b->g_lo = board_g(cfg, cfg->taps);
    b->g_hi = board_g(cfg, 0);
    b->line_max = (uint16_t)(40 + BOARD_FIELD_MAX * cfg->edges);
    board_reset(b);
    return 0;
}

/* -- parameters -------------------------------------------------------------------- */
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static char upper(char c) { return (char)(c >= 'a' && c <= 'z' ? c - 32 : c); }

static int keyword(const char *s, const char *word)      /* s equals word, any case */
{
    while (*s && *word && upper(*s) == *word) {
        s++;
        word++;
    }
    return !*s && !*word;
}

/* A decimal number (SCPI NR1/NR2/NR3) or MIN/MAX into *v; 0, or E_MISSING / E_TYPE. */
static int16_t parse_number(char *s, real_t lo, real_t hi, real_t *v)
{
    const char *p = s;
    int digits = 0;
    if (!*s)
        return E_MISSING;
    if (keyword(s, "MIN") || keyword(s, "MINIMUM")) {
        *v = lo;
        return 0;
    }
    if (keyword(s, "MAX") || keyword(s, "MAXIMUM")) {
        *v = hi;
        return 0;
    }
    if (*p == '+' || *p == '-')
        p++;
    while (is_digit(*p)) {
        p++;
        digits++;
    }
    if (*p == '.') {
        p++;
        while (is_digit(*p)) {
            p++;
            digits++;
        }
    }
    if (!digits)
        return E_TYPE;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!is_digit(*p))
            return E_TYPE;
        while (is_digit(*p))
            p++;
    }
    if (*p)
        return E_TYPE;
    *v = STRTOR(s, NULL);
    return 0;
}

static char *trim(char *s)
{
    char *e;
    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
        *--e = 0;
    return s;
}

/* Split args at commas in place; returns the number of fields (0 for no argument at all). */
static uint8_t split(char *args, char **field, uint8_t max)
{
    uint8_t n = 0;
    char *p = args;
    if (!*trim(args))
        return 0;
    for (;;) {
        char *c = strchr(p, ',');
        if (c)
            *c = 0;
        if (n < max)
            field[n] = trim(p);
        n = n < 255 ? (uint8_t)(n + 1) : n;
        if (!c)
            return n;
        p = c + 1;
    }
}

/* an edge index 1..m into *k (0-based); pushes the error and returns 0 on failure */
static int edge_index(struct board *b, char *s, uint8_t *k)
{
    real_t v;
    int16_t err = parse_number(s, 1, (real_t)b->cfg.edges, &v);
    if (!err && v != floorf(v))
        err = E_TYPE;                                   /* 1.5 is not an edge */
    if (!err && !(v >= 1 && v <= (real_t)b->cfg.edges))
        err = E_RANGE;
    if (err) {
        push(b, err, BW_INDEX, 0);
        return 0;
    }
    *k = (uint8_t)(v - 1);
    return 1;
}

/* a conductance inside the range into a tap code; pushes the error and returns 0 on failure */
static int conductance(struct board *b, char *s, uint8_t k, uint16_t *code)
{
    real_t g;
    int16_t err = parse_number(s, b->g_lo, b->g_hi, &g);
    if (!err && !(g >= b->g_lo && g <= b->g_hi))       /* NaN fails too */
        err = E_RANGE;
    if (err) {
        push(b, err, BW_VALUE, (uint8_t)(k + 1));
        return 0;
    }
    *code = board_code(&b->cfg, g);
    return 1;
}

/* -- commands ------------------------------------------------------------------------ */
static int want_fields(struct board *b, uint8_t n, uint8_t want, uint8_t what)
{
    if (n < want) {
        push(b, E_MISSING, what, 0);
        return 0;
    }
    if (n > want) {
        push(b, E_NOT_ALLOWED, what, 0);
        return 0;
    }
    return 1;
}

/* every value of EDGE:ALL / EDGE:NEAR? into codes[], all checked before any is used */
static int all_codes(struct board *b, char *args, uint16_t *codes)
{
    char *field[BOARD_MAX_EDGES];
    uint8_t n = split(args, field, BOARD_MAX_EDGES), k;
    if (!want_fields(b, n, b->cfg.edges, BW_COUNT))
        return 0;
    for (k = 0; k < n; k++)
        if (!conductance(b, field[k], k, &codes[k]))
            return 0;
    return 1;
}

static void run(struct board *b, uint8_t id, char *args)
{
    char *field[2];
    uint16_t codes[BOARD_MAX_EDGES];
    uint8_t k, n;

    if (id == C_COND || id == C_COND_Q || id == C_ALL || id == C_NEAR_Q) {
        /* commands with parameters */
    } else if (*trim(args)) {
        push(b, E_NOT_ALLOWED, BW_NONE, 0);
        return;
    }
    switch (id) {
    case C_IDN:
        put(b, "hil,");
        put(b, b->cfg.model);
        put(b, ",0,1.0\n");
        break;
    case C_RST:
        board_reset(b);
        break;
    case C_CLS:
        b->nerr = 0;
        break;
    case C_OPC:
        put(b, "1\n");
        break;
    case C_ERR:
        put_next_error(b);
        break;
    case C_COUNT:
        put_int(b, b->cfg.edges);
        put(b, "\n");
        break;
    case C_RANGE:
        put_real(b, b->g_lo);
        put(b, ",");
        put_real(b, b->g_hi);
        put(b, "\n");
        break;
    case C_COND:
        n = split(args, field, 2);
        if (want_fields(b, n, 2, BW_NONE) && edge_index(b, field[0], &k) && conductance(b, field[1], k, &codes[0]))
            set_code(b, k, codes[0]);
        break;
    case C_COND_Q:
        n = split(args, field, 1);
        if (want_fields(b, n, 1, BW_NONE) && edge_index(b, field[0], &k)) {
            put_real(b, board_g(&b->cfg, b->code[k]));
            put(b, "\n");
        }
        break;
    case C_ALL:
        if (all_codes(b, args, codes))
            for (k = 0; k < b->cfg.edges; k++)
                set_code(b, k, codes[k]);
        break;
    case C_ALL_Q:
    case C_NEAR_Q:
        if (id == C_NEAR_Q && !all_codes(b, args, codes))
            break;
        for (k = 0; k < b->cfg.edges; k++) {
            if (k)
                put(b, ",");
            put_real(b, board_g(&b->cfg, id == C_NEAR_Q ? codes[k] : b->code[k]));
        }
        put(b, "\n");
        break;
    default:
        break;
    }
}

/* -- headers --------------------------------------------------------------------------- */
/* does header node [h, h+n) equal the pattern node's short or long form (any case)? */
static int node_matches(const char *pat, uint8_t plen, const char *h, uint8_t n)
{
    uint8_t i, j = 0, long_ok = plen == n;
    for (i = 0; i < plen && long_ok; i++)
        long_ok = upper(h[i]) == upper(pat[i]);
    if (long_ok)
        return 1;
    for (i = 0; i < plen; i++) {                 /* short form: the upper-case letters */
        char c = pat[i];
        if ((c >= 'a' && c <= 'z'))
            continue;
        if (j >= n || upper(h[j]) != c)
            return 0;
        j++;
    }
    return j == n;
}

static int header_matches(const char *pat, const char *h)
{
    while (*pat) {
        uint8_t optional = 0, plen = 0, n = 0;
        const char *node;
        if (*pat == '[') {
            optional = 1;
            pat++;
        }
        if (*pat == ':')
            pat++;
        node = pat;
        while (pat[plen] && pat[plen] != ':' && pat[plen] != '[' && pat[plen] != ']')
            plen++;
        pat += plen;
        if (*pat == ']')
            pat++;
        while (h[n] && h[n] != ':')
            n++;
        if (*h && node_matches(node, plen, h, n)) {
            h += n;
            if (*h == ':')
                h++;
        } else if (!optional) {
            return 0;
        }
    }
    return !*h;
}

static void execute(struct board *b, char *cmd)
{
    char *args, *h;
    char pattern[sizeof COMMANDS[0].pattern];
    uint16_t len, i;
    uint8_t query;

    cmd = trim(cmd);
    if (!*cmd)
        return;
    args = strchr(cmd, ' ');
    if (args)
        *args++ = 0;
    else
        args = cmd + strlen(cmd);
    h = cmd[0] == ':' ? cmd + 1 : cmd;
    len = (uint16_t)strlen(h);
    query = len && h[len - 1] == '?';
    if (query)
        h[--len] = 0;
    for (i = 0; i < len; i++) {
        char c = upper(h[i]);
        if (!((c >= 'A' && c <= 'Z') || is_digit(c) || c == '*' || (c == ':' && i + 1 < len && h[i + 1] != ':'))) {
            push(b, E_HEADER, BW_NONE, 0);
            return;
        }
    }
    for (i = 0; len && i < N_COMMANDS; i++) {
        uint16_t plen;
        flash_strcpy(pattern, COMMANDS[i].pattern);
        plen = (uint16_t)strlen(pattern);
        if ((pattern[plen - 1] == '?') != query)
            continue;
        if (query)
            pattern[plen - 1] = 0;
        if (header_matches(pattern, h)) {
            run(b, flash_byte(&COMMANDS[i].id), args);
            return;
        }
    }
    push(b, E_HEADER, BW_NONE, 0);
}

static void execute_line(struct board *b)
{
    char *p = b->line, *semi;
    b->line[b->len] = 0;
    for (;;) {
        semi = strchr(p, ';');
        if (semi)
            *semi = 0;
        execute(b, p);
        if (!semi)
            return;
        p = semi + 1;
    }
}

void board_feed(struct board *b, const char *s, uint16_t n)
{
    while (n--) {
        char c = *s++;
        if (c == 0)
            c = 0x7F;                                /* a NUL must not end the line early: -113 */
        if (c == '\n') {
            if (b->overrun)
                push(b, E_OVERRUN, BW_NONE, 0);   /* the whole line is discarded */
            else
                execute_line(b);
            b->len = 0;
            b->overrun = 0;
        } else if (b->len < b->line_max) {
            b->line[b->len++] = c;
        } else {
            b->overrun = 1;
        }
    }
}
