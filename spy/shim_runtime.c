/*
 * p11spy shim runtime: configuration, loading the real module, the trace writer and the
 * record encoders. The generated part (spy/codegen.py) puts the PKCS#11 types, the format
 * #defines and the function-list structs before this file, and the per-function wrappers
 * after it.
 *
 * Rules this file keeps:
 *  - the application sees exactly what the real module returns; logging failures are silent;
 *  - memory is read only where the call made it valid (NULL checks, lengths, return values);
 *  - one record per call, written with a single write(2) on an O_APPEND descriptor, after the
 *    call returns; no lock is held across the real call.
 */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define P11_EXPORT __attribute__((visibility("default")))

/* Every number in a record is in the writer's byte order; the process record says which. */
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define P11_BYTE_ORDER "big"
#else
#define P11_BYTE_ORDER "little"
#endif

_Static_assert(sizeof(CK_ULONG) == 8, "p11spy records CK_ULONG as 8 bytes");

/* CKR_*_ (every return value), P11_MAX_CTX and P11_MAX_MODULES come from codegen's #defines. */
#define CK_UNAVAILABLE_ (~0UL)

#define P11_MAX_ATTRS 1024      /* templates longer than this are recorded by count only */
#define P11_MAX_PENDING 4

/* ------------------------------------------------------------------------------------------ */
/* Process-wide state                                                                          */

struct p11_config {
    char module[PATH_MAX];
    char output_pattern[PATH_MAX];
    char output[PATH_MAX];
    int output_is_default;
    int secrets;
    size_t max_buffer;
};

struct p11_module {
    int index;
    char path[PATH_MAX];
    void *handle;
    CK_RV (*get_function_list)(void *);
    CK_RV (*get_interface_list)(CK_INTERFACE *, CK_ULONG *);
    CK_RV (*get_interface)(CK_UTF8CHAR *, CK_VERSION *, CK_INTERFACE **, CK_FLAGS);
    int live;                      /* initialized by the client and not finalized since */
};

/* One wrapped function list: the real list, its slots, and the list handed to the client. */
struct p11_ctx {
    int used;
    struct p11_module *mod;        /* the module the list belongs to */
    void *real_list;               /* the module's list this one mirrors */
    void *real[P11_NFUNCS];        /* the module's function pointers, by function index */
    P11_FUNCTION_LIST_3_2 ours;    /* version + our wrappers (NULL where the module has NULL) */
};

static struct p11_config g_cfg;
static struct p11_module g_mods[P11_MAX_MODULES];
static int g_nmods;
/* Stand-in contexts for the entry points (C_GetFunctionList, ...) of each module: they only
 * name the module. */
static struct p11_ctx g_entry[P11_MAX_MODULES];
static struct p11_ctx g_ctx[P11_MAX_CTX];
static pthread_mutex_t g_ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_ready;                /* 1 once the module is loaded and the trace open */
static int g_secure;               /* setuid/setgid (AT_SECURE): the environment is not ours */
static int g_passthrough;          /* calls go to the module untraced (setuid/setgid) */
static int g_fd = -1;              /* the trace; g_fd_dev/g_fd_ino say which file it is */
static dev_t g_fd_dev;
static ino_t g_fd_ino;
static int g_fd_marked;            /* O_NOATIME marks the trace's open file description */
static int g_quiet;                /* no complaint on stderr (reopening the trace) */
static uint64_t g_dropped;         /* records lost to failed writes, not yet reported */
static pthread_mutex_t g_out_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t g_pid;
static uint64_t g_seq;
static CK_INTERFACE g_ifaces[P11_MAX_CTX];
static int g_nifaces;
#define P11_SHIM_MODULE 255
static struct p11_module g_shim_mod = {
    .index = P11_SHIM_MODULE,
    .path = "p11spy shim: answered from the module's C_GetFunctionList (the module has no "
            "PKCS#11 3.0 interfaces)",
};
static int g_shim_announced;

struct p11_tls {
    unsigned char *buf;
    size_t cap;
    int busy;
    pid_t tid;
    uint64_t call_seq;             /* the call running on this thread (for APDU records) */
    struct p11_rec *cur;           /* the record of that call */
};
static __thread struct p11_tls t_tls;

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                               */

/* Where complaints go instead of stderr: the preloaded spy under `p11spy run` tells run. */
static void (*g_complain_to)(const char *line);

static void p11_complain(const char *fmt, const char *a, const char *b)
{
    if (g_quiet) return;
    char line[2 * PATH_MAX + 256];
    int n = snprintf(line, sizeof line, "p11spy: ");
    n += snprintf(line + n, sizeof line - (size_t)n, fmt, a ? a : "", b ? b : "");
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    if (g_complain_to) {
        line[n] = 0;
        g_complain_to(line);
        return;
    }
    line[n++] = '\n';
    ssize_t w = write(2, line, (size_t)n);
    (void)w;
}

static pid_t p11_tid(void)
{
    if (!t_tls.tid) t_tls.tid = (pid_t)syscall(SYS_gettid);
    return t_tls.tid;
}

static uint64_t p11_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t p11_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t p11_fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Whether fd is still the trace's open file description. The shim marks its description with
 * O_NOATIME (the trace is never read, so atime does not matter), and checks the status flags
 * with one F_GETFL per record (~50 ns): a file the client opened under the same number, after
 * closing ours, does not carry O_RDWR|O_APPEND|O_NOATIME. st_dev/st_ino cannot tell (and fstat
 * costs ~400 ns on a file being appended to): once the client closed our descriptor and the
 * trace was deleted, the client's new file may get the very same inode number. They are the
 * test only where the mark cannot be set (a file we may not set O_NOATIME on: /dev/null). */
static int p11_fd_is_ours(int fd)
{
    if (fd < 0) return 0;
    if (g_fd_marked) {
        int fl = fcntl(fd, F_GETFL);
        return fl >= 0 && (fl & (O_ACCMODE | O_APPEND | O_NOATIME)) ==
                              (O_RDWR | O_APPEND | O_NOATIME);
    }
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_ino == g_fd_ino && st.st_dev == g_fd_dev;
}

/* Marks a just-opened trace (and makes it blocking: it was opened O_NONBLOCK). */
static void p11_mark_fd(int fd)
{
    g_fd_marked = fcntl(fd, F_SETFL, O_APPEND | O_NOATIME) == 0;
    if (!g_fd_marked) fcntl(fd, F_SETFL, O_APPEND);
}

static int p11_open_path(void);
static void p11_write_header(pid_t ppid_if_fork);
static void p11_announce_all(void);

/* The trace descriptor, checked before each write: a client that closed it
 * (closefrom, a daemon's clean-up) and opened a file of its own under the same number must
 * never receive our records. Then the trace is reopened by name (appending to it), silently;
 * if that fails, tracing stops. The client's descriptor is never written to nor closed. */
static int p11_out_fd(void)
{
    int fd = __atomic_load_n(&g_fd, __ATOMIC_ACQUIRE);
    if (fd < 0 || p11_fd_is_ours(fd)) return fd;
    int reopened = 0;
    pthread_mutex_lock(&g_out_lock);
    if (__atomic_load_n(&g_fd, __ATOMIC_ACQUIRE) == fd) {
        __atomic_store_n(&g_fd, -1, __ATOMIC_RELEASE);
        g_quiet = 1; /* stderr may no longer be a terminal anyone reads */
        reopened = p11_open_path();
        g_quiet = 0;
    }
    fd = __atomic_load_n(&g_fd, __ATOMIC_ACQUIRE);
    pthread_mutex_unlock(&g_out_lock);
    if (reopened == 2) { /* the trace was removed meanwhile: the new file says whose it is */
        p11_write_header(0);
        p11_announce_all();
    }
    return fd;
}

/* A record cut short by a failed write would swallow the records after it (its length says
 * more bytes follow): the part written is cut off again, if the file still ends with it. */
static void p11_undo_partial(int fd, const unsigned char *rec, size_t k)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < (off_t)k) return;
    off_t at = st.st_size - (off_t)k;
    unsigned char tail[4096];
    for (size_t done = 0; done < k;) {
        size_t step = k - done < sizeof tail ? k - done : sizeof tail;
        if (pread(fd, tail, step, at + (off_t)done) != (ssize_t)step ||
            memcmp(tail, rec + done, step) != 0)
            return;
        done += step;
    }
    if (ftruncate(fd, at) != 0) return;
}

/* 1 if the whole buffer reached the file. */
static int p11_write_fd(int fd, const void *data, size_t n)
{
    const unsigned char *p = data;
    while (n > 0) {
        ssize_t w = (ssize_t)syscall(SYS_write, fd, p, n); /* no cancellation point */
        if (w < 0) {
            if (errno == EINTR) continue;
            /* disk full, file too large: the application must not notice */
            if (p != data) p11_undo_partial(fd, data, (size_t)(p - (const unsigned char *)data));
            return 0;
        }
        p += w;
        n -= (size_t)w;
    }
    return 1;
}

static void p11_dropped_record(unsigned char *rec, uint64_t count);   /* below */

/* Writes one record. Records lost to a failed write (full disk) are counted; the count is
 * written as a DROPPED record before the next record that can be written, so a reader knows
 * calls are missing and how many. */
static void p11_write_to(int fd, const void *data, size_t n)
{
    uint64_t lost = __atomic_load_n(&g_dropped, __ATOMIC_RELAXED) /* no locked op per record */
                    ? __atomic_exchange_n(&g_dropped, 0, __ATOMIC_ACQ_REL) : 0;
    if (lost) {
        unsigned char rec[P11_RECORD_SIZE + P11_FIELD_SIZE + 8];
        p11_dropped_record(rec, lost);
        if (!p11_write_fd(fd, rec, sizeof rec)) {
            __atomic_add_fetch(&g_dropped, lost + (n ? 1 : 0), __ATOMIC_ACQ_REL);
            return;
        }
    }
    if (n && !p11_write_fd(fd, data, n)) __atomic_add_fetch(&g_dropped, 1, __ATOMIC_ACQ_REL);
}

static void p11_write_all(const void *data, size_t n)
{
    int fd = p11_out_fd();
    if (fd >= 0) p11_write_to(fd, data, n);
}

/* ------------------------------------------------------------------------------------------ */
/* Records                                                                                     */

struct p11_rec {
    unsigned char *buf;
    size_t len, cap;
    int owned;                     /* buf was malloc'd for a nested call */
    int failed;                    /* out of memory: the record is dropped */
    uint64_t start_us, t0, t1, seq, prev_seq;
    unsigned fn, mod, type;
    struct p11_rec *outer;         /* the call this one was made from, on this thread */
    int entry_fd;                  /* where its ENTRY went, checked then; -1: none written */
    int passed_on;                 /* it called another module's function: not recorded */
    struct { int param; const unsigned char *p; CK_ULONG n; } pending[P11_MAX_PENDING];
    int npending;
};

static int p11_reserve(struct p11_rec *r, size_t more)
{
    if (r->failed) return 0;
    if (r->len + more <= r->cap) return 1;
    size_t cap = r->cap ? r->cap : 4096;
    while (cap < r->len + more) cap *= 2;
    unsigned char *nb = realloc(r->buf, cap);
    if (!nb) {
        r->failed = 1;
        return 0;
    }
    r->buf = nb;
    r->cap = cap;
    if (!r->owned) {
        t_tls.buf = nb;
        t_tls.cap = cap;
    }
    return 1;
}

static void p11_put(struct p11_rec *r, const void *data, size_t n)
{
    if (!p11_reserve(r, n)) return;
    memcpy(r->buf + r->len, data, n);
    r->len += n;
}

static void p11_put_u64(struct p11_rec *r, uint64_t v) { p11_put(r, &v, 8); }

/* Starts a field and returns the offset of its length word, to be patched by p11_field_end. */
static size_t p11_field_begin(struct p11_rec *r, int param, int phase, int kind, int flags)
{
    unsigned char h[P11_FIELD_SIZE] = {(unsigned char)param, (unsigned char)phase,
                                       (unsigned char)kind, (unsigned char)flags, 0, 0, 0, 0};
    size_t at = r->len + 4;
    p11_put(r, h, sizeof h);
    return at;
}

static void p11_field_end(struct p11_rec *r, size_t at)
{
    if (r->failed) return;
    uint32_t n = (uint32_t)(r->len - at - 4);
    memcpy(r->buf + at, &n, 4);
}

static void p11_field(struct p11_rec *r, int param, int phase, int kind, int flags,
                      const void *data, size_t n)
{
    size_t at = p11_field_begin(r, param, phase, kind, flags);
    if (n) p11_put(r, data, n);
    p11_field_end(r, at);
}

static void p11_rec_begin(struct p11_rec *r, unsigned fn, unsigned mod)
{
    memset(r, 0, offsetof(struct p11_rec, pending));
    r->npending = 0;
    r->entry_fd = -1;
    r->fn = fn;
    r->mod = mod;
    r->type = REC_CALL;
    if (!t_tls.busy) {
        t_tls.busy = 1;
        r->buf = t_tls.buf;
        r->cap = t_tls.cap;
    } else {
        r->owned = 1; /* a call made from inside another (a notify callback, the module) */
    }
    r->start_us = p11_now_us();
    r->seq = __atomic_add_fetch(&g_seq, 1, __ATOMIC_RELAXED);
    r->prev_seq = t_tls.call_seq;
    t_tls.call_seq = r->seq;
    /* A module that answers by calling another module (p11-kit-proxy over SoftHSM) makes two
     * records of one call: only the inner one, of the module that answered, is kept. A call
     * into the same module (from a notify callback) is a call of its own. */
    r->outer = t_tls.cur;
    t_tls.cur = r;
    if (r->outer && mod < P11_MAX_MODULES && r->outer->mod < P11_MAX_MODULES &&
        r->outer->mod != mod)
        r->outer->passed_on = 1;
    unsigned char zero[P11_RECORD_SIZE] = {0};
    p11_put(r, zero, sizeof zero);
}

static void p11_rec_entry(struct p11_rec *r);   /* below */
/* The module is about to be called: the ENTRY record goes out first (its write is not timed). */
static void p11_rec_call_start(struct p11_rec *r)
{
    p11_rec_entry(r);
    r->t0 = p11_mono_ns();
}
static void p11_rec_call_end(struct p11_rec *r) { r->t1 = p11_mono_ns(); }

static void p11_rec_header(struct p11_rec *r, unsigned type, unsigned mod, unsigned fn,
                           uint64_t dur, uint64_t rv, uint64_t seq)
{
    if (r->failed || r->len < P11_RECORD_SIZE) return;
    unsigned char *h = r->buf;
    uint32_t len = (uint32_t)r->len, pid = (uint32_t)g_pid;
    uint16_t f = (uint16_t)fn;
    uint64_t tid = (uint64_t)p11_tid();
    memcpy(h, "P11R", 4);
    memcpy(h + 4, &len, 4);
    h[8] = (unsigned char)type;
    h[9] = (unsigned char)mod;
    memcpy(h + 10, &f, 2);
    memcpy(h + 12, &pid, 4);
    memcpy(h + 16, &tid, 8);
    memcpy(h + 24, &r->start_us, 8);
    memcpy(h + 32, &dur, 8);
    memcpy(h + 40, &rv, 8);
    memcpy(h + 48, &seq, 8);
}

/* A DROPPED record: one ULONG field, how many records before it could not be written. */
static void p11_dropped_record(unsigned char *rec, uint64_t count)
{
    struct p11_rec r = {0};
    r.buf = rec;
    r.cap = P11_RECORD_SIZE + P11_FIELD_SIZE + 8;
    r.owned = 1; /* a caller's buffer of the right size: p11_reserve never reallocates it */
    r.start_us = p11_now_us();
    unsigned char zero[P11_RECORD_SIZE] = {0};
    p11_put(&r, zero, sizeof zero);
    p11_field(&r, 0, PH_OUT, K_ULONG, 0, &count, 8);
    p11_rec_header(&r, REC_DROPPED, 0, 0, 0, 0, 0);
}

static void p11_flush_pending(struct p11_rec *r, CK_RV rv);
static void p11_unread(struct p11_rec *r, int param, int phase, CK_ULONG claimed);

/* The ENTRY record: the call's header and its in-arguments, written before the module is
 * called, so that a call the process never comes back from (a crash, a kill, a hang) is in the
 * trace. The CALL record written on return repeats them (it stays whole, so every reader of
 * CALL records reads it alone); readers pair the two by pid, thread, call number and start.
 * An input too large to copy is digested only after a successful call: here it is UNREAD. */
static void p11_rec_entry(struct p11_rec *r)
{
    if (r->failed || r->type != REC_CALL) return; /* PC/SC calls: on return only */
    size_t len = r->len;
    for (int i = 0; i < r->npending; i++)
        p11_unread(r, r->pending[i].param, PH_IN, r->pending[i].n);
    p11_rec_header(r, REC_ENTRY, r->mod, r->fn, 0, 0, r->seq);
    if (!r->failed && (r->entry_fd = p11_out_fd()) >= 0)
        p11_write_to(r->entry_fd, r->buf, r->len);
    r->len = len;
}

/* The descriptor is checked before the ENTRY is written (p11_out_fd); the return of a call that
 * took less than this goes to it unchecked, as the check is a system call and two records per
 * call must cost less than pkcs11-spy's one. Another thread of the client would have to close
 * our descriptor and open a file under its number within those microseconds; a longer call's
 * return is checked again. */
#define P11_RECHECK_NS 100000

static void p11_rec_finish(struct p11_rec *r, CK_RV rv)
{
    p11_flush_pending(r, rv);
    /* A call passed on to another module is that module's call record; its ENTRY is closed by
     * a PASSED_ON record, the header alone. */
    if (r->passed_on && !r->failed) r->len = P11_RECORD_SIZE;
    p11_rec_header(r, r->passed_on ? REC_PASSED_ON : r->type, r->mod, r->fn, r->t1 - r->t0,
                   rv, r->seq);
    if (!r->failed) {
        int fd = r->entry_fd;
        if (fd < 0 || r->t1 - r->t0 > P11_RECHECK_NS ||
            __atomic_load_n(&g_fd, __ATOMIC_ACQUIRE) != fd)
            fd = p11_out_fd();
        if (fd >= 0) p11_write_to(fd, r->buf, r->len);
    }
    t_tls.call_seq = r->prev_seq;
    t_tls.cur = r->outer;
    if (r->owned) free(r->buf);
    else t_tls.busy = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Encoders, one per parameter role                                                            */

static void p11_ulong(struct p11_rec *r, int param, int phase, CK_ULONG v)
{
    p11_field(r, param, phase, K_ULONG, 0, &v, 8);
}

static void p11_null(struct p11_rec *r, int param, int phase)
{
    p11_field(r, param, phase, K_NULL, 0, NULL, 0);
}

static void p11_unread(struct p11_rec *r, int param, int phase, CK_ULONG claimed)
{
    p11_field(r, param, phase, K_UNREAD, 0, &claimed, 8);
}

static void p11_digest(struct p11_rec *r, int param, int phase, const unsigned char *p,
                       CK_ULONG n)
{
    size_t at = p11_field_begin(r, param, phase, K_DIGEST, 0);
    p11_put_u64(r, n);
    p11_put_u64(r, p11_fnv1a(p, n));
    p11_put(r, p, n < P11_DIGEST_PREFIX ? n : P11_DIGEST_PREFIX);
    p11_field_end(r, at);
}

/* An input buffer: whole if small; if large, digested after the call when it succeeded. */
static void p11_bytes_in(struct p11_rec *r, int param, const void *p, CK_ULONG n)
{
    if (!p) {
        p11_null(r, param, PH_IN);
        return;
    }
    if (n <= g_cfg.max_buffer) {
        p11_field(r, param, PH_IN, K_BYTES, 0, p, n);
        return;
    }
    if (r->npending < P11_MAX_PENDING) {
        r->pending[r->npending].param = param;
        r->pending[r->npending].p = p;
        r->pending[r->npending].n = n;
        r->npending++;
    } else {
        p11_unread(r, param, PH_IN, n);
    }
}

static void p11_flush_pending(struct p11_rec *r, CK_RV rv)
{
    for (int i = 0; i < r->npending; i++) {
        if (rv == CKR_OK_)
            p11_digest(r, r->pending[i].param, PH_IN, r->pending[i].p, r->pending[i].n);
        else
            p11_unread(r, r->pending[i].param, PH_IN, r->pending[i].n);
    }
    r->npending = 0;
}

/* An output buffer of known valid length. */
static void p11_bytes_out(struct p11_rec *r, int param, const void *p, CK_ULONG n)
{
    if (n <= g_cfg.max_buffer) p11_field(r, param, PH_OUT, K_BYTES, 0, p, n);
    else p11_digest(r, param, PH_OUT, p, n);
}

/* What a PIN's bytes look like, without the bytes: a character class and extra marks.
 * UTF-16 is told first, on the whole value, so that its zero bytes are not taken for a
 * trailing NUL; trailing NULs and newlines are then counted in characters of the encoding. */
static void p11_classify(const unsigned char *p, CK_ULONG n, unsigned char *cls,
                         unsigned char *extra)
{
    unsigned char x = 0;
    CK_ULONG end = n;
    if (end > 0 && p[end - 1] == 0xff) {
        x |= PINX_PADDED;
        while (end > 0 && p[end - 1] == 0xff) end--;
    }
    CK_ULONG step = 1, start = 0;
    if (end >= 4 && end % 2 == 0) {
        int lo_zero = 1, hi_zero = 1;
        for (CK_ULONG i = 0; i < end; i += 2) {
            if (p[i] != 0) lo_zero = 0;
            if (p[i + 1] != 0) hi_zero = 0;
        }
        if (hi_zero && !lo_zero) { x |= PINX_UTF16; step = 2; start = 0; }
        else if (lo_zero && !hi_zero) { x |= PINX_UTF16; step = 2; start = 1; }
    }
    while (end >= step && p[end - step + start] == 0) {
        x |= PINX_HAS_NUL;
        end -= step;
    }
    if (end >= step && (p[end - step + start] == '\n' || p[end - step + start] == '\r')) {
        x |= PINX_TRAILING_NEWLINE;
        while (end >= step && (p[end - step + start] == '\n' || p[end - step + start] == '\r'))
            end -= step;
    }
    int digits = 1, printable = 1, ebcdic = 1, any = 0;
    for (CK_ULONG i = start; i < end; i += step) {
        unsigned char c = p[i];
        any = 1;
        if (c == 0) x |= PINX_HAS_NUL;
        if (c > 0x7f) x |= PINX_NON_ASCII;
        if (c < '0' || c > '9') digits = 0;
        if (c < 0x20 || c > 0x7e) printable = 0;
        if (c < 0xf0 || c > 0xf9) ebcdic = 0;
    }
    if (!any) *cls = PIN_EMPTY;
    else if (digits) *cls = PIN_ASCII_DIGITS;
    else if (printable) *cls = PIN_ASCII_OTHER;
    else if (ebcdic) *cls = PIN_EBCDIC_DIGITS;
    else *cls = PIN_OTHER;
    *extra = x;
}

static void p11_masked_payload(struct p11_rec *r, const void *p, CK_ULONG n)
{
    unsigned char m[16] = {0};
    unsigned char cls = PIN_EMPTY, extra = 0;
    if (p && n <= g_cfg.max_buffer) p11_classify(p, n, &cls, &extra);
    memcpy(m, &n, 8);
    m[8] = cls;
    m[9] = extra;
    p11_put(r, m, sizeof m);
}

/* A PIN: its length and character class, or its bytes when P11SPY_LOG_SECRETS=1. */
static void p11_pin(struct p11_rec *r, int param, const void *p, CK_ULONG n)
{
    if (!p) {
        p11_null(r, param, PH_IN);
        return;
    }
    if (g_cfg.secrets) {
        if (n <= g_cfg.max_buffer) p11_field(r, param, PH_IN, K_BYTES, FF_SECRETS_SHOWN, p, n);
        else p11_unread(r, param, PH_IN, n);
        return;
    }
    size_t at = p11_field_begin(r, param, PH_IN, K_MASKED, 0);
    p11_masked_payload(r, p, n);
    p11_field_end(r, at);
}

static void p11_text_fixed(struct p11_rec *r, int param, const void *p, size_t n)
{
    if (!p) p11_null(r, param, PH_IN);
    else p11_field(r, param, PH_IN, K_BYTES, 0, p, n);
}

static void p11_cstring(struct p11_rec *r, int param, const char *s)
{
    if (!s) {
        p11_null(r, param, PH_IN);
        return;
    }
    p11_field(r, param, PH_IN, K_CSTRING, 0, s, strnlen(s, 256));
}

static void p11_struct(struct p11_rec *r, int param, int phase, const void *p, size_t n)
{
    if (!p) p11_null(r, param, phase);
    else p11_field(r, param, phase, K_STRUCT, 0, p, n);
}

/* ---- templates -------------------------------------------------------------------------- */

static int p11_attr_secret(CK_ATTRIBUTE_TYPE t);   /* generated: 0 no, 1 always, 2 for keys */

#define KEYCTX_UNKNOWN (-1)

static int p11_keyless_class(CK_ULONG cls);   /* generated: classes known to hold no key */

/* Whether a template's object may hold key material: 1 when its class may (any class not
 * known to hold no secret: keys, OTP keys, vendor-defined and unknown classes) or it is
 * sensitive, 0 for a class known to hold none, KEYCTX_UNKNOWN when it does not say. */
static int p11_template_keyctx(const CK_ATTRIBUTE *a, CK_ULONG n)
{
    int ctx = KEYCTX_UNKNOWN;
    for (CK_ULONG i = 0; i < n; i++) {
        if (!a[i].pValue || a[i].ulValueLen == CK_UNAVAILABLE_) continue;
        if (a[i].type == P11_CKA_CLASS && a[i].ulValueLen == sizeof(CK_ULONG)) {
            if (!p11_keyless_class(*(const CK_ULONG *)a[i].pValue)) return 1;
            ctx = 0;
        } else if (a[i].type == P11_CKA_SENSITIVE && a[i].ulValueLen >= 1) {
            if (*(const CK_BBOOL *)a[i].pValue) return 1;
        }
    }
    return ctx;
}

static int p11_mask_attr(CK_ATTRIBUTE_TYPE t, int keyctx)
{
    if (g_cfg.secrets) return 0;
    int s = p11_attr_secret(t);
    return s == 1 || (s == 2 && keyctx != 0);
}

/* One attribute value: p must be valid for n bytes when the caller asks for bytes. */
static void p11_attr_value(struct p11_rec *r, const CK_ATTRIBUTE *a, CK_ULONG n, int keyctx,
                           int depth);

static void p11_template_body(struct p11_rec *r, const CK_ATTRIBUTE *a, CK_ULONG n,
                              int with_values, int keyctx, int depth)
{
    p11_put_u64(r, n);
    for (CK_ULONG i = 0; i < n; i++) {
        unsigned char h[24] = {0};
        CK_ULONG len = a[i].ulValueLen;
        memcpy(h, &a[i].type, 8);
        memcpy(h + 8, &len, 8);
        if (!with_values || !a[i].pValue || len == CK_UNAVAILABLE_) {
            h[16] = a[i].pValue ? K_UNREAD : K_NULL;
            p11_put(r, h, sizeof h);
            continue;
        }
        p11_attr_value(r, &a[i], len, keyctx, depth);
    }
}

static void p11_attr_value(struct p11_rec *r, const CK_ATTRIBUTE *a, CK_ULONG n, int keyctx,
                           int depth)
{
    unsigned char h[24] = {0};
    memcpy(h, &a->type, 8);
    memcpy(h + 8, &n, 8);
    uint32_t plen;
    size_t at;
    if (p11_mask_attr(a->type, keyctx)) {
        h[16] = K_MASKED;
        p11_put(r, h, sizeof h);
        at = r->len;
        p11_masked_payload(r, a->pValue, n);
    } else if ((a->type & P11_CKF_ARRAY_ATTRIBUTE) && depth == 0 &&
               n % sizeof(CK_ATTRIBUTE) == 0 && n / sizeof(CK_ATTRIBUTE) <= P11_MAX_ATTRS) {
        h[16] = K_TEMPLATE;
        p11_put(r, h, sizeof h);
        at = r->len;
        const CK_ATTRIBUTE *inner = a->pValue;
        CK_ULONG cnt = n / sizeof(CK_ATTRIBUTE);
        int ictx = p11_template_keyctx(inner, cnt);
        p11_template_body(r, inner, cnt, 1, ictx == KEYCTX_UNKNOWN ? keyctx : ictx, depth + 1);
    } else if (n <= g_cfg.max_buffer) {
        h[16] = K_BYTES;
        p11_put(r, h, sizeof h);
        at = r->len;
        p11_put(r, a->pValue, n);
    } else {
        h[16] = K_DIGEST;
        p11_put(r, h, sizeof h);
        at = r->len;
        p11_put_u64(r, n);
        p11_put_u64(r, p11_fnv1a(a->pValue, n));
        p11_put(r, a->pValue, n < P11_DIGEST_PREFIX ? n : P11_DIGEST_PREFIX);
    }
    if (r->failed) return;
    plen = (uint32_t)(r->len - at);
    memcpy(r->buf + at - 4, &plen, 4);
}

/* Whether an input template can be recorded; if not, records why (NULL, or more attributes
 * than the shim reads) and the caller records nothing else for it. */
static int p11_template_readable(struct p11_rec *r, int param, const CK_ATTRIBUTE *a,
                                 CK_ULONG n)
{
    if (!a) {
        p11_null(r, param, PH_IN);
        return 0;
    }
    if (n > P11_MAX_ATTRS) {
        p11_unread(r, param, PH_IN, n);
        return 0;
    }
    return 1;
}

/* A template read by the call. keyctx_hint: 1 if the function creates a key from it. */
static void p11_template_in(struct p11_rec *r, int param, const CK_ATTRIBUTE *a, CK_ULONG n,
                            int keyctx_hint)
{
    if (!p11_template_readable(r, param, a, n)) return;
    int ctx = keyctx_hint ? 1 : p11_template_keyctx(a, n);
    size_t at = p11_field_begin(r, param, PH_IN, K_TEMPLATE, 0);
    p11_template_body(r, a, n, 1, ctx, 0);
    p11_field_end(r, at);
}

/* C_GetAttributeValue's template: types and room offered before; lengths and values after. */
struct p11_tmpl_saved {
    CK_ULONG n;
    CK_ULONG *lens;                /* ulValueLen offered, per attribute */
    CK_ULONG small[16];
};

static void p11_template_inout_in(struct p11_rec *r, int param, const CK_ATTRIBUTE *a,
                                  CK_ULONG n, struct p11_tmpl_saved *s)
{
    s->n = 0;
    s->lens = NULL;
    if (!p11_template_readable(r, param, a, n)) return;
    s->lens = n <= 16 ? s->small : malloc(n * sizeof(CK_ULONG));
    if (s->lens) {
        s->n = n;
        for (CK_ULONG i = 0; i < n; i++) s->lens[i] = a[i].pValue ? a[i].ulValueLen : 0;
    }
    size_t at = p11_field_begin(r, param, PH_IN, K_TEMPLATE, 0);
    p11_template_body(r, a, n, 0, 0, 0);
    p11_field_end(r, at);
}

static void p11_template_inout_out(struct p11_rec *r, int param, CK_RV rv, CK_SESSION_HANDLE hs,
                                   CK_OBJECT_HANDLE ho, CK_ATTRIBUTE *a, CK_ULONG n,
                                   struct p11_tmpl_saved *s, void *real_gav)
{
    if (!a || s->n != n || !s->lens) goto done;
    if (rv != CKR_OK_ && rv != CKR_ATTRIBUTE_SENSITIVE_ && rv != CKR_ATTRIBUTE_TYPE_INVALID_ &&
        rv != CKR_BUFFER_TOO_SMALL_)
        goto done;
    int ctx = p11_template_keyctx(a, n);
    if (ctx == KEYCTX_UNKNOWN && !g_cfg.secrets) {
        /* Only ask the module for the object's class when a value may be key material. */
        int need = 0;
        for (CK_ULONG i = 0; i < n; i++)
            if (p11_attr_secret(a[i].type) == 2 && a[i].pValue) need = 1;
        if (need && real_gav) {
            CK_ULONG cls = 0;
            CK_ATTRIBUTE q = {P11_CKA_CLASS, &cls, sizeof cls};
            CK_RV (*gav)(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_ATTRIBUTE *, CK_ULONG) =
                real_gav;
            ctx = gav(hs, ho, &q, 1) == CKR_OK_ && p11_keyless_class(cls) ? 0 : 1;
        }
    }
    size_t at = p11_field_begin(r, param, PH_OUT, K_TEMPLATE, 0);
    p11_put_u64(r, n);
    for (CK_ULONG i = 0; i < n; i++) {
        CK_ULONG len = a[i].ulValueLen;
        /* A value is valid only where the module wrote it: room offered, length fits. */
        if (a[i].pValue && len != CK_UNAVAILABLE_ && len <= s->lens[i]) {
            p11_attr_value(r, &a[i], len, ctx, 0);
        } else {
            unsigned char h[24] = {0};
            memcpy(h, &a[i].type, 8);
            memcpy(h + 8, &len, 8);
            h[16] = a[i].pValue ? K_UNREAD : K_NULL;
            p11_put(r, h, sizeof h);
        }
    }
    p11_field_end(r, at);
done:
    if (s->lens && s->lens != s->small) free(s->lens);
    s->lens = NULL;
}

/* ---- mechanisms ------------------------------------------------------------------------- */

struct p11_mech_ptr { size_t ptr_off, len_off; int secret; };
struct p11_mech_desc { size_t size; int nptr; struct p11_mech_ptr ptr[6]; };

static const struct p11_mech_desc *p11_mech_desc(CK_MECHANISM_TYPE t);   /* generated */

static void p11_mechanism(struct p11_rec *r, int param, const CK_MECHANISM *m)
{
    if (!m) {
        p11_null(r, param, PH_IN);
        return;
    }
    unsigned char h[24] = {0};
    memcpy(h, &m->mechanism, 8);
    memcpy(h + 8, &m->ulParameterLen, 8);
    size_t at = p11_field_begin(r, param, PH_IN, K_MECHANISM, 0);
    const struct p11_mech_desc *d = p11_mech_desc(m->mechanism);
    if (!m->pParameter) {
        h[16] = K_NULL;
        p11_put(r, h, sizeof h);
    } else if (d && m->ulParameterLen == d->size) {
        h[16] = K_STRUCT;
        p11_put(r, h, sizeof h);
        size_t pat = r->len;
        p11_put(r, m->pParameter, d->size);
        const unsigned char *base = m->pParameter;
        for (int i = 0; i < d->nptr; i++) {
            const void *p;
            CK_ULONG n;
            memcpy(&p, base + d->ptr[i].ptr_off, sizeof p);
            memcpy(&n, base + d->ptr[i].len_off, sizeof n);
            unsigned char b[8] = {0};
            size_t bat = r->len + 4;
            if (!p) {
                b[0] = K_NULL;
                p11_put(r, b, 8);
            } else if (d->ptr[i].secret && !g_cfg.secrets) {
                b[0] = K_MASKED;
                p11_put(r, b, 8);
                p11_masked_payload(r, p, n);
            } else if (n <= g_cfg.max_buffer) {
                b[0] = K_BYTES;
                p11_put(r, b, 8);
                p11_put(r, p, n);
            } else {
                b[0] = K_UNREAD;
                p11_put(r, b, 8);
                p11_put_u64(r, n);
            }
            if (!r->failed) {
                uint32_t bl = (uint32_t)(r->len - bat - 4);
                memcpy(r->buf + bat, &bl, 4);
            }
        }
        if (!r->failed) {
            uint32_t pl = (uint32_t)(r->len - pat);
            memcpy(r->buf + pat - 4, &pl, 4);
        }
    } else if (m->ulParameterLen <= g_cfg.max_buffer) {
        h[16] = K_BYTES;
        uint32_t pl = (uint32_t)m->ulParameterLen;
        memcpy(h + 20, &pl, 4);
        p11_put(r, h, sizeof h);
        p11_put(r, m->pParameter, m->ulParameterLen);
    } else {
        h[16] = K_UNREAD;
        p11_put(r, h, sizeof h);
    }
    p11_field_end(r, at);
}

/* ---- length pointers, output buffers and arrays ----------------------------------------- */

static void p11_len_ptr_in(struct p11_rec *r, int param, const CK_ULONG *p, CK_ULONG *saved)
{
    *saved = p ? *p : 0;
    if (!p) p11_null(r, param, PH_IN);
    else p11_ulong(r, param, PH_IN, *p);
}

static void p11_len_ptr_out(struct p11_rec *r, int param, CK_RV rv, const CK_ULONG *p)
{
    if (p && (rv == CKR_OK_ || rv == CKR_BUFFER_TOO_SMALL_)) p11_ulong(r, param, PH_OUT, *p);
}

/* Two-call output buffer: NULL asks for the length; bytes are valid when the call succeeded
 * and the length produced fits the room offered. */
static void p11_out_in(struct p11_rec *r, int param, const void *p)
{
    if (!p) p11_null(r, param, PH_IN);
}

static void p11_buf_out(struct p11_rec *r, int param, CK_RV rv, const void *p,
                        const CK_ULONG *plen, CK_ULONG room)
{
    if (rv != CKR_OK_ || !p || !plen || *plen > room) return;
    p11_bytes_out(r, param, p, *plen);
}

static void p11_buf_out_fixed(struct p11_rec *r, int param, CK_RV rv, const void *p, CK_ULONG n)
{
    if (!p) {
        p11_null(r, param, PH_IN);
        return;
    }
    if (rv == CKR_OK_) p11_bytes_out(r, param, p, n);
}

static void p11_bytes_inout_out(struct p11_rec *r, int param, CK_RV rv, const void *p, CK_ULONG n)
{
    if (rv == CKR_OK_ && p && n <= g_cfg.max_buffer) p11_field(r, param, PH_OUT, K_BYTES, 0, p, n);
}

static void p11_array_out(struct p11_rec *r, int param, CK_RV rv, const CK_ULONG *arr,
                          const CK_ULONG *pcount, CK_ULONG room)
{
    if (rv != CKR_OK_ || !arr || !pcount || *pcount > room) return;
    CK_ULONG n = *pcount;
    if (n * sizeof(CK_ULONG) > g_cfg.max_buffer) n = g_cfg.max_buffer / sizeof(CK_ULONG);
    p11_field(r, param, PH_OUT, K_ULONG_ARRAY, 0, arr, n * sizeof(CK_ULONG));
}

static void p11_ulong_out(struct p11_rec *r, int param, CK_RV rv, const CK_ULONG *p)
{
    if (rv == CKR_OK_ && p) p11_ulong(r, param, PH_OUT, *p);
}

static void p11_struct_out(struct p11_rec *r, int param, CK_RV rv, const void *p, size_t n)
{
    if (rv == CKR_OK_ && p) p11_field(r, param, PH_OUT, K_STRUCT, 0, p, n);
}

/* Interfaces as handed to the client: per entry u64 flags, u8 major, u8 minor, u8 name length,
 * name bytes. */
static void p11_interfaces_out(struct p11_rec *r, int param, CK_RV rv, const CK_INTERFACE *list,
                               const CK_ULONG *pcount, CK_ULONG room)
{
    if (rv != CKR_OK_ || !list || !pcount || *pcount > room || *pcount > 64) return;
    size_t at = p11_field_begin(r, param, PH_OUT, K_BYTES, 0);
    for (CK_ULONG i = 0; i < *pcount; i++) {
        unsigned char e[11] = {0};
        const char *name = (const char *)list[i].pInterfaceName;
        size_t nl = name ? strnlen(name, 255) : 0;
        CK_VERSION v = {0, 0};
        if (list[i].pFunctionList) memcpy(&v, list[i].pFunctionList, sizeof v);
        memcpy(e, &list[i].flags, 8);
        e[8] = v.major;
        e[9] = v.minor;
        e[10] = (unsigned char)nl;
        p11_put(r, e, sizeof e);
        if (nl) p11_put(r, name, nl);
    }
    p11_field_end(r, at);
}

/* ------------------------------------------------------------------------------------------ */
/* Configuration and the trace file                                                            */

static const char *p11_env2(const char *a, const char *b)
{
    const char *v = secure_getenv(a);
    if (v && *v) return v;
    v = secure_getenv(b);
    return v && *v ? v : NULL;
}

static void p11_progname(char *out, size_t n)
{
    char exe[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    const char *name = "client";
    if (k > 0) {
        exe[k] = 0;
        const char *slash = strrchr(exe, '/');
        name = slash ? slash + 1 : exe;
    }
    snprintf(out, n, "%s", name);
}

/* %p pid, %u uid, %n program name, %t start time (s), %% a percent sign. */
static int p11_expand(const char *pattern, char *out, size_t n)
{
    size_t o = 0;
    char tmp[PATH_MAX];
    for (const char *p = pattern; *p; p++) {
        const char *add = tmp;
        if (*p == '%' && p[1]) {
            p++;
            switch (*p) {
            case 'p': snprintf(tmp, sizeof tmp, "%d", (int)getpid()); break;
            case 'u': snprintf(tmp, sizeof tmp, "%u", (unsigned)getuid()); break;
            case 'n': p11_progname(tmp, sizeof tmp); break;
            case 't': snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)time(NULL)); break;
            case '%': strcpy(tmp, "%"); break;
            default: snprintf(tmp, sizeof tmp, "%%%c", *p); break;
            }
        } else {
            tmp[0] = *p;
            tmp[1] = 0;
        }
        size_t l = strlen(add);
        if (o + l >= n) return 0;
        memcpy(out + o, add, l);
        o += l;
    }
    out[o] = 0;
    return 1;
}

static void p11_json_str(char *out, size_t n, size_t *o, const char *s)
{
    if (*o + 2 >= n) return;
    out[(*o)++] = '"';
    for (; *s && *o + 8 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[(*o)++] = '\\';
            out[(*o)++] = (char)c;
        } else if (c < 0x20) {
            *o += (size_t)snprintf(out + *o, n - *o, "\\u%04x", c);
        } else {
            out[(*o)++] = (char)c;
        }
    }
    out[(*o)++] = '"';
    out[*o] = 0;
}

/* A record whose payload is one JSON object (PROCESS and MODULE records). */
/* A record that is not a call (process, module, module info): the header, then what
 * fill() puts after it, written whole in one write like every record. */
static void p11_write_meta_record(unsigned type, unsigned mod, unsigned func,
                                  void (*fill)(struct p11_rec *, const void *),
                                  const void *arg)
{
    struct p11_rec r = {0};
    r.owned = 1;
    r.start_us = p11_now_us();
    unsigned char zero[P11_RECORD_SIZE] = {0};
    p11_put(&r, zero, sizeof zero);
    fill(&r, arg);
    /* A process record carries the byte-order mark where a call has its return value. */
    p11_rec_header(&r, type, mod, func, 0, type == REC_PROCESS ? P11_BYTE_ORDER_MARK : 0, 0);
    if (!r.failed) p11_write_all(r.buf, r.len);
    free(r.buf);
}

static void p11_fill_json(struct p11_rec *r, const void *js)
{
    p11_put(r, js, strlen((const char *)js));
}

static void p11_write_json_record(unsigned type, unsigned mod, const char *js)
{
    p11_write_meta_record(type, mod, 0, p11_fill_json, js);
}

/* `, "host": NODENAME`: the machine the trace is written on, so traces gathered from many
 * machines still say where each came from. Nothing when uname fails; errno is kept, since
 * the application may be reading it. */
static void p11_json_host(char *js, size_t n, size_t *o)
{
    int saved = errno;
    struct utsname u;
    if (uname(&u) == 0 && u.nodename[0] && *o + 12 < n) {
        u.nodename[sizeof u.nodename - 1] = 0;
        *o += (size_t)snprintf(js + *o, n - *o, ", \"host\": ");
        p11_json_str(js, n, o, u.nodename);
    }
    errno = saved;
}

/* The PROCESS record: who wrote what follows, with which settings. */
static void p11_write_header(pid_t ppid_if_fork)
{
    char js[4 * PATH_MAX];
    size_t o = 0;
    char exe[PATH_MAX] = "";
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k > 0) exe[k] = 0;
    o += (size_t)snprintf(js + o, sizeof js - o,
                          "{\"format\": %d, \"p11spy\": \"%s\", \"pid\": %d, \"ppid\": %d, "
                          "\"forked\": %s, \"uid\": %u, \"time_us\": %llu, \"exe\": ",
                          P11_FORMAT_VERSION, P11SPY_VERSION, (int)g_pid,
                          (int)(ppid_if_fork ? ppid_if_fork : getppid()),
                          ppid_if_fork ? "true" : "false", (unsigned)getuid(),
                          (unsigned long long)p11_now_us());
    p11_json_str(js, sizeof js, &o, exe);
    p11_json_host(js, sizeof js, &o);
    o += (size_t)snprintf(js + o, sizeof js - o, ", \"module\": ");
    p11_json_str(js, sizeof js, &o, g_cfg.module);
    o += (size_t)snprintf(js + o, sizeof js - o, ", \"output\": ");
    p11_json_str(js, sizeof js, &o, g_cfg.output);
    o += (size_t)snprintf(js + o, sizeof js - o,
                          ", \"secrets\": %s, \"max_buffer\": %zu, \"ulong_size\": %zu, "
                          "\"byte_order\": \"%s\", \"functions\": %d}",
                          g_cfg.secrets ? "true" : "false", g_cfg.max_buffer, sizeof(CK_ULONG),
                          P11_BYTE_ORDER, P11_NFUNCS);
    p11_write_json_record(REC_PROCESS, 0, js);
}

/* The MODULE record: which module the calls marked with this index went to. */
static void p11_announce_module(struct p11_module *m)
{
    char js[2 * PATH_MAX];
    size_t o = 0;
    o += (size_t)snprintf(js, sizeof js, "{\"index\": %d, \"path\": ", m->index);
    p11_json_str(js, sizeof js, &o, m->path);
    if (o + 2 < sizeof js) {
        js[o++] = '}';
        js[o] = 0;
    }
    p11_write_json_record(REC_MODULE, (unsigned)m->index, js);
}

/* Whether a directory may hold our trace: ours or root's, and writable by no one else unless
 * sticky (then no one else can rename or remove our file in it). The default folder must be
 * ours and writable by no one else at all. */
static int p11_dir_ok(const char *dir, int is_default)
{
    struct stat st;
    if ((is_default ? lstat(dir, &st) : stat(dir, &st)) != 0 || !S_ISDIR(st.st_mode)) {
        p11_complain("%s is not a directory (set P11SPY_OUTPUT)%s", dir, NULL);
        return 0;
    }
    int others_write = (st.st_mode & (S_IWGRP | S_IWOTH)) != 0;
    int owner_ok = is_default ? st.st_uid == geteuid() : st.st_uid == geteuid() || st.st_uid == 0;
    if (!owner_ok || (others_write && (is_default || !(st.st_mode & S_ISVTX)))) {
        p11_complain("%s is not a directory of ours: another user owns it or may write in it "
                     "(set P11SPY_OUTPUT)%s", dir, NULL);
        return 0;
    }
    return 1;
}

/* /dev/null takes the trace too: the shim then keeps none (P11SPY_OUTPUT=/dev/null). */
static int p11_is_dev_null(const struct stat *st)
{
    return S_ISCHR(st->st_mode) && st->st_rdev == makedev(1, 3);
}

/* Why an existing file opened as the trace must not be appended to (NULL: it may): only a
 * regular file of ours with no other name, empty or already a p11spy trace, or /dev/null. */
static const char *p11_existing_refusal(int fd, const struct stat *st)
{
    if (p11_is_dev_null(st)) return NULL;
    if (!S_ISREG(st->st_mode)) return "is not a regular file";
    if (st->st_uid != geteuid()) return "belongs to another user";
    if (st->st_nlink != 1) return "has other names (hard links)";
    char magic[4];
    if (st->st_size > 0 && (pread(fd, magic, 4, 0) != 4 || memcmp(magic, "P11R", 4) != 0))
        return "exists and is not a p11spy trace";
    return NULL;
}

static void p11_announce_all(void)
{
    for (int i = 0; i < g_nmods; i++) p11_announce_module(&g_mods[i]);
    if (__atomic_load_n(&g_shim_announced, __ATOMIC_ACQUIRE)) p11_announce_module(&g_shim_mod);
}

/* Opens the trace g_cfg.output: a new file (mode 0600, never through a link), or an existing
 * p11spy trace of ours to append to (its mode tightened to 0600). Non-blocking while opening,
 * so that a FIFO planted at the name cannot hang the client. 2: created, 1: appending. */
static int p11_open_path(void)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", g_cfg.output);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *(slash == dir ? slash + 1 : slash) = 0;
        if (g_cfg.output_is_default && mkdir(dir, 0700) != 0 && errno != EEXIST) {
            p11_complain("cannot create %s: %s (set P11SPY_OUTPUT)", dir, strerror(errno));
            return 0;
        }
    } else {
        snprintf(dir, sizeof dir, ".");
    }
    if (!p11_dir_ok(dir, g_cfg.output_is_default)) return 0;
    const int flags = O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
    int fd = open(g_cfg.output, flags | O_CREAT | O_EXCL, 0600);
    int created = fd >= 0;
    if (fd < 0 && errno == EEXIST) fd = open(g_cfg.output, flags);
    if (fd < 0) {
        p11_complain("cannot open trace file %s: %s (set P11SPY_OUTPUT)", g_cfg.output,
                     strerror(errno));
        return 0;
    }
    struct stat st;
    const char *why = fstat(fd, &st) != 0 ? "cannot be examined"
                      : created ? NULL : p11_existing_refusal(fd, &st);
    if (why) {
        close(fd);
        p11_complain("trace file %s %s (set P11SPY_OUTPUT)", g_cfg.output, why);
        return 0;
    }
    if (S_ISREG(st.st_mode) && (st.st_mode & 077)) fchmod(fd, 0600);
    g_fd_dev = st.st_dev;
    g_fd_ino = st.st_ino;
    p11_mark_fd(fd); /* blocking from now on: a regular file never waits long */
    /* Keep the descriptor clear of 0-2 so a client that closes stdio cannot catch our writes. */
    if (fd <= 2) {
        int hi = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        close(fd);
        if (hi < 0) return 0;
        fd = hi;
    }
    __atomic_store_n(&g_fd, fd, __ATOMIC_RELEASE);
    return created ? 2 : 1;
}

/* Opens the trace named by P11SPY_OUTPUT's pattern. */
static int p11_open_output(void)
{
    if (!p11_expand(g_cfg.output_pattern, g_cfg.output, sizeof g_cfg.output)) {
        p11_complain("trace file name too long: %s (set P11SPY_OUTPUT)%s",
                     g_cfg.output_pattern, NULL);
        return 0;
    }
    return p11_open_path() != 0;
}

static void p11_atfork_child(void)
{
    pid_t parent = g_pid;
    g_pid = getpid();
    t_tls.tid = 0;
    if (g_fd < 0) return;
    if (strstr(g_cfg.output_pattern, "%p")) {
        int old = g_fd;
        int old_ours = p11_fd_is_ours(old);
        g_fd = -1;
        if (p11_open_output()) {
            if (old_ours) close(old);
        } else if (old_ours) {
            g_fd = old;
        }
    }
    p11_write_header(parent);
    p11_announce_all();
}

/* Settings shared by the shim and the preloaded spy. In a setuid/setgid program (AT_SECURE)
 * the environment belongs to the caller, not to the program's owner: nothing in it is read
 * (secure_getenv), and the shim traces nothing there (see p11_load_config). */
static int p11_load_options(void)
{
    g_secure = getauxval(AT_SECURE) != 0;
    if (g_secure) return 0;
    const char *out = p11_env2("P11SPY_OUTPUT", "PKCS11SPY_OUTPUT");
    g_cfg.output_is_default = out == NULL;
    snprintf(g_cfg.output_pattern, sizeof g_cfg.output_pattern, "%s",
             out ? out : P11SPY_DEFAULT_OUTPUT);
    const char *sec = secure_getenv("P11SPY_LOG_SECRETS");
    g_cfg.secrets = sec && strcmp(sec, "1") == 0;
    g_cfg.max_buffer = 65536;
    const char *mb = secure_getenv("P11SPY_MAX_BUFFER");
    if (mb && *mb) {
        char *end;
        unsigned long long v = strtoull(mb, &end, 10);
        /* at most 16 MiB: a record holds a few buffers, and readers take a record over
         * 64 MiB for damage (facts/LOGFORMAT.md) */
        if (*end == 0) g_cfg.max_buffer = (size_t)(v < (16ULL << 20) ? v : (16ULL << 20));
        else p11_complain("P11SPY_MAX_BUFFER=%s is not a byte count; using 65536%s", mb, NULL);
    }
    return 1;
}

/* The module named by `module = /absolute/path` in P11SPY_SECURE_CONF, which must be a
 * regular file of root's that no one else may write: the only setting a setuid/setgid
 * program takes, and only to pass calls through untraced. */
static int p11_secure_config(void)
{
    int fd = open(P11SPY_SECURE_CONF, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    struct stat st;
    char text[PATH_MAX + 64];
    ssize_t k = -1;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == 0 &&
        !(st.st_mode & (S_IWGRP | S_IWOTH)))
        k = read(fd, text, sizeof text - 1);
    if (fd >= 0) close(fd);
    if (k >= 0) {
        text[k] = 0;
        for (char *save = NULL, *ln = strtok_r(text, "\n", &save); ln;
             ln = strtok_r(NULL, "\n", &save)) {
            char path[PATH_MAX];
            if (sscanf(ln, " module = %4095s", path) == 1 && path[0] == '/') {
                snprintf(g_cfg.module, sizeof g_cfg.module, "%s", path);
                g_passthrough = 1;
                return 1;
            }
        }
    }
    p11_complain("setuid/setgid program: the environment configures nothing here; name the "
                 "real module in " P11SPY_SECURE_CONF " (root's, \"module = /path/to/module.so\")"
                 " to pass calls through untraced%s%s", NULL, NULL);
    return 0;
}

static int p11_load_config(void)
{
    if (g_secure) return p11_secure_config();
    const char *module = p11_env2("P11SPY_MODULE", "PKCS11SPY");
    if (!module) {
        p11_complain("no real PKCS#11 module named: set P11SPY_MODULE to its path "
                     "(e.g. /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so)%s%s", NULL, NULL);
        return 0;
    }
    snprintf(g_cfg.module, sizeof g_cfg.module, "%s", module);
    return p11_load_options();
}

/* Loads the real module the way dlopen finds it (a path, or a bare file name searched like
 * any library), refusing a p11spy shim: one naming itself as its module would recurse. */
static int p11_load_module(void)
{
    const char *var = g_secure ? P11SPY_SECURE_CONF : "P11SPY_MODULE";
    int flags = RTLD_NOW | RTLD_LOCAL;
    const char *deep = secure_getenv("P11SPY_DEEPBIND");
    if (deep && strcmp(deep, "1") == 0) flags |= RTLD_DEEPBIND;
    struct p11_module *m = &g_mods[0];
    m->handle = dlopen(g_cfg.module, flags);
    if (!m->handle) {
        const char *e = dlerror();
        p11_complain("cannot load real module: %s (check %s)", e ? e : "?", var);
        return 0;
    }
    if (dlsym(m->handle, "p11spy_shim_version")) {
        p11_complain("%s is a p11spy shim, not the real module (check %s)", g_cfg.module, var);
        dlclose(m->handle);
        m->handle = NULL;
        return 0;
    }
    m->get_function_list = (CK_RV(*)(void *))dlsym(m->handle, "C_GetFunctionList");
    m->get_interface_list =
        (CK_RV(*)(CK_INTERFACE *, CK_ULONG *))dlsym(m->handle, "C_GetInterfaceList");
    m->get_interface = (CK_RV(*)(CK_UTF8CHAR *, CK_VERSION *, CK_INTERFACE **, CK_FLAGS))dlsym(
        m->handle, "C_GetInterface");
    struct link_map *lm = NULL;
    const char *loaded = dlinfo(m->handle, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name[0]
                         ? lm->l_name : g_cfg.module;
    snprintf(m->path, sizeof m->path, "%s", loaded);
    g_entry[0].mod = m;
    g_nmods = 1;
    if (!m->get_function_list && !m->get_interface) {
        p11_complain("%s is not a PKCS#11 module: it exports neither C_GetFunctionList nor "
                     "C_GetInterface (check %s)", g_cfg.module, var);
        return 0;
    }
    return 1;
}

#if !P11SPY_PRELOAD && !P11SPY_REPLAY
/* Found by p11_load_module in a module that is one of our shims. */
P11_EXPORT const char p11spy_shim_version[] = P11SPY_VERSION;

static void p11_init(void)
{
    g_pid = getpid();
    g_secure = getauxval(AT_SECURE) != 0;
    if (!p11_load_config() || !p11_load_module()) return;
    if (g_passthrough) {
        g_ready = 1;
        return;
    }
    if (!p11_open_output()) return;
    pthread_atfork(NULL, NULL, p11_atfork_child);
    p11_write_header(0);
    p11_announce_module(&g_mods[0]);
    g_ready = 1;
}

/* Unloaded by the client's dlclose (or at exit): the trace descriptor goes with us, and so
 * does the real module once the client finalized it (no call can be running in it then). */
__attribute__((destructor)) static void p11_unload(void)
{
    int fd = __atomic_exchange_n(&g_fd, -1, __ATOMIC_ACQ_REL);
    if (fd >= 0 && p11_fd_is_ours(fd)) {
        uint64_t lost = __atomic_exchange_n(&g_dropped, 0, __ATOMIC_ACQ_REL);
        if (lost) {
            unsigned char rec[P11_RECORD_SIZE + P11_FIELD_SIZE + 8];
            p11_dropped_record(rec, lost);
            p11_write_fd(fd, rec, sizeof rec);
        }
        close(fd);
    }
    struct p11_module *m = &g_mods[0];
    if (m->handle && !g_passthrough && !__atomic_load_n(&m->live, __ATOMIC_ACQUIRE)) {
        dlclose(m->handle);
        m->handle = NULL;
    }
}
#else
static void p11_init(void);
#endif

static int p11_ready(void)
{
    pthread_once(&g_once, p11_init);
    return g_ready;
}

/* Writes the module's CK_INFO once C_Initialize succeeded, so the trace names the module. */
static void p11_fill_info(struct p11_rec *r, const void *info)
{
    p11_field(r, 0, PH_OUT, K_STRUCT, 0, info, sizeof(CK_INFO));
}

static void p11_module_info(struct p11_ctx *c)
{
    __atomic_store_n(&c->mod->live, 1, __ATOMIC_RELEASE);
    CK_RV (*get_info)(CK_INFO *) = (CK_RV(*)(CK_INFO *))c->real[P11_FN_C_GetInfo];
    if (!get_info) return;
    CK_INFO info;
    if (get_info(&info) != CKR_OK_) return;
    p11_write_meta_record(REC_MODULE_INFO, (unsigned)c->mod->index, P11_FN_C_GetInfo,
                          p11_fill_info, &info);
}

/* ------------------------------------------------------------------------------------------ */
/* Function lists and interfaces                                                               */

static void p11_fill_ctx(int i, void *real_list, CK_VERSION version, int nslots);  /* generated */

/* How many slots a "PKCS 11" function list of this version has; 0 for versions we do not know
 * (those are handed through unwrapped rather than guessed at). */
static int p11_slots_for(CK_VERSION v)
{
    if (v.major == 2) return P11_N_2_40;
    if (v.major == 3 && v.minor <= 1) return P11_N_3_0;
    if (v.major == 3 && v.minor == 2) return P11_N_3_2;
    return 0;
}

/* The wrapped list mirroring real_list (made on first sight), or NULL if none can be made. */
static void *p11_wrap_list(struct p11_module *m, void *real_list, int nslots)
{
    if (!real_list || nslots <= 0 || g_passthrough) return NULL;
    void *out = NULL;
    pthread_mutex_lock(&g_ctx_lock);
    for (int i = 0; i < P11_MAX_CTX; i++) {
        if (g_ctx[i].used && g_ctx[i].real_list == real_list) {
            out = &g_ctx[i].ours;
            break;
        }
        if (!g_ctx[i].used) {
            CK_VERSION v;
            memcpy(&v, real_list, sizeof v);
            p11_fill_ctx(i, real_list, v, nslots);
            g_ctx[i].mod = m;
            g_ctx[i].used = 1;
            out = &g_ctx[i].ours;
            break;
        }
    }
    pthread_mutex_unlock(&g_ctx_lock);
    return out;
}

static int p11_is_pkcs11_iface(const CK_INTERFACE *ifc)
{
    return ifc && ifc->pInterfaceName && ifc->pFunctionList &&
           strcmp((const char *)ifc->pInterfaceName, "PKCS 11") == 0;
}

/* The list C_GetFunctionList hands out: only the 2.x slots are read from it, unless the same
 * list is also the module's 3.x interface (SoftHSM reports 3.0 here). */
static void *p11_wrap_function_list(struct p11_module *m, void *real_list)
{
    CK_VERSION v;
    memcpy(&v, real_list, sizeof v);
    int n = P11_N_2_40;
    if (v.major >= 3 && m->get_interface) {
        CK_INTERFACE *ifc = NULL;
        if (m->get_interface((CK_UTF8CHAR *)"PKCS 11", &v, &ifc, 0) == CKR_OK_ &&
            p11_is_pkcs11_iface(ifc) && ifc->pFunctionList == real_list)
            n = p11_slots_for(v) ? p11_slots_for(v) : P11_N_2_40;
    }
    return p11_wrap_list(m, real_list, n);
}

/* Our copy of an interface: the module's may be read-only, and must stay untouched. */
static CK_INTERFACE *p11_wrap_interface(struct p11_module *m, CK_INTERFACE *real)
{
    if (!p11_is_pkcs11_iface(real) || g_passthrough) return real; /* vendor ones: untraced */
    CK_VERSION v;
    memcpy(&v, real->pFunctionList, sizeof v);
    void *ours = p11_wrap_list(m, real->pFunctionList, p11_slots_for(v));
    if (!ours) return real;
    CK_INTERFACE *out = real;
    pthread_mutex_lock(&g_ctx_lock);
    for (int i = 0; i < g_nifaces; i++)
        if (g_ifaces[i].pFunctionList == ours && g_ifaces[i].flags == real->flags) {
            out = &g_ifaces[i];
            goto done;
        }
    if (g_nifaces < P11_MAX_CTX) {
        g_ifaces[g_nifaces] = *real;
        g_ifaces[g_nifaces].pFunctionList = ours;
        out = &g_ifaces[g_nifaces++];
    }
done:
    pthread_mutex_unlock(&g_ctx_lock);
    return out;
}

/* The three entry points, shared by the exported symbols and the list slots. */
static CK_RV p11_do_get_function_list(struct p11_module *m, void **pp)
{
    if (!m->get_function_list) return CKR_FUNCTION_NOT_SUPPORTED_;
    void *real = NULL;
    CK_RV rv = m->get_function_list(pp ? (void *)&real : NULL);
    if (rv == CKR_OK_ && pp) {
        void *ours = real ? p11_wrap_function_list(m, real) : NULL;
        *pp = ours ? ours : real;
    }
    return rv;
}

/* A module without PKCS#11 3.0 interfaces, behind the 3.x shim: the shim offers the module's
 * function list as the "PKCS 11" interface, with the list's version, as p11-kit and
 * pkcs11-spy do, so that a client asking for interfaces (NSS) works as with the 2.x module
 * itself. The calls it answers so are recorded under a module of their own, the shim. */
static CK_INTERFACE g_emulated;

static CK_RV p11_emulated_interface(struct p11_module *m, struct p11_rec *r, CK_INTERFACE *out)
{
    if (r) {
        r->mod = P11_SHIM_MODULE;
        if (!__atomic_exchange_n(&g_shim_announced, 1, __ATOMIC_ACQ_REL))
            p11_announce_module(&g_shim_mod);
    }
    void *list = NULL;
    CK_RV rv = p11_do_get_function_list(m, &list);
    if (rv != CKR_OK_) return rv;
    if (!list) return CKR_GENERAL_ERROR_;
    out->pInterfaceName = (CK_UTF8CHAR *)"PKCS 11";
    out->pFunctionList = list;
    out->flags = 0;
    return CKR_OK_;
}

static CK_RV p11_do_get_interface_list(struct p11_module *m, struct p11_rec *r,
                                       CK_INTERFACE *list, CK_ULONG *count)
{
    if (!m->get_interface_list) {
        if (!m->get_function_list) return CKR_FUNCTION_NOT_SUPPORTED_;
        if (!count) return CKR_ARGUMENTS_BAD_;
        CK_INTERFACE one;
        CK_RV rv = p11_emulated_interface(m, r, &one);
        if (rv != CKR_OK_ || !list) {
            if (rv == CKR_OK_) *count = 1;
            return rv;
        }
        CK_ULONG room = *count;
        *count = 1;
        if (room < 1) return CKR_BUFFER_TOO_SMALL_;
        list[0] = one;
        return CKR_OK_;
    }
    CK_RV rv = m->get_interface_list(list, count);
    if (rv == CKR_OK_ && list && count) {
        for (CK_ULONG i = 0; i < *count; i++) {
            if (!p11_is_pkcs11_iface(&list[i])) continue;
            CK_VERSION v;
            memcpy(&v, list[i].pFunctionList, sizeof v);
            void *ours = p11_wrap_list(m, list[i].pFunctionList, p11_slots_for(v));
            if (ours) list[i].pFunctionList = ours; /* the caller's array: ours to fill */
        }
    }
    return rv;
}

static CK_RV p11_do_get_interface(struct p11_module *m, struct p11_rec *r, CK_UTF8CHAR *name,
                                  CK_VERSION *version, CK_INTERFACE **pp, CK_FLAGS flags)
{
    if (!m->get_interface) {
        if (!m->get_function_list) return CKR_FUNCTION_NOT_SUPPORTED_;
        if (!pp) return CKR_ARGUMENTS_BAD_;
        CK_INTERFACE one;
        CK_RV rv = p11_emulated_interface(m, r, &one);
        if (rv != CKR_OK_) return rv;
        CK_VERSION v;
        memcpy(&v, one.pFunctionList, sizeof v);
        if ((name && strcmp((const char *)name, "PKCS 11") != 0) ||
            (version && (version->major != v.major || version->minor != v.minor)) ||
            (flags & ~one.flags))
            return CKR_ARGUMENTS_BAD_;
        pthread_mutex_lock(&g_ctx_lock);
        g_emulated = one;
        pthread_mutex_unlock(&g_ctx_lock);
        *pp = &g_emulated;
        return CKR_OK_;
    }
    CK_INTERFACE *real = NULL;
    CK_RV rv = m->get_interface(name, version, pp ? &real : NULL, flags);
    if (rv == CKR_OK_ && pp) *pp = real ? p11_wrap_interface(m, real) : NULL;
    return rv;
}
