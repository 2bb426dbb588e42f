/*
 * ystool -- small timing helpers for the lab's "yardstick" scenario (dom0 and the guest).
 * Statically linked, so it runs in the guest's busybox initramfs as well as in dom0.
 *
 *   ystool clocks
 *       CLOCK_REALTIME - CLOCK_MONOTONIC of this kernel, from a realtime/monotonic/realtime triple:
 *       "clocks real_ns=R mono_ns=M off_ns=R-M err_ns=E" (E: half the two realtime reads' distance).
 *   ystool evread [-m] [-p PREFIX] DEV PRESSES TIMEOUT_S
 *       opens the evdev node DEV (-m: EVIOCSCLOCKID CLOCK_MONOTONIC, else the default CLOCK_REALTIME),
 *       prints "PREFIXready", then one line per EV_KEY press/release, "PREFIXev code=C value=V
 *       t=SEC.USEC" (the event's own timestamp), until PRESSES releases came or TIMEOUT_S passed;
 *       then "PREFIXend presses=N releases=N".
 *   ystool xspong [-x XENSTORE] DIR ROUNDS TIMEOUT_S        (the guest; DIR relative, e.g. data/ys)
 *       writes DIR/ping = 0, DIR/pong = 0, watches DIR/ping, writes DIR/ready = 1; for each new ping
 *       value I it reads its CLOCK_REALTIME (T) and writes DIR/pong = "I T" (ns); ends after ROUNDS.
 *   ystool xsping [-x XENSTORE] DIR ROUNDS TIMEOUT_S        (dom0; DIR absolute)
 *       waits for DIR/ready, then ROUNDS times: T0 = realtime, DIR/ping = I, waits (watch) for
 *       DIR/pong = "I T", T1 = realtime; prints "sample i=I rtt_us=T1-T0 off_us=T-(T0+T1)/2" and at
 *       the end "best rtt_us= off_us= err_us=RTT/2 n=" (the sample with the smallest round trip) and
 *       "median off_us=". off = the other side's realtime minus ours.
 *   ystool syscalls N
 *       the cost of a system call on this kernel: N getppid() calls (raw syscall(2), never a vDSO or
 *       cached answer), best of 5 rounds: "syscalls n=N ns_per_call=B median_ns_per_call=M".
 *   XENSTORE: /dev/xen/xenbus (default) or a xenstored unix socket (e.g. /run/xenstored/socket).
 *
 * Written for this project from the public headers (xs_wire.h, linux/input.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/input.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <xen/io/xs_wire.h>

static int64_t ns_of(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *m)
{
    fprintf(stderr, "ystool: %s: %s\n", m, strerror(errno));
    exit(2);
}

/* ---- clocks ------------------------------------------------------------------------------------ */
static int cmd_clocks(void)
{
    int64_t best_err = -1, best_off = 0, best_r = 0, best_m = 0;
    for (int i = 0; i < 5; i++) {
        int64_t r1 = ns_of(CLOCK_REALTIME), m = ns_of(CLOCK_MONOTONIC), r2 = ns_of(CLOCK_REALTIME);
        int64_t err = (r2 - r1) / 2;
        if (best_err < 0 || err < best_err) {
            best_err = err;
            best_off = (r1 + r2) / 2 - m;
            best_r = (r1 + r2) / 2;
            best_m = m;
        }
    }
    printf("clocks real_ns=%lld mono_ns=%lld off_ns=%lld err_ns=%lld\n", (long long)best_r,
           (long long)best_m, (long long)best_off, (long long)best_err);
    return 0;
}

/* ---- evread ------------------------------------------------------------------------------------ */
static int cmd_evread(int argc, char **argv)
{
    int mono = 0, opt;
    const char *prefix = "";
    while ((opt = getopt(argc, argv, "mp:")) != -1) {
        if (opt == 'm')
            mono = 1;
        else if (opt == 'p')
            prefix = optarg;
        else
            return 2;
    }
    if (argc - optind != 3) {
        fprintf(stderr, "usage: ystool evread [-m] [-p PREFIX] DEV PRESSES TIMEOUT_S\n");
        return 2;
    }
    const char *dev = argv[optind];
    int want = atoi(argv[optind + 1]);
    int64_t end = ns_of(CLOCK_MONOTONIC) + (int64_t)atoi(argv[optind + 2]) * 1000000000;
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(dev);
    if (mono) {
        int clk = CLOCK_MONOTONIC;
        if (ioctl(fd, EVIOCSCLOCKID, &clk) < 0)
            die("EVIOCSCLOCKID");
    }
    printf("%sready dev=%s clock=%s\n", prefix, dev, mono ? "monotonic" : "realtime");
    fflush(stdout);
    int presses = 0, releases = 0;
    while (releases < want) {
        int64_t left = end - ns_of(CLOCK_MONOTONIC);
        if (left <= 0)
            break;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int n = poll(&p, 1, (int)(left / 1000000) + 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("poll");
        if (n == 0)
            continue;
        struct input_event ev[64];
        ssize_t got = read(fd, ev, sizeof ev);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            die("read");
        for (size_t i = 0; i < (size_t)got / sizeof ev[0]; i++) {
            if (ev[i].type != EV_KEY || ev[i].value > 1)
                continue;
            if (ev[i].value == 1)
                presses++;
            else
                releases++;
            printf("%sev code=%u value=%d t=%lld.%06ld\n", prefix, ev[i].code, ev[i].value,
                   (long long)ev[i].input_event_sec, (long)ev[i].input_event_usec);
        }
        fflush(stdout);
    }
    printf("%send presses=%d releases=%d\n", prefix, presses, releases);
    return 0;
}

/* ---- xenstore: one connection, requests one at a time, watch events counted while waiting ------- */
static int xsfd = -1;
static uint32_t xs_id = 1;
static int xs_events; /* watch events read while waiting for a reply, not yet consumed */

static void xs_open(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
        xsfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (xsfd < 0 || connect(xsfd, (struct sockaddr *)&a, sizeof a) < 0)
            die(path);
    } else {
        xsfd = open(path, O_RDWR | O_CLOEXEC);
        if (xsfd < 0)
            die(path);
    }
}

static int read_full(void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(xsfd, (char *)buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

/* reads one message; returns its type, the body (NUL-terminated) in body */
static uint32_t xs_msg(char *body)
{
    struct xsd_sockmsg h;
    if (read_full(&h, sizeof h) < 0 || h.len > XENSTORE_PAYLOAD_MAX || read_full(body, h.len) < 0)
        die("xenstore read");
    body[h.len] = 0;
    return h.type;
}

static int xs_call(uint32_t type, const char *a, const char *b, char *out, size_t outsz)
{
    char msg[sizeof(struct xsd_sockmsg) + XENSTORE_PAYLOAD_MAX];
    size_t la = strlen(a) + 1, lb = b ? strlen(b) : 0;
    if (type == XS_WATCH)
        lb++; /* path\0token\0 */
    struct xsd_sockmsg h = { .type = type, .req_id = xs_id++, .tx_id = 0, .len = (uint32_t)(la + lb) };
    if (la + lb > XENSTORE_PAYLOAD_MAX)
        return -1;
    memcpy(msg, &h, sizeof h);
    memcpy(msg + sizeof h, a, la);
    if (lb)
        memcpy(msg + sizeof h + la, b, lb);
    if (write(xsfd, msg, sizeof h + la + lb) != (ssize_t)(sizeof h + la + lb))
        die("xenstore write");
    static char body[XENSTORE_PAYLOAD_MAX + 1];
    for (;;) {
        uint32_t t = xs_msg(body);
        if (t == XS_WATCH_EVENT) {
            xs_events++;
            continue;
        }
        if (t == XS_ERROR)
            return -1;
        if (out) {
            size_t n = strlen(body);
            if (n > outsz - 1)
                n = outsz - 1;
            memcpy(out, body, n);
            out[n] = 0;
        }
        return 0;
    }
}

/* waits for a watch event (one already read counts), at most until END (monotonic ns) */
static int xs_wait_event(int64_t end)
{
    static char body[XENSTORE_PAYLOAD_MAX + 1];
    if (xs_events > 0) {
        xs_events--;
        return 0;
    }
    for (;;) {
        int64_t left = end - ns_of(CLOCK_MONOTONIC);
        if (left <= 0)
            return -1;
        struct pollfd p = { .fd = xsfd, .events = POLLIN };
        int n = poll(&p, 1, (int)(left / 1000000) + 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            continue;
        if (xs_msg(body) == XS_WATCH_EVENT)
            return 0;
    }
}

static const char *xs_path(int argc, char **argv, int *optindp)
{
    const char *x = getenv("XENSTORED_PATH");
    int opt;
    if (!x)
        x = "/dev/xen/xenbus";
    while ((opt = getopt(argc, argv, "x:")) != -1) {
        if (opt == 'x')
            x = optarg;
        else
            exit(2);
    }
    *optindp = optind;
    return x;
}

static int cmd_xspong(int argc, char **argv)
{
    int oi;
    const char *x = xs_path(argc, argv, &oi);
    if (argc - oi != 3) {
        fprintf(stderr, "usage: ystool xspong [-x XENSTORE] DIR ROUNDS TIMEOUT_S\n");
        return 2;
    }
    char p_ping[256], p_pong[256], p_ready[256], v[256];
    snprintf(p_ping, sizeof p_ping, "%s/ping", argv[oi]);
    snprintf(p_pong, sizeof p_pong, "%s/pong", argv[oi]);
    snprintf(p_ready, sizeof p_ready, "%s/ready", argv[oi]);
    int rounds = atoi(argv[oi + 1]);
    int64_t end = ns_of(CLOCK_MONOTONIC) + (int64_t)atoi(argv[oi + 2]) * 1000000000;
    xs_open(x);
    if (xs_call(XS_WRITE, p_ping, "0", NULL, 0) < 0 || xs_call(XS_WRITE, p_pong, "0", NULL, 0) < 0)
        die("xenstore write ping/pong");
    if (xs_call(XS_WATCH, p_ping, "ys", NULL, 0) < 0)
        die("xenstore watch");
    /* (the watch's first firing, whenever it comes, reads an old ping value and is passed over) */
    if (xs_call(XS_WRITE, p_ready, "1", NULL, 0) < 0)
        die("xenstore write ready");
    int last = 0, done = 0;
    while (done < rounds && xs_wait_event(end) == 0) {
        int64_t t = ns_of(CLOCK_REALTIME);
        if (xs_call(XS_READ, p_ping, NULL, v, sizeof v) < 0)
            continue;
        int i = atoi(v);
        if (i == last || i <= 0)
            continue;
        last = i;
        char pong[64];
        snprintf(pong, sizeof pong, "%d %lld", i, (long long)t);
        if (xs_call(XS_WRITE, p_pong, pong, NULL, 0) < 0)
            die("xenstore write pong");
        done++;
    }
    printf("xspong rounds=%d\n", done);
    return done == rounds ? 0 : 1;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static int cmd_xsping(int argc, char **argv)
{
    int oi;
    const char *x = xs_path(argc, argv, &oi);
    if (argc - oi != 3) {
        fprintf(stderr, "usage: ystool xsping [-x XENSTORE] DIR ROUNDS TIMEOUT_S\n");
        return 2;
    }
    char p_ping[256], p_pong[256], p_ready[256], v[256];
    snprintf(p_ping, sizeof p_ping, "%s/ping", argv[oi]);
    snprintf(p_pong, sizeof p_pong, "%s/pong", argv[oi]);
    snprintf(p_ready, sizeof p_ready, "%s/ready", argv[oi]);
    int rounds = atoi(argv[oi + 1]);
    int64_t end = ns_of(CLOCK_MONOTONIC) + (int64_t)atoi(argv[oi + 2]) * 1000000000;
    xs_open(x);
    while (xs_call(XS_READ, p_ready, NULL, v, sizeof v) < 0 || strcmp(v, "1") != 0) {
        if (ns_of(CLOCK_MONOTONIC) > end) {
            printf("xsping no-ready\n");
            return 1;
        }
        usleep(50000);
    }
    if (xs_call(XS_WATCH, p_pong, "ys", NULL, 0) < 0)
        die("xenstore watch");
    /* (the watch's first firing reads an old pong value and is passed over) */
    long long best_rtt = -1, best_off = 0, offs[1024];
    int n = 0;
    for (int i = 1; i <= rounds && i <= 1024; i++) {
        char s[16];
        snprintf(s, sizeof s, "%d", i);
        int64_t t0 = ns_of(CLOCK_REALTIME), t1 = 0;
        long long tg = 0;
        if (xs_call(XS_WRITE, p_ping, s, NULL, 0) < 0)
            die("xenstore write ping");
        for (;;) {
            if (xs_wait_event(end) < 0) {
                printf("xsping timeout i=%d\n", i);
                goto out;
            }
            t1 = ns_of(CLOCK_REALTIME);
            if (xs_call(XS_READ, p_pong, NULL, v, sizeof v) < 0)
                continue;
            int j = 0;
            if (sscanf(v, "%d %lld", &j, &tg) == 2 && j == i)
                break;
        }
        long long rtt = (t1 - t0) / 1000, off = (tg - (t0 + t1) / 2) / 1000;
        printf("sample i=%d rtt_us=%lld off_us=%lld\n", i, rtt, off);
        offs[n++] = off;
        if (best_rtt < 0 || rtt < best_rtt) {
            best_rtt = rtt;
            best_off = off;
        }
    }
out:
    if (n == 0)
        return 1;
    qsort(offs, (size_t)n, sizeof offs[0], cmp_ll);
    printf("best rtt_us=%lld off_us=%lld err_us=%lld n=%d\n", best_rtt, best_off, (best_rtt + 1) / 2, n);
    printf("median off_us=%lld\n", offs[n / 2]);
    return 0;
}

/* ---- syscalls ---------------------------------------------------------------------------------- */
static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmd_syscalls(int argc, char **argv)
{
    long n = argc >= 2 ? strtol(argv[1], NULL, 10) : 0;
    int64_t per[5];
    if (n < 1 || n > 100000000) {
        fprintf(stderr, "ystool syscalls: N from 1 to 100000000\n");
        return 2;
    }
    for (int r = 0; r < 5; r++) {
        int64_t t0 = ns_of(CLOCK_MONOTONIC);
        for (long i = 0; i < n; i++)
            syscall(SYS_getppid);
        per[r] = (ns_of(CLOCK_MONOTONIC) - t0) / n;
    }
    qsort(per, 5, sizeof per[0], cmp_i64);
    printf("syscalls n=%ld ns_per_call=%lld median_ns_per_call=%lld\n", n, (long long)per[0], (long long)per[2]);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 2 && !strcmp(argv[1], "clocks"))
        return cmd_clocks();
    if (argc >= 2 && !strcmp(argv[1], "evread"))
        return cmd_evread(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "xspong"))
        return cmd_xspong(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "xsping"))
        return cmd_xsping(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "syscalls"))
        return cmd_syscalls(argc - 1, argv + 1);
    fprintf(stderr, "usage: ystool clocks | evread [-m] [-p PREFIX] DEV PRESSES TIMEOUT_S | "
                    "xspong|xsping [-x XENSTORE] DIR ROUNDS TIMEOUT_S | syscalls N\n");
    return 2;
}
