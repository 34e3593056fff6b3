/* The resistor board's protocol core on a POSIX host: the "hardware" is a pseudo-terminal
 * (or stdin/stdout) for the UART and a trace of the SPI frames the pots would receive.
 *
 *   board-host [--edges M] [--taps N] [--r-ab OHMS] [--r-wiper OHMS] [--pty] [--trace]
 *
 * --pty: open a pseudo-terminal pair, print the terminal's path (/dev/pts/K) as the first
 *        line of stdout, and serve the protocol on it (a client opens it as
 *        ASRL/dev/pts/K::INSTR); otherwise serve on stdin/stdout.
 * --trace: one line per pot write, "spi EDGE BYTE0 BYTE1" (hex), the MCP4xxx frame that the
 *        AVR build clocks out to that edge's pot: on stdout with --pty, else on stderr.
 * Defaults are netlists/digipot.toml's: 16 edges, N = 128, R_AB = 100 kOhm, R_W = 75 Ohm.
 */
#define _XOPEN_SOURCE 600
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "../core/board.h"
#include "../core/mcp4xxx.h"

struct host {
    int fd_out;                 /* where replies go */
    FILE *trace;                /* SPI frames, or NULL */
    char buf[4096];
    size_t n;
};

static void flush_out(struct host *h)
{
    size_t off = 0;
    while (off < h->n) {
        ssize_t w = write(h->fd_out, h->buf + off, h->n - off);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            break;
        }
        off += (size_t)w;
    }
    h->n = 0;
}

/* replies leave a line at a time, as a UART would send them */
static void put(void *ctx, const char *s, uint16_t n)
{
    struct host *h = ctx;
    while (n--) {
        h->buf[h->n++] = *s;
        if (*s++ == '\n' || h->n == sizeof h->buf)
            flush_out(h);
    }
}

static void pot(void *ctx, uint8_t edge, uint16_t code)
{
    struct host *h = ctx;
    uint8_t frame[2];
    mcp4xxx_frame(0, code, frame);
    if (h->trace) {
        fprintf(h->trace, "spi %u %02X %02X\n", (unsigned)edge + 1, frame[0], frame[1]);
        fflush(h->trace);
    }
}

static int usage(const char *why)
{
    fprintf(stderr, "board-host: %s\nusage: board-host [--edges M] [--taps N] [--r-ab OHMS] [--r-wiper OHMS] "
                    "[--pty] [--trace]\n", why);
    return 2;
}

static int number(const char *opt, const char *s, double lo, double hi, double *v)
{
    char *end;
    if (!s) {
        fprintf(stderr, "board-host: %s needs a value\n", opt);
        return 0;
    }
    *v = strtod(s, &end);
    if (*end || end == s || !(*v >= lo && *v <= hi)) {
        fprintf(stderr, "board-host: %s %s: expected a number in [%g, %g]\n", opt, s, lo, hi);
        return 0;
    }
    return 1;
}

static int open_pty(int *master, int *slave, char *name, size_t len)
{
    struct termios t;
    *master = posix_openpt(O_RDWR | O_NOCTTY);
    if (*master < 0 || grantpt(*master) || unlockpt(*master) || !ptsname(*master))
        return -1;
    snprintf(name, len, "%s", ptsname(*master));
    /* hold the terminal open ourselves: a client closing it must not hang up the master */
    *slave = open(name, O_RDWR | O_NOCTTY);
    if (*slave < 0 || tcgetattr(*slave, &t))
        return -1;
    /* raw: no echo, no line editing, no CR/LF translation (as cfmakeraw) */
    t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    t.c_oflag &= ~(tcflag_t)OPOST;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
    t.c_cflag |= CS8;
    cfsetispeed(&t, B115200);
    cfsetospeed(&t, B115200);
    return tcsetattr(*slave, TCSANOW, &t);
}

int main(int argc, char **argv)
{
    struct board_config cfg = {16, 128, 100000.0f, 75.0f, "ResistorBoard-host"};
    struct host h = {STDOUT_FILENO, NULL, {0}, 0};
    struct board_io io = {put, pot, &h};
    static struct board b;
    int use_pty = 0, trace = 0, fd_in = STDIN_FILENO, master = -1, slave = -1, watch_stdin = 0, i;
    char name[128];
    struct stat st;
    double v;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--pty")) {
            use_pty = 1;
        } else if (!strcmp(a, "--trace")) {
            trace = 1;
        } else if (!strcmp(a, "--edges")) {
            if (!number(a, val, 1, BOARD_MAX_EDGES, &v) || v != (int)v)
                return usage("--edges takes a whole number of edges");
            cfg.edges = (uint8_t)v;
            i++;
        } else if (!strcmp(a, "--taps")) {
            if (!number(a, val, 1, 1023, &v) || v != (int)v)
                return usage("--taps takes a whole number N, 1 .. 1023");
            cfg.taps = (uint16_t)v;
            i++;
        } else if (!strcmp(a, "--r-ab")) {
            if (!number(a, val, 1e-3, 1e9, &v))
                return 2;
            cfg.r_ab = (real_t)v;
            i++;
        } else if (!strcmp(a, "--r-wiper")) {
            if (!number(a, val, 1e-3, 1e9, &v))
                return 2;
            cfg.r_w = (real_t)v;
            i++;
        } else {
            fprintf(stderr, "board-host: unknown option '%s'\n", a);
            return usage("see above");
        }
    }
    if (use_pty) {
        if (open_pty(&master, &slave, name, sizeof name)) {
            perror("board-host: pseudo-terminal");
            return 1;
        }
        fd_in = h.fd_out = master;
        printf("%s\n", name);
        fflush(stdout);
        /* with a pipe on stdin, its end (the parent gone) ends the board */
        watch_stdin = !fstat(STDIN_FILENO, &st) && S_ISFIFO(st.st_mode);
    }
    if (trace)
        h.trace = use_pty ? stdout : stderr;
    if (board_init(&b, &cfg, &io))
        return usage("unusable configuration");
    for (;;) {
        char in[512];
        struct pollfd p[2] = {{fd_in, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
        ssize_t n;
        if (poll(p, watch_stdin ? 2 : 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        if (watch_stdin && p[1].revents) {
            n = read(STDIN_FILENO, in, sizeof in);
            if (n <= 0)
                return 0;
        }
        if (!p[0].revents)
            continue;
        n = read(fd_in, in, sizeof in);
        if (n == 0)
            return 0;                           /* end of input */
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EIO)
                continue;
            return 1;
        }
        board_feed(&b, in, (uint16_t)n);
    }
    (void)slave;
}
