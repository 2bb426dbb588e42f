/*
 * pvfront -- a PVUSB frontend in guest userspace, for the lab's "hostile" scenario.
 *
 * It plays what Linux's xen-hcd does (pvusb-protocol.md §2-3): grants its own urb and conn ring
 * pages to dom0 (/dev/xen/gntalloc), allocates an event channel for dom0 (/dev/xen/evtchn), writes
 * device/vusb/<devid>/{urb-ring-ref,conn-ring-ref,event-channel} and state 4 through the kernel's
 * xenstore device (/dev/xen/xenbus), pre-posts the 512 conn-ring dummy requests -- and then breaks
 * the protocol on purpose, one game at a time, printing one line per game:
 *
 *   GUEST-RESULT game name=<game> kind=malformed|ring expect=... got=... ok=yes|no
 *
 * Written for this project from the public headers (usbif.h, xs_wire.h, the Linux uapi headers of
 * gntalloc and evtchn); statically linked so it runs in the lab's busybox initramfs.
 *
 * Usage:
 *   pvfront games [DEVID]        run every game against device/vusb/DEVID (default 0)
 *   pvfront xs-read PATH         print a xenstore node (relative paths: below /local/domain/<self>)
 *   pvfront xs-wait PATH SECONDS wait until PATH exists
 *   pvfront xs-write PATH VALUE
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <xen/xen.h>
#include <xen/io/usbif.h>
#include <xen/io/xs_wire.h>
#include <xen/gntalloc.h>
#include <xen/evtchn.h>

#define PAGE 4096u
#define URB_RING 16u   /* (4096 - 64) / 148 rounded down to a power of two */
#define CONN_RING 512u /* (4096 - 64) / 4 rounded down */
_Static_assert(sizeof(struct usbif_urb_request) == 148, "usbif_urb_request");
_Static_assert(sizeof(union usbif_urb_sring_entry) == 148, "urb entry");
_Static_assert(sizeof(union usbif_conn_sring_entry) == 4, "conn entry");
_Static_assert(64 + URB_RING * 148 <= PAGE && 64 + 2 * URB_RING * 148 > PAGE, "urb ring size");

/* xenbus states */
enum { XB_INITIALISING = 1, XB_INITWAIT = 2, XB_INITIALISED = 3, XB_CONNECTED = 4, XB_CLOSING = 5, XB_CLOSED = 6 };
#define BIT(s) (1u << (s))

/* The device address the games give the device with SET_ADDRESS. */
#define ADDR 5

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("pvfront: ", stdout);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    exit(2);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void msleep(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static double uptime(void)
{
    double u = 0;
    FILE *f = fopen("/proc/uptime", "r");
    if (f) {
        if (fscanf(f, "%lf", &u) != 1)
            u = 0;
        fclose(f);
    }
    return u;
}

/* ---------------------------------------------------------------------------------------------
 * xenstore through /dev/xen/xenbus: one request at a time, header + payload in one write, the reply
 * read back whole. No watches (states are polled), so every message read is our reply. */
static int xsfd = -1;
static uint32_t xs_next_id = 1;
static char xs_err[64];

static void xs_open(void)
{
    if (xsfd >= 0)
        return;
    xsfd = open("/dev/xen/xenbus", O_RDWR | O_CLOEXEC);
    if (xsfd < 0)
        die("open /dev/xen/xenbus: %s", strerror(errno));
}

static int read_full(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

/* Sends TYPE with payload P1 (+ P2); the reply body goes to OUT (NUL-terminated). Returns the reply
 * length, or -1 (xs_err says why: the xenstored error name or the errno). */
static int xs_call(uint32_t type, const void *p1, size_t l1, const void *p2, size_t l2, char *out, size_t outsz)
{
    char msg[sizeof(struct xsd_sockmsg) + XENSTORE_PAYLOAD_MAX];
    struct xsd_sockmsg hdr = { .type = type, .req_id = xs_next_id++, .tx_id = 0, .len = (uint32_t)(l1 + l2) };
    char body[XENSTORE_PAYLOAD_MAX + 1];

    xs_open();
    if (l1 + l2 > XENSTORE_PAYLOAD_MAX) {
        snprintf(xs_err, sizeof xs_err, "E2BIG");
        return -1;
    }
    memcpy(msg, &hdr, sizeof hdr);
    memcpy(msg + sizeof hdr, p1, l1);
    if (l2)
        memcpy(msg + sizeof hdr + l1, p2, l2);
    if (write(xsfd, msg, sizeof hdr + l1 + l2) != (ssize_t)(sizeof hdr + l1 + l2)) {
        snprintf(xs_err, sizeof xs_err, "write: %s", strerror(errno));
        return -1;
    }
    for (;;) {
        struct xsd_sockmsg rh;
        if (read_full(xsfd, &rh, sizeof rh) < 0 || rh.len > XENSTORE_PAYLOAD_MAX || read_full(xsfd, body, rh.len) < 0) {
            snprintf(xs_err, sizeof xs_err, "read: %s", strerror(errno));
            return -1;
        }
        body[rh.len] = 0;
        if (rh.type == XS_WATCH_EVENT)
            continue; /* not ours (we set no watches) */
        if (rh.type == XS_ERROR) {
            snprintf(xs_err, sizeof xs_err, "%.60s", body);
            return -1;
        }
        if (out) {
            size_t n = rh.len < outsz - 1 ? rh.len : outsz - 1;
            memcpy(out, body, n);
            out[n] = 0;
        }
        return (int)rh.len;
    }
}

static int xs_read(const char *path, char *out, size_t outsz)
{
    return xs_call(XS_READ, path, strlen(path) + 1, NULL, 0, out, outsz) < 0 ? -1 : 0;
}

static int xs_write(const char *path, const char *value)
{
    return xs_call(XS_WRITE, path, strlen(path) + 1, value, strlen(value), NULL, 0) < 0 ? -1 : 0;
}

static int xs_read_int(const char *path, long *v)
{
    char buf[64], *end;
    if (xs_read(path, buf, sizeof buf) < 0)
        return -1;
    errno = 0;
    *v = strtol(buf, &end, 10);
    return (errno || end == buf) ? -1 : 0;
}

/* ---------------------------------------------------------------------------------------------
 * The controller's xenstore directories and states. */
static char fe_dir[128], be_dir[160];

static int be_state(void)
{
    char p[200];
    long v;
    snprintf(p, sizeof p, "%s/state", be_dir);
    return xs_read_int(p, &v) < 0 ? -1 : (int)v;
}

static int fe_write(const char *node, const char *fmt, ...)
{
    char p[200], v[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v, sizeof v, fmt, ap);
    va_end(ap);
    snprintf(p, sizeof p, "%s/%s", fe_dir, node);
    if (xs_write(p, v) < 0) {
        printf("pvfront: xenstore write %s = %s failed: %s\n", p, v, xs_err);
        return -1;
    }
    return 0;
}

/* Polls the backend state until it is one of MASK; returns it, or -1 after TIMEOUT_MS. */
static int wait_be_state(unsigned mask, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    int s;
    for (;;) {
        s = be_state();
        if (s >= 0 && (mask & BIT(s)))
            return s;
        if (now_ms() >= end)
            return -1;
        msleep(100);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Granted pages (/dev/xen/gntalloc) and the event channel (/dev/xen/evtchn). */
static int gafd = -1, evfd = -1;

struct gpage {
    uint64_t index;
    uint32_t gref;
    void *p;
};

static int gpage_alloc(struct gpage *g, int writable)
{
    struct ioctl_gntalloc_alloc_gref op = { .domid = 0, .flags = writable ? GNTALLOC_FLAG_WRITABLE : 0, .count = 1 };
    if (ioctl(gafd, IOCTL_GNTALLOC_ALLOC_GREF, &op) < 0) {
        printf("pvfront: IOCTL_GNTALLOC_ALLOC_GREF: %s\n", strerror(errno));
        return -1;
    }
    g->index = op.index;
    g->gref = op.gref_ids[0];
    g->p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, gafd, (off_t)op.index);
    if (g->p == MAP_FAILED) {
        printf("pvfront: mmap of gntalloc index %llu: %s\n", (unsigned long long)op.index, strerror(errno));
        g->p = NULL;
        return -1;
    }
    memset(g->p, 0, PAGE);
    return 0;
}

static void gpage_free(struct gpage *g)
{
    struct ioctl_gntalloc_dealloc_gref op = { .index = g->index, .count = 1 };
    if (g->p)
        munmap(g->p, PAGE);
    g->p = NULL;
    if (ioctl(gafd, IOCTL_GNTALLOC_DEALLOC_GREF, &op) < 0)
        printf("pvfront: IOCTL_GNTALLOC_DEALLOC_GREF gref %u: %s\n", g->gref, strerror(errno));
}

static uint32_t evport;

static int evt_bind(void)
{
    struct ioctl_evtchn_bind_unbound_port op = { .remote_domain = 0 };
    int rc = ioctl(evfd, IOCTL_EVTCHN_BIND_UNBOUND_PORT, &op);
    if (rc < 0) {
        printf("pvfront: IOCTL_EVTCHN_BIND_UNBOUND_PORT: %s\n", strerror(errno));
        return -1;
    }
    evport = (uint32_t)rc;
    return 0;
}

static void evt_unbind(void)
{
    struct ioctl_evtchn_unbind op = { .port = evport };
    if (evport && ioctl(evfd, IOCTL_EVTCHN_UNBIND, &op) < 0)
        printf("pvfront: IOCTL_EVTCHN_UNBIND %u: %s\n", evport, strerror(errno));
    evport = 0;
}

static void evt_kick(void)
{
    struct ioctl_evtchn_notify op = { .port = evport };
    if (ioctl(evfd, IOCTL_EVTCHN_NOTIFY, &op) < 0)
        printf("pvfront: IOCTL_EVTCHN_NOTIFY %u: %s\n", evport, strerror(errno));
}

/* Waits up to MS for an event; unmasks whatever fired. */
static void evt_wait(int ms)
{
    struct pollfd pfd = { .fd = evfd, .events = POLLIN };
    if (poll(&pfd, 1, ms) > 0 && (pfd.revents & POLLIN)) {
        uint32_t ports[16];
        ssize_t n = read(evfd, ports, sizeof ports);
        if (n > 0 && write(evfd, ports, (size_t)n) != n)
            printf("pvfront: evtchn unmask: %s\n", strerror(errno));
    }
}

/* ---------------------------------------------------------------------------------------------
 * The two rings, frontend side (ring.h FRONT_RING by hand). */
static struct {
    struct gpage urbp, connp;
    struct usbif_urb_sring *urb;
    struct usbif_conn_sring *conn;
    uint32_t urb_pvt, urb_rsp_cons;   /* req_prod_pvt, rsp_cons */
    uint32_t conn_pvt, conn_rsp_cons;
    int conn_repost;                  /* re-post a dummy request for each conn response (xen-hcd does) */
    int connected;
    int dev_port, dev_speed;          /* from the conn ring */
    int conn_events;
} F;

struct got {
    int count, errors;
    int32_t status, actual;
};
static struct got got[65536];
static int backend_nonsense;

static void ring_init(void *page)
{
    struct usbif_urb_sring *s = page; /* the header is the same for both rings */
    s->req_prod = s->rsp_prod = 0;
    s->req_event = s->rsp_event = 1;
}

/* Consumes every response on both rings. */
static void drain(void)
{
    if (!F.urb)
        return;
    for (int round = 0; round < 64; round++) {
        uint32_t rp = __atomic_load_n(&F.urb->rsp_prod, __ATOMIC_ACQUIRE);
        if (rp - F.urb_rsp_cons > URB_RING) {
            if (!backend_nonsense++)
                printf("pvfront: backend urb rsp_prod %u is more than a ring ahead of rsp_cons %u\n", rp, F.urb_rsp_cons);
            break;
        }
        while (F.urb_rsp_cons != rp) {
            struct usbif_urb_response r = F.urb->ring[F.urb_rsp_cons % URB_RING].rsp;
            F.urb_rsp_cons++;
            struct got *g = &got[r.id];
            g->count++;
            g->status = r.status;
            g->actual = r.actual_length;
            if (r.status < 0)
                g->errors++;
        }
        F.urb->rsp_event = F.urb_rsp_cons + 1;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (__atomic_load_n(&F.urb->rsp_prod, __ATOMIC_ACQUIRE) == F.urb_rsp_cons)
            break;
    }
    for (int round = 0; round < 64; round++) {
        uint32_t rp = __atomic_load_n(&F.conn->rsp_prod, __ATOMIC_ACQUIRE);
        if (rp - F.conn_rsp_cons > CONN_RING)
            break;
        int reposted = 0;
        while (F.conn_rsp_cons != rp) {
            struct usbif_conn_response r = F.conn->ring[F.conn_rsp_cons % CONN_RING].rsp;
            F.conn_rsp_cons++;
            F.conn_events++;
            printf("pvfront: conn event: port %u speed %u\n", r.portnum, r.speed);
            if (r.speed) {
                F.dev_port = r.portnum;
                F.dev_speed = r.speed;
            } else if (r.portnum == F.dev_port) {
                F.dev_speed = 0;
            }
            if (F.conn_repost) {
                F.conn->ring[F.conn_pvt % CONN_RING].req.id = r.id;
                F.conn_pvt++;
                reposted = 1;
            }
        }
        if (reposted) {
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            F.conn->req_prod = F.conn_pvt;
        }
        F.conn->rsp_event = F.conn_rsp_cons + 1;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (__atomic_load_n(&F.conn->rsp_prod, __ATOMIC_ACQUIRE) == F.conn_rsp_cons)
            break;
    }
}

static void urb_put(const struct usbif_urb_request *r)
{
    got[r->id] = (struct got){ 0 };
    F.urb->ring[F.urb_pvt % URB_RING].req = *r;
    F.urb_pvt++;
}

static void urb_push(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    F.urb->req_prod = F.urb_pvt;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    evt_kick();
}

/* Waits until request ID has COUNT responses (drain() records them); 0 or -1 on timeout. */
static int wait_rsp(uint16_t id, int count, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        drain();
        if (got[id].count >= count)
            return 0;
        int64_t left = end - now_ms();
        if (left <= 0)
            return -1;
        evt_wait(left < 50 ? (int)left : 50);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Requests. */
static struct gpage data_rw, data_ro;  /* a writable and a read-only granted data page */

/* A grant ref that is not granted: one we grant and revoke right away. Taken just before its use:
 * Linux hands revoked refs out again first, so any later grant (a ring page!) may get the same ref. */
static uint32_t ungranted_ref(void)
{
    struct gpage g;
    if (gpage_alloc(&g, 1) < 0)
        die("cannot grant a page");
    uint32_t ref = g.gref;
    gpage_free(&g);
    return ref;
}

static uint32_t pipe_of(int port, int dev, int ep, int type, int in)
{
    return (uint32_t)port | (in ? USBIF_PIPE_DIR : 0) | ((uint32_t)dev << USBIF_PIPE_DEV_SHIFT)
        | ((uint32_t)ep << USBIF_PIPE_EP_SHIFT) | ((uint32_t)type << USBIF_PIPE_TYPE_SHIFT);
}

/* A control request at DEV on the device's port with one data segment (none if SEGLEN is 0). */
static struct usbif_urb_request ctrl_req(uint16_t id, int dev, uint8_t bmrt, uint8_t breq, uint16_t wvalue,
    uint16_t windex, uint16_t wlength, uint32_t gref, uint16_t off, uint16_t seglen)
{
    struct usbif_urb_request r;
    memset(&r, 0, sizeof r);
    r.id = id;
    r.pipe = pipe_of(F.dev_port, dev, 0, USBIF_PIPE_TYPE_CTRL, bmrt & 0x80);
    r.u.ctrl[0] = bmrt;
    r.u.ctrl[1] = breq;
    r.u.ctrl[2] = (uint8_t)wvalue;
    r.u.ctrl[3] = (uint8_t)(wvalue >> 8);
    r.u.ctrl[4] = (uint8_t)windex;
    r.u.ctrl[5] = (uint8_t)(windex >> 8);
    r.u.ctrl[6] = (uint8_t)wlength;
    r.u.ctrl[7] = (uint8_t)(wlength >> 8);
    if (seglen) {
        r.nr_buffer_segs = 1;
        r.buffer_length = seglen;
        r.seg[0].gref = gref;
        r.seg[0].offset = off;
        r.seg[0].length = seglen;
    }
    return r;
}

/* GET_DESCRIPTOR(DEVICE), 18 bytes, into the writable page. */
static struct usbif_urb_request get_desc(uint16_t id, int dev)
{
    return ctrl_req(id, dev, 0x80, 6, 0x0100, 0, 18, data_rw.gref, 0, 18);
}

/* Submits one request and waits for its answer; returns the status, or 1 on timeout. */
static int xfer(struct usbif_urb_request r, int timeout_ms, int32_t *actual)
{
    urb_put(&r);
    urb_push();
    if (wait_rsp(r.id, 1, timeout_ms) < 0)
        return 1;
    if (actual)
        *actual = got[r.id].actual;
    return got[r.id].status;
}

static uint16_t next_id = 100;
static uint16_t new_id(void)
{
    next_id = (uint16_t)(next_id + 1);
    if (next_id < 100)
        next_id = 100;
    return next_id;
}

/* The controller works: a device descriptor read at ADDR gives 18 bytes of type 1. */
static int sane(void)
{
    int32_t actual = 0;
    memset(data_rw.p, 0, 64);
    int st = xfer(get_desc(new_id(), ADDR), 5000, &actual);
    return st == 0 && actual == 18 && ((uint8_t *)data_rw.p)[1] == 1;
}

/* ---------------------------------------------------------------------------------------------
 * Connection lifecycle, as xen-hcd does it. */
static void fe_teardown(void)
{
    if (F.urb)
        gpage_free(&F.urbp);
    if (F.conn)
        gpage_free(&F.connp);
    evt_unbind();
    memset(&F, 0, sizeof F);
}

/* Backend in InitWait: grant fresh rings, bind an event channel, write the nodes, go Connected, wait
 * for the backend's Connected and the plug event of the device. */
static int fe_connect(void)
{
    int s = wait_be_state(BIT(XB_INITWAIT) | BIT(XB_INITIALISED) | BIT(XB_CONNECTED), 60000);
    if (s < 0) {
        printf("pvfront: backend not in InitWait within 60 s (state %d)\n", be_state());
        return -1;
    }
    if (gpage_alloc(&F.urbp, 1) < 0 || gpage_alloc(&F.connp, 1) < 0)
        return -1;
    F.urb = F.urbp.p;
    F.conn = F.connp.p;
    ring_init(F.urb);
    ring_init(F.conn);
    for (uint32_t i = 0; i < CONN_RING; i++)
        F.conn->ring[i].req.id = (uint16_t)i;
    F.conn_pvt = CONN_RING;
    F.conn->req_prod = CONN_RING;
    F.conn_repost = 1;
    if (evt_bind() < 0)
        return -1;
    if (fe_write("urb-ring-ref", "%u", F.urbp.gref) < 0 || fe_write("conn-ring-ref", "%u", F.connp.gref) < 0
        || fe_write("event-channel", "%u", evport) < 0 || fe_write("state", "%d", XB_CONNECTED) < 0)
        return -1;
    evt_kick();
    if (wait_be_state(BIT(XB_CONNECTED), 30000) < 0) {
        printf("pvfront: backend not Connected within 30 s (state %d)\n", be_state());
        return -1;
    }
    int64_t end = now_ms() + 30000;
    while (!F.dev_speed && now_ms() < end) {
        drain();
        evt_wait(100);
    }
    if (!F.dev_speed) {
        printf("pvfront: no plug event on the conn ring within 30 s of Connected\n");
        return -1;
    }
    F.connected = 1;
    printf("pvfront: connected: urb-ring-ref %u conn-ring-ref %u event-channel %u; device on port %d, speed %d\n",
        F.urbp.gref, F.connp.gref, evport, F.dev_port, F.dev_speed);
    return 0;
}

/* Enumerates like usbcore: descriptor at address 0, SET_ADDRESS, descriptor at ADDR, SET_CONFIGURATION 1. */
static int fe_enumerate(void)
{
    int32_t actual = 0;
    int st = xfer(get_desc(new_id(), 0), 5000, &actual);
    if (st != 0 || actual != 18) {
        printf("pvfront: GET_DESCRIPTOR at address 0: status %d, %d bytes\n", st, actual);
        return -1;
    }
    st = xfer(ctrl_req(new_id(), 0, 0x00, 5, ADDR, 0, 0, 0, 0, 0), 5000, NULL);
    if (st != 0) {
        printf("pvfront: SET_ADDRESS %d: status %d\n", ADDR, st);
        return -1;
    }
    if (!sane()) {
        printf("pvfront: GET_DESCRIPTOR at address %d failed\n", ADDR);
        return -1;
    }
    st = xfer(ctrl_req(new_id(), ADDR, 0x00, 9, 1, 0, 0, 0, 0, 0), 10000, NULL);
    printf("pvfront: SET_CONFIGURATION 1: status %d\n", st);
    return 0;
}

/* After the backend stopped the controller: Closed, wait for its Closed, Initialising, wait for
 * InitWait, then connect afresh and enumerate again. */
static int fe_reinit(void)
{
    if (be_state() == XB_INITWAIT) {
        /* a backend that starts afresh (a restarted daemon): connect with new rings */
        fe_teardown();
        if (fe_connect() < 0)
            return -1;
        return fe_enumerate();
    }
    if (fe_write("state", "%d", XB_CLOSED) < 0)
        return -1;
    if (wait_be_state(BIT(XB_CLOSED), 30000) < 0) {
        printf("pvfront: backend not Closed within 30 s of the frontend's Closed (state %d)\n", be_state());
        return -1;
    }
    fe_teardown();
    if (fe_write("state", "%d", XB_INITIALISING) < 0)
        return -1;
    if (wait_be_state(BIT(XB_INITWAIT), 30000) < 0) {
        printf("pvfront: backend not back in InitWait within 30 s (state %d)\n", be_state());
        return -1;
    }
    if (fe_connect() < 0)
        return -1;
    return fe_enumerate();
}

/* An interrupt IN on endpoint 1 (the keyboard's reports) that stays pending: the keyboard NAKs until
 * a key changes. Returns 0 once one has been outstanding for 500 ms. */
static int intr_pending(uint16_t id)
{
    for (int i = 0; i < 8; i++) {
        struct usbif_urb_request r;
        memset(&r, 0, sizeof r);
        r.id = id;
        r.pipe = pipe_of(F.dev_port, ADDR, 1, USBIF_PIPE_TYPE_INT, 1);
        r.u.intr.interval = 8;
        r.nr_buffer_segs = 1;
        r.buffer_length = 8;
        r.seg[0].gref = data_rw.gref;
        r.seg[0].offset = 2048;
        r.seg[0].length = 8;
        urb_put(&r);
        urb_push();
        if (wait_rsp(id, 1, 500) < 0)
            return 0;
        printf("pvfront: interrupt IN %u answered at once (status %d); again\n", id, got[id].status);
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------------
 * Games. */
static int games_run, games_ok;

static void game_result(const char *name, const char *kind, const char *expect, int ok, const char *fmt, ...)
{
    char detail[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    for (char *c = detail; *c; c++)
        if (*c == ' ')
            *c = '_';
    games_run++;
    games_ok += ok;
    printf("GUEST-RESULT game name=%s kind=%s expect=%s got=%s ok=%s uptime=%.1f\n", name, kind, expect, detail,
        ok ? "yes" : "no", uptime());
}

/* Every request in R[0..N) must get an error status; then the controller must still be Connected and
 * serve a good request. */
static void expect_errors(const char *name, struct usbif_urb_request *r, int n)
{
    char sts[160] = "";
    int errors = 0, missing = 0;
    if (!F.connected) {
        game_result(name, "malformed", "error", 0, "controller not connected before the game");
        return;
    }
    for (int i = 0; i < n; i++)
        urb_put(&r[i]);
    urb_push();
    for (int i = 0; i < n; i++) {
        if (wait_rsp(r[i].id, 1, 5000) < 0) {
            missing++;
            continue;
        }
        if (got[r[i].id].status < 0)
            errors++;
        size_t l = strlen(sts);
        if (l < sizeof sts - 8)
            snprintf(sts + l, sizeof sts - l, "%s%d", l ? "," : "", got[r[i].id].status);
    }
    int st = be_state();
    int ok_after = st == XB_CONNECTED && sane();
    game_result(name, "malformed", "error", errors == n && ok_after, "errors %d/%d status %s%s backend %d then %s", errors, n,
        sts[0] ? sts : "none", missing ? " (some unanswered in 5 s)" : "", st, ok_after ? "served" : "NOT-served");
}

static void expect_error(const char *name, struct usbif_urb_request r)
{
    expect_errors(name, &r, 1);
}

static void malformed_games(void)
{
    struct usbif_urb_request r[16];
    int port = F.dev_port;

    /* ports */
    r[0] = get_desc(new_id(), ADDR);
    r[0].pipe = (r[0].pipe & ~USBIF_PIPE_PORT_MASK) | 0;
    expect_error("port-0", r[0]);
    r[0] = get_desc(new_id(), ADDR);
    r[0].pipe = (r[0].pipe & ~USBIF_PIPE_PORT_MASK) | 9;
    expect_error("port-beyond-num-ports", r[0]);
    r[0] = get_desc(new_id(), ADDR);
    r[0].pipe = (r[0].pipe & ~USBIF_PIPE_PORT_MASK) | 31;
    expect_error("port-31", r[0]);
    r[0] = get_desc(new_id(), ADDR);
    r[0].pipe = (r[0].pipe & ~USBIF_PIPE_PORT_MASK) | (uint32_t)(port == 2 ? 3 : 2);
    expect_error("port-without-device", r[0]);
    r[0] = get_desc(new_id(), 77);
    expect_error("unknown-device-address", r[0]);

    /* segments */
    r[0] = get_desc(new_id(), ADDR);
    r[0].nr_buffer_segs = 17;
    expect_error("segments-17", r[0]);
    r[0] = get_desc(new_id(), ADDR);
    r[0].seg[0].offset = 4000;
    r[0].seg[0].length = 200;
    r[0].buffer_length = 200;
    r[0].u.ctrl[6] = 200;
    expect_error("segment-beyond-page", r[0]);
    r[0] = get_desc(new_id(), ADDR);
    r[0].seg[0].offset = 4096;
    r[0].seg[0].length = 18;
    expect_error("segment-offset-4096", r[0]);
    r[0] = get_desc(new_id(), ADDR);
    r[0].seg[0].length = 0;
    r[0].buffer_length = 0;
    r[0].u.ctrl[6] = 0;
    expect_error("segment-zero-length", r[0]);
    r[0] = get_desc(new_id(), ADDR);
    r[0].buffer_length = 64;
    expect_error("buffer-length-above-segments", r[0]);
    r[0] = get_desc(new_id(), ADDR);
    r[0].nr_buffer_segs = 2;
    r[0].seg[1] = r[0].seg[0];
    r[0].seg[1].offset = 1024;
    expect_error("buffer-length-below-segments", r[0]);
    r[0] = ctrl_req(new_id(), ADDR, 0x80, 6, 0x0100, 0, 255, data_rw.gref, 0, 18);
    expect_error("wlength-beyond-buffer", r[0]);

    /* grants */
    r[0] = ctrl_req(new_id(), ADDR, 0x80, 6, 0x0100, 0, 18, ungranted_ref(), 0, 18);
    expect_error("ungranted-ref-in", r[0]);
    r[0] = ctrl_req(new_id(), ADDR, 0x80, 6, 0x0100, 0, 18, 0x7ffffff0u, 0, 18);
    expect_error("bogus-ref-in", r[0]);
    r[0] = ctrl_req(new_id(), ADDR, 0x80, 6, 0x0100, 0, 18, data_ro.gref, 0, 18);
    expect_error("read-only-ref-in", r[0]);
    /* HID SET_REPORT(output, 1 byte) from a page we do not grant */
    r[0] = ctrl_req(new_id(), ADDR, 0x21, 9, 0x0200, 0, 1, ungranted_ref(), 0, 1);
    expect_error("ungranted-ref-out", r[0]);
    memset(&r[0], 0, sizeof r[0]);
    r[0].id = new_id();
    r[0].pipe = pipe_of(port, ADDR, 2, USBIF_PIPE_TYPE_BULK, 0);
    r[0].nr_buffer_segs = 1;
    r[0].buffer_length = 512;
    r[0].seg[0].gref = 0x7ffffff0u;
    r[0].seg[0].length = 512;
    expect_error("bogus-ref-bulk-out", r[0]);

    /* isochronous */
    memset(&r[0], 0, sizeof r[0]);
    r[0].id = new_id();
    r[0].pipe = pipe_of(port, ADDR, 1, USBIF_PIPE_TYPE_ISOC, 1);
    r[0].u.isoc.interval = 1;
    r[0].u.isoc.number_of_packets = 1;
    r[0].u.isoc.nr_frame_desc_segs = 1;
    r[0].nr_buffer_segs = 1;
    r[0].buffer_length = 192;
    r[0].seg[0] = (struct usbif_request_segment){ data_rw.gref, 0, 192 };
    r[0].seg[1] = (struct usbif_request_segment){ data_rw.gref, 1024, 16 };
    /* one well-formed packet (offset 0, 8 bytes): the backend serves it, and usbfs refuses an
       isochronous URB to the keyboard's interrupt endpoint */
    uint32_t *iso_desc = (uint32_t *)((uint8_t *)data_rw.p + 1024);
    memset(iso_desc, 0, 64);
    iso_desc[1] = 8;
    expect_error("isochronous", r[0]);
    /* packet descriptors the backend must refuse before anything reaches the device */
    r[0].id = new_id();
    iso_desc[0] = 100, iso_desc[1] = 192;
    expect_error("isochronous-packet-outside-buffer", r[0]);
    r[0].id = new_id();
    iso_desc[0] = 0xfffffff0u, iso_desc[1] = 0x20;
    expect_error("isochronous-packet-offset-wraps", r[0]);
    r[0].id = new_id();
    r[0].u.isoc.number_of_packets = 2;
    iso_desc[0] = 0, iso_desc[1] = 192, iso_desc[4] = 0, iso_desc[5] = 192;
    r[0].seg[1].length = 32;
    expect_error("isochronous-packets-overlap-beyond-buffer", r[0]);
    r[0].id = new_id();
    r[0].u.isoc.number_of_packets = 4;
    expect_error("isochronous-descriptors-beyond-segment", r[0]);
    r[0].seg[1].length = 16;
    r[0].u.isoc.number_of_packets = 1;
    r[0].id = new_id();
    r[0].u.isoc.number_of_packets = 0;
    r[0].u.isoc.nr_frame_desc_segs = 0;
    expect_error("isochronous-no-packets", r[0]);
    r[0].id = new_id();
    r[0].nr_buffer_segs = 10;
    r[0].u.isoc.number_of_packets = 1;
    r[0].u.isoc.nr_frame_desc_segs = 10;
    for (int i = 0; i < 16; i++)
        r[0].seg[i] = (struct usbif_request_segment){ data_rw.gref, 0, 64 };
    r[0].buffer_length = 640;
    expect_error("isochronous-20-segments", r[0]);

    /* SET_ADDRESS outside 1..127 */
    expect_error("set-address-0", ctrl_req(new_id(), 0, 0x00, 5, 0, 0, 0, 0, 0, 0));
    expect_error("set-address-200", ctrl_req(new_id(), 0, 0x00, 5, 200, 0, 0, 0, 0, 0));

    /* every undefined pipe bit: 6 and 19..29, one request each */
    {
        int n = 0;
        uint32_t bits[12];
        bits[n++] = 1u << 6;
        for (int b = 19; b <= 29; b++)
            bits[n++] = 1u << b;
        for (int i = 0; i < n; i++) {
            r[i] = get_desc(new_id(), ADDR);
            r[i].pipe |= bits[i];
        }
        expect_errors("undefined-pipe-bits", r, n);
    }

    /* unlink of ids that are not in flight */
    memset(&r[0], 0, sizeof r[0]);
    r[0].id = new_id();
    r[0].pipe = pipe_of(port, ADDR, 1, USBIF_PIPE_TYPE_INT, 1) | USBIF_PIPE_UNLINK;
    r[0].u.unlink.unlink_id = 0x3333;
    expect_error("unlink-unknown-id", r[0]);

    /* duplicate ids: in flight (a pending interrupt IN) and within one batch */
    if (intr_pending(7) == 0) {
        expect_error("duplicate-id-in-flight", get_desc(7, ADDR));
        /* a good unlink of the pending one: answered 0, the interrupt IN then ends with an error */
        memset(&r[0], 0, sizeof r[0]);
        r[0].id = new_id();
        r[0].pipe = pipe_of(port, ADDR, 1, USBIF_PIPE_TYPE_INT, 1) | USBIF_PIPE_UNLINK;
        r[0].u.unlink.unlink_id = 7;
        int before = got[7].count;
        int st = xfer(r[0], 5000, NULL);
        int rc = wait_rsp(7, before + 1, 5000);
        game_result("unlink-pending", "control", "unlink-0-then-error", st == 0 && rc == 0 && got[7].status < 0,
            "unlink status %d; interrupt IN %s status %d", st, rc == 0 ? "answered" : "NOT-answered", got[7].status);
    } else {
        game_result("duplicate-id-in-flight", "malformed", "error", 0, "no interrupt IN stayed pending");
    }
    {
        uint16_t id = new_id();
        r[0] = get_desc(id, ADDR);
        r[1] = get_desc(id, ADDR);
        r[1].seg[0].offset = 512;
        urb_put(&r[0]);
        urb_put(&r[1]);
        urb_push();
        int rc = wait_rsp(id, 2, 5000);
        int st = be_state();
        int ok_after = st == XB_CONNECTED && sane();
        game_result("duplicate-id-in-batch", "malformed", "one-error", rc == 0 && got[id].errors >= 1 && ok_after,
            "%d answers, %d errors; backend %d then %s", got[id].count, got[id].errors, st, ok_after ? "served" : "NOT-served");
    }
}

/* Ring index games: each must stop this controller (backend Closing or Closed); the frontend then
 * re-initialises and must be served again. */
static int ask_n;

static void ring_game(const char *name, int conn_ring, void (*violate)(void))
{
    const char *via = "kick";
    if (!F.connected && fe_reinit() < 0) {
        game_result(name, "ring", "stop", 0, "could not connect before the game");
        return;
    }
    drain();
    violate();
    evt_kick();
    int s = wait_be_state(BIT(XB_CLOSING) | BIT(XB_CLOSED), conn_ring ? 5000 : 20000);
    if (s < 0 && conn_ring) {
        /* The backend looks at the conn ring when it has an event to send: ask dom0 for one (detach
         * and attach the device again), and wait for dom0's answer node. */
        char p[64];
        ask_n++;
        printf("GUEST-ASK %d cycle-port\n", ask_n);
        snprintf(p, sizeof p, "data/lab-ask-%d", ask_n);
        via = "conn-event";
        s = wait_be_state(BIT(XB_CLOSING) | BIT(XB_CLOSED), 60000);
        char v[16];
        int64_t end = now_ms() + 60000;
        while (xs_read(p, v, sizeof v) < 0 && now_ms() < end)
            msleep(200);
    }
    int stopped = s >= 0;
    int64_t t0 = now_ms();
    F.connected = 0;
    int back = fe_reinit() == 0;
    int served = back && sane();
    game_result(name, "ring", "stop", stopped && served, "backend %s (via %s); reconnect %s in %.1f s; then %s",
        stopped ? (s == XB_CLOSING ? "Closing" : "Closed") : "NOT-stopped", via, back ? "ok" : "FAILED",
        (now_ms() - t0) / 1000.0, served ? "served" : "NOT-served");
}

static void v_urb_far_ahead(void) { F.urb->req_prod = F.urb_pvt + 1000; }
static void v_urb_backwards(void) { F.urb->req_prod = F.urb_pvt - 3; }
static void v_urb_jump_2_31(void) { F.urb->req_prod = F.urb_pvt + 0x80000000u; }
static void v_conn_beyond(void)
{
    /* legitimately at most 512 + the events answered so far */
    F.conn_repost = 0;
    F.conn->req_prod = F.conn_rsp_cons + CONN_RING + 1;
}
static void v_conn_backwards(void)
{
    /* behind what the backend has consumed */
    F.conn_repost = 0;
    F.conn->req_prod = F.conn_rsp_cons - 1;
}
/* Issue 8 item 1: one URB in flight (an interrupt IN on the keyboard), req_prod one behind req_cons. */
static void v_urb_behind_in_flight(void)
{
    if (intr_pending(11) < 0)
        printf("pvfront: no interrupt IN stayed pending; the game runs without one in flight\n");
    F.urb->req_prod = F.urb_pvt - 1;
}

static int cmd_games(int devid)
{
    char v[200];
    setvbuf(stdout, NULL, _IOLBF, 0);
    gafd = open("/dev/xen/gntalloc", O_RDWR | O_CLOEXEC);
    evfd = open("/dev/xen/evtchn", O_RDWR | O_CLOEXEC);
    if (gafd < 0 || evfd < 0)
        die("open /dev/xen/gntalloc or /dev/xen/evtchn: %s", strerror(errno));
    snprintf(fe_dir, sizeof fe_dir, "device/vusb/%d", devid);
    snprintf(v, sizeof v, "%s/backend", fe_dir);
    int64_t end = now_ms() + 300000;
    while (xs_read(v, be_dir, sizeof be_dir) < 0) {
        if (now_ms() > end)
            die("no %s within 300 s", v);
        msleep(500);
    }
    printf("GUEST-RESULT pvfront-start frontend=%s backend=%s uptime=%.1f\n", fe_dir, be_dir, uptime());

    if (gpage_alloc(&data_rw, 1) < 0 || gpage_alloc(&data_ro, 0) < 0)
        die("cannot grant the data pages");
    if (fe_connect() < 0 || fe_enumerate() < 0) {
        printf("GUEST-RESULT pvfront-connect failed backend-state=%d\n", be_state());
        return 1;
    }
    printf("GUEST-RESULT pvfront-connect ok port=%d speed=%d uptime=%.1f\n", F.dev_port, F.dev_speed, uptime());

    malformed_games();
    ring_game("urb-prod-far-ahead", 0, v_urb_far_ahead);
    ring_game("urb-prod-backwards", 0, v_urb_backwards);
    ring_game("urb-prod-jump-2^31", 0, v_urb_jump_2_31);
    ring_game("conn-prod-beyond-512-plus-answered", 1, v_conn_beyond);
    ring_game("conn-prod-backwards", 1, v_conn_backwards);
    ring_game("urb-prod-behind-cons-one-in-flight", 0, v_urb_behind_in_flight);

    printf("GUEST-RESULT pvfront-done games=%d ok=%d failed=%d uptime=%.1f\n", games_run, games_ok, games_run - games_ok, uptime());
    return games_ok == games_run ? 0 : 1;
}

int main(int argc, char **argv)
{
    char v[XENSTORE_PAYLOAD_MAX + 1];
    if (argc >= 2 && !strcmp(argv[1], "games"))
        return cmd_games(argc >= 3 ? atoi(argv[2]) : 0);
    if (argc == 3 && !strcmp(argv[1], "xs-read")) {
        if (xs_read(argv[2], v, sizeof v) < 0)
            return 1;
        puts(v);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "xs-write"))
        return xs_write(argv[2], argv[3]) < 0 ? 1 : 0;
    if (argc == 4 && !strcmp(argv[1], "xs-wait")) {
        int64_t end = now_ms() + atoi(argv[3]) * 1000LL;
        while (xs_read(argv[2], v, sizeof v) < 0) {
            if (now_ms() >= end)
                return 1;
            msleep(500);
        }
        return 0;
    }
    fprintf(stderr, "usage: pvfront games [DEVID] | xs-read PATH | xs-write PATH VALUE | xs-wait PATH SECONDS\n");
    return 2;
}
