/*
 * p11spy replay module runtime: plays a token's side of a recorded trace back to a client.
 *
 * The generated part (shim_build/replay_codegen.py) puts before this file the PKCS#11 types,
 * the format #defines, the shim's runtime (spy/shim_runtime.c: the trace writer and the record
 * encoders, used here unchanged) and the tables of each function's parameters; after it, one
 * function per PKCS#11 function, which encodes the incoming call exactly as the shim would
 * (so the replay's own trace reads like a recorded one), matches it against the script, and
 * writes the recorded outputs into the client's buffers.
 *
 * The script (compiled from a trace by `p11spy replay`, decoder/replay/script.py) is found in
 * P11SPY_REPLAY, else as replay.p11r beside this module. It is read whole at load time and
 * checked: a damaged script makes every call fail with CKR_GENERAL_ERROR and one line on
 * stderr, never a crash.
 */

#include <dlfcn.h>

#define RP_MAGIC "P11RPLY1"
#define RP_HEAD 20           /* magic, u32 calls, u8 major, u8 minor, u8 flags, u8 0, u32 name */
#define RP_CALL_HEAD 32      /* u32 fn, u32 in length, u32 out length, u32 0, u64 rv, u64 seq */
#define RP_WINDOW 64         /* how far ahead of the last answered call a call may be found */
#define RP_SECRETS_MASKED 1  /* script flag: the recording masked secrets */

/* How an incoming parameter is compared with the recording: RP_STRICT, RP_DATA, ... (the
 * enum and the per-function table rp_match_class come with replay_codegen.py's MATCH). */

/* What a match tolerated, per call (the .match file spells them out). */
#define RPN_DATA 1       /* input data differs (a time, random input) */
#define RPN_PARAM 2      /* the mechanism's parameter differs (an IV) */
#define RPN_ORDER 4      /* found ahead of the next recorded call */
#define RPN_PIN 8        /* a PIN matched by length and character class only */
#define RPN_SECRETS 16   /* an output was masked in the recording: given back as zeros */
#define RPN_REPEAT 64    /* a query answered again as it was answered before (a poll) */
#define RPN_BIG 32       /* an output not wholly recorded (too large, a nested template):
                          * given back as what was recorded of it, zeros for the rest */

struct rp_call {
    unsigned fn;
    CK_RV rv;
    uint64_t seq;
    const unsigned char *in, *out;
    uint32_t in_len, out_len;
    int used;
};

struct rp_field {
    int present, kind;
    const unsigned char *p;
    uint32_t n;
};

static struct rp_call *g_rp_calls;
static uint32_t g_rp_n;
static uint32_t g_rp_first;          /* first call not yet answered */
static uint32_t g_rp_last;           /* the last call answered, for the window */
static CK_VERSION g_rp_version;
static unsigned g_rp_flags;
static char g_rp_name[PATH_MAX];
static pthread_mutex_t g_rp_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_rp_match_fd = -1;
static int g_rp_told;                /* the first divergence was said on stderr */
static __thread unsigned t_rp_notes; /* notes of the call running on this thread */

static uint32_t rp_u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rp_u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* The script's path: P11SPY_REPLAY, else replay.p11r in this module's folder. */
static int rp_script_path(char *out, size_t n)
{
    const char *env = secure_getenv("P11SPY_REPLAY");
    if (env && *env) return snprintf(out, n, "%s", env) < (int)n;
    Dl_info info;
    if (!dladdr((void *)rp_script_path, &info) || !info.dli_fname) return 0;
    const char *slash = strrchr(info.dli_fname, '/');
    if (!slash) return snprintf(out, n, "replay.p11r") < (int)n;
    return snprintf(out, n, "%.*s/replay.p11r", (int)(slash - info.dli_fname),
                    info.dli_fname) < (int)n;
}

static const char *rp_parse(unsigned char *b, size_t len)
{
    if (len < RP_HEAD || memcmp(b, RP_MAGIC, 8) != 0) return "is not a p11spy replay script";
    uint32_t n = rp_u32(b + 8), nl = rp_u32(b + 16);
    g_rp_version.major = b[12];
    g_rp_version.minor = b[13];
    g_rp_flags = b[14];
    if (nl > len - RP_HEAD || n > len / RP_CALL_HEAD) return "is damaged (its header)";
    snprintf(g_rp_name, sizeof g_rp_name, "%.*s", (int)nl, (const char *)b + RP_HEAD);
    g_rp_calls = calloc(n ? n : 1, sizeof *g_rp_calls);
    if (!g_rp_calls) return "cannot be held in memory";
    size_t off = RP_HEAD + nl;
    for (uint32_t i = 0; i < n; i++) {
        if (len - off < RP_CALL_HEAD) return "is damaged (cut short)";
        struct rp_call *c = &g_rp_calls[i];
        c->fn = rp_u32(b + off);
        c->in_len = rp_u32(b + off + 4);
        c->out_len = rp_u32(b + off + 8);
        c->rv = rp_u64(b + off + 16);
        c->seq = rp_u64(b + off + 24);
        off += RP_CALL_HEAD;
        if (c->fn >= P11_NFUNCS || c->in_len > len - off || c->out_len > len - off - c->in_len)
            return "is damaged (a call)";
        c->in = b + off;
        c->out = b + off + c->in_len;
        off += c->in_len + c->out_len;
    }
    g_rp_n = n;
    return NULL;
}

static int rp_load_script(void)
{
    char path[PATH_MAX];
    if (!rp_script_path(path, sizeof path)) {
        p11_complain("replay: cannot tell where the replay script is (set P11SPY_REPLAY)%s%s",
                     NULL, NULL);
        return 0;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0) close(fd);
        p11_complain("replay: cannot read the replay script %s (set P11SPY_REPLAY)%s", path,
                     NULL);
        return 0;
    }
    unsigned char *b = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (b && got < (size_t)st.st_size) {
        ssize_t k = read(fd, b + got, (size_t)st.st_size - got);
        if (k <= 0) break;
        got += (size_t)k;
    }
    close(fd);
    const char *why = !b ? "cannot be held in memory"
                      : got != (size_t)st.st_size ? "cannot be read" : rp_parse(b, got);
    if (why) {
        p11_complain("replay: the replay script %s %s", path, why);
        return 0;
    }
    return 1; /* b stays: the calls point into it */
}

/* ---- the .match file: how closely each call matched -------------------------------------- */

static void rp_open_match(void)
{
    char path[PATH_MAX];
    if (!g_cfg.output[0] || strcmp(g_cfg.output, "/dev/null") == 0) return;
    if (snprintf(path, sizeof path, "%s.match", g_cfg.output) >= (int)sizeof path) return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        p11_complain("replay: cannot create %s: %s", path, strerror(errno));
        return;
    }
    if (fd <= 2) {
        int hi = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        close(fd);
        fd = hi;
    }
    g_rp_match_fd = fd;
}

static const char *const rp_note_words[] = {"data differs", "mechanism parameter differs",
                                            "out of order", "PIN matched by length (and class)",
                                            "secrets unavailable",
                                            "output not wholly recorded",
                                            "repeats an earlier answer"};

static void rp_note_line(uint64_t seq, unsigned fn, const char *match, const struct rp_call *c,
                         unsigned notes, const char *why)
{
    if (g_rp_match_fd < 0) return;
    char line[1024];
    size_t o = 0;
    o += (size_t)snprintf(line, sizeof line, "{\"call\": %llu, \"function\": \"%s\", "
                          "\"match\": \"%s\", \"recorded\": ", (unsigned long long)seq,
                          rp_fn_names[fn], match);
    /* call: the replay process's call number (its trace's records carry it); recorded: the
     * recorded call's number as `p11spy decode` shows it; at: its place in the recording */
    if (c)
        o += (size_t)snprintf(line + o, sizeof line - o, "%llu, \"at\": %llu",
                              (unsigned long long)c->seq,
                              (unsigned long long)(c - g_rp_calls) + 1);
    else o += (size_t)snprintf(line + o, sizeof line - o, "null, \"at\": null");
    o += (size_t)snprintf(line + o, sizeof line - o, ", \"notes\": [");
    int first = 1;
    for (unsigned i = 0; i < sizeof rp_note_words / sizeof *rp_note_words; i++) {
        if (!(notes & (1u << i))) continue;
        o += (size_t)snprintf(line + o, sizeof line - o, "%s\"%s\"", first ? "" : ", ",
                              rp_note_words[i]);
        first = 0;
    }
    o += (size_t)snprintf(line + o, sizeof line - o, "]");
    if (why) {
        o += (size_t)snprintf(line + o, sizeof line - o, ", \"why\": ");
        p11_json_str(line, sizeof line - 4, &o, why);
    }
    if (o > sizeof line - 3) o = sizeof line - 3;
    line[o++] = '}';
    line[o++] = '\n';
    pthread_mutex_lock(&g_out_lock);
    p11_write_fd(g_rp_match_fd, line, o);
    pthread_mutex_unlock(&g_out_lock);
}

/* ---- comparing an incoming call with a recorded one ------------------------------------- */

static void rp_fields(const unsigned char *b, size_t len, int phase, struct rp_field *f, int n)
{
    memset(f, 0, sizeof *f * (size_t)n);
    size_t off = 0;
    while (off + P11_FIELD_SIZE <= len) {
        int param = b[off], ph = b[off + 1], kind = b[off + 2];
        uint32_t dn = rp_u32(b + off + 4);
        off += P11_FIELD_SIZE;
        if (dn > len - off) break;
        if (ph == phase && param < n) {
            f[param].present = 1;
            f[param].kind = kind;
            f[param].p = b + off;
            f[param].n = dn;
        }
        off += dn;
    }
}

static int rp_same(const struct rp_field *a, const struct rp_field *b)
{
    return a->present == b->present && a->kind == b->kind && a->n == b->n &&
           (a->n == 0 || memcmp(a->p, b->p, a->n) == 0);
}

static int rp_is_null(const struct rp_field *f) { return f->present && f->kind == K_NULL; }

/* Template of C_GetAttributeValue as offered: the same types, each asked with or without room;
 * the room itself may differ. */
static int rp_same_types(const struct rp_field *a, const struct rp_field *b)
{
    if (a->kind != K_TEMPLATE || b->kind != K_TEMPLATE) return rp_same(a, b);
    if (a->n != b->n || a->n < 8 || rp_u64(a->p) != rp_u64(b->p)) return 0;
    for (uint32_t off = 8; off + 24 <= a->n; off += 24)
        if (memcmp(a->p + off, b->p + off, 8) != 0 || a->p[off + 16] != b->p[off + 16]) return 0;
    return 1;
}

/* A template the call reads: the same attributes with the same values, but that a date
 * (CKA_START_DATE, CKA_END_DATE: today's, in a client that sets them) may differ. */
static int rp_template_dated(const struct rp_field *a, const struct rp_field *b)
{
    if (a->kind != K_TEMPLATE || b->kind != K_TEMPLATE || a->n != b->n || a->n < 8 ||
        rp_u64(a->p) != rp_u64(b->p))
        return -1;
    int notes = 0;
    for (uint32_t off = 8; off + 24 <= a->n;) {
        const unsigned char *x = a->p + off, *y = b->p + off;
        uint32_t n = rp_u32(x + 20);
        if (memcmp(x, y, 24) != 0 || n > a->n - off - 24) return -1;
        if (memcmp(x + 24, y + 24, n) != 0) {
            if (!rp_attr_dated(rp_u64(x)) || x[16] != K_BYTES) return -1;
            notes |= RPN_DATA;
        }
        off += 24 + n;
    }
    return notes;
}

/* -1: the parameter departs from the recording; else the notes it adds. */
static int rp_compare(int cls, const struct rp_field *a, const struct rp_field *b)
{
    switch (cls) {
    case RP_DATA:
        if (!a->present && b->present && (b->kind == K_DIGEST || b->kind == K_UNREAD))
            return RPN_DATA; /* too large to compare: only its presence is known */
        if (a->present != b->present || rp_is_null(a) != rp_is_null(b)) return -1;
        return rp_same(a, b) ? 0 : RPN_DATA;
    case RP_ROOM:
        return a->present == b->present && rp_is_null(a) == rp_is_null(b) ? 0 : -1;
    case RP_PTR:
        if (a->present != b->present) return -1;
        if (!a->present || a->kind != K_ULONG || b->kind != K_ULONG) return rp_same(a, b) ? 0 : -1;
        return (rp_u64(a->p) == 0) == (rp_u64(b->p) == 0) ? 0 : -1;
    case RP_MECH:
        if (a->kind != K_MECHANISM || b->kind != K_MECHANISM) return rp_same(a, b) ? 0 : -1;
        if (a->n < 8 || b->n < 8 || memcmp(a->p, b->p, 8) != 0) return -1;
        return rp_same(a, b) ? 0 : RPN_PARAM;
    case RP_TEMPLATE:
        if (rp_same(a, b)) return 0;
        return rp_template_dated(a, b);
    case RP_TYPES:
        return rp_same_types(a, b) ? 0 : -1;
    case RP_PIN:
        /* the incoming PIN is masked by the shim's encoder; a recorded one masked alike is
         * compared by length and class, one recorded in clear (P11SPY_LOG_SECRETS) or redacted
         * (its bytes turned to '*') by length */
        if (a->present && a->kind == K_MASKED && b->present && b->kind == K_BYTES)
            return a->n >= 8 && rp_u64(a->p) == b->n ? RPN_PIN : -1;
        if (!rp_same(a, b)) return -1;
        return a->present && a->kind == K_MASKED ? RPN_PIN : 0;
    case RP_INITARGS: {
        size_t at = offsetof(CK_C_INITIALIZE_ARGS, flags);
        if (a->present != b->present || a->kind != b->kind) return -1;
        if (a->kind != K_STRUCT) return rp_same(a, b) ? 0 : -1;
        if (a->n < at + 8 || b->n < at + 8) return -1;
        return memcmp(a->p + at, b->p + at, 8) == 0 ? 0 : -1;
    }
    default:
        return rp_same(a, b) ? 0 : -1;
    }
}

/* Notes of a match of the incoming record's in-fields with call c, or -1; *why names the first
 * parameter that departs. */
static int rp_match_one(unsigned fn, const struct rp_field *in, const struct rp_call *c,
                        const char **why)
{
    struct rp_field rec[RP_MAXPARAMS];
    rp_fields(c->in, c->in_len, PH_IN, rec, RP_MAXPARAMS);
    int notes = 0;
    for (int i = 0; i < rp_nparams[fn]; i++) {
        int k = rp_compare(rp_match_class[fn][i], &in[i], &rec[i]);
        if (k < 0) {
            *why = rp_param_names[fn][i];
            return -1;
        }
        notes |= k;
    }
    return notes;
}

static void rp_tell(const char *fmt, const char *a, const char *b)
{
    if (__atomic_exchange_n(&g_rp_told, 1, __ATOMIC_ACQ_REL)) return;
    p11_complain(fmt, a, b);
}

/* The recorded call that answers the incoming one (r: its record, in-fields encoded), or NULL
 * when the client departs from the recording. Taken calls are not taken again. */
static struct rp_call *rp_match(struct p11_rec *r, unsigned fn)
{
    struct rp_field in[RP_MAXPARAMS];
    rp_fields(r->buf + P11_RECORD_SIZE, r->len - P11_RECORD_SIZE, PH_IN, in, RP_MAXPARAMS);
    struct rp_call *found = NULL;
    const char *why = NULL;
    struct rp_call *first_same = NULL;
    int notes = 0;
    pthread_mutex_lock(&g_rp_lock);
    uint32_t end = g_rp_last + RP_WINDOW < g_rp_n ? g_rp_last + RP_WINDOW : g_rp_n;
    int passed_only_queries = 1; /* the calls passed over are polls the client skipped */
    for (uint32_t k = g_rp_first; k < end; k++) {
        struct rp_call *c = &g_rp_calls[k];
        if (c->used) continue;
        const char *w = NULL;
        int m = c->fn == fn ? rp_match_one(fn, in, c, &w) : -1;
        if (m < 0) {
            if (c->fn == fn && !first_same) {
                first_same = c;
                why = w;
            }
            passed_only_queries &= rp_repeatable[c->fn];
            continue;
        }
        found = c;
        notes = m | (passed_only_queries ? 0 : RPN_ORDER);
        c->used = 1;
        g_rp_last = k;
        while (g_rp_first < g_rp_n && g_rp_calls[g_rp_first].used) g_rp_first++;
        break;
    }
    /* A query the client makes more often than recorded (a poll on a timer, as SunPKCS11 asks
     * whether the token is still present): the latest recorded answer to the same question. */
    for (uint32_t k = end; !found && rp_repeatable[fn] && k-- > 0;) {
        struct rp_call *c = &g_rp_calls[k];
        const char *w = NULL;
        int m = c->used && c->fn == fn ? rp_match_one(fn, in, c, &w) : -1;
        if (m >= 0) {
            found = c;
            notes = m | RPN_REPEAT;
        }
    }
    struct rp_call *expected = g_rp_first < g_rp_n ? &g_rp_calls[g_rp_first] : NULL;
    pthread_mutex_unlock(&g_rp_lock);
    if (found) {
        t_rp_notes = (unsigned)notes;
        return found;
    }
    char text[256];
    if (first_same)
        snprintf(text, sizeof text, "%s differs from recorded call #%llu", why,
                 (unsigned long long)first_same->seq);
    else if (expected)
        snprintf(text, sizeof text, "the recording has %s (#%llu) next, no %s near it",
                 rp_fn_names[expected->fn], (unsigned long long)expected->seq, rp_fn_names[fn]);
    else
        snprintf(text, sizeof text, "the recording has ended");
    rp_note_line(r->seq, fn, "diverged", first_same ? first_same : expected, 0, text);
    rp_tell("replay: the client departs from the recording at %s: %s (answered "
            "CKR_FUNCTION_FAILED; see the .match file beside the replay's trace)",
            rp_fn_names[fn], text);
    return NULL;
}

/* A call answered: its line in the .match file. */
/* A call answered: "tolerated" when its inputs differ from the recorded ones where they may
 * (data, a mechanism's parameter), else "exact"; the other notes say more (the order, the PIN,
 * what of the outputs the recording lacked). */
static void rp_answered(struct p11_rec *r, const struct rp_call *c)
{
    unsigned notes = t_rp_notes;
    rp_note_line(r->seq, r->fn, notes & (RPN_DATA | RPN_PARAM) ? "tolerated" : "exact", c,
                 notes, NULL);
}

/* A call that is not recorded but needs no recording (the entry points), or a room too small
 * for the recorded output (the client asks again with more). */
static void rp_unrecorded(struct p11_rec *r, const char *why)
{
    rp_note_line(r->seq, r->fn, "answered", NULL, 0, why);
}

/* The client offered less room than the recorded output needs: the call is answered with
 * CKR_BUFFER_TOO_SMALL and stays in the recording for the client's next try. */
static void rp_release(struct rp_call *c)
{
    if (t_rp_notes & RPN_REPEAT) return; /* it was not taken */
    pthread_mutex_lock(&g_rp_lock);
    c->used = 0;
    uint32_t k = (uint32_t)(c - g_rp_calls);
    if (k < g_rp_first) g_rp_first = k;
    pthread_mutex_unlock(&g_rp_lock);
}

/* ---- writing the recorded outputs ------------------------------------------------------- */

static struct rp_field rp_out_field(const struct rp_call *c, int param)
{
    struct rp_field f[RP_MAXPARAMS];
    rp_fields(c->out, c->out_len, PH_OUT, f, RP_MAXPARAMS);
    return f[param];
}

static void rp_ulong_out(const struct rp_call *c, int param, CK_ULONG *p)
{
    struct rp_field f = rp_out_field(c, param);
    if (p && f.present && f.kind == K_ULONG && f.n == 8) *p = rp_u64(f.p);
}

/* Copies a recorded buffer into one of room bytes; 1 when it does not fit. */
static int rp_copy(const struct rp_field *f, void *p, CK_ULONG room)
{
    if (!p || !f->present) return 0;
    if (f->kind == K_BYTES) {
        if (f->n > room) return 1;
        memcpy(p, f->p, f->n);
    } else if (f->kind == K_DIGEST && f->n >= 16) {
        CK_ULONG full = rp_u64(f->p);
        if (full > room) return 1;
        memset(p, 0, full);
        memcpy(p, f->p + 16, f->n - 16 < full ? f->n - 16 : full);
        t_rp_notes |= RPN_BIG;
    }
    return 0;
}

static int rp_buf_out(const struct rp_call *c, int param, void *p, CK_ULONG room)
{
    struct rp_field f = rp_out_field(c, param);
    return rp_copy(&f, p, room);
}

static void rp_fixed_out(const struct rp_call *c, int param, void *p, CK_ULONG n)
{
    struct rp_field f = rp_out_field(c, param);
    if (f.present && f.kind == K_BYTES && f.n <= n) memcpy(p, f.p, f.n);
    else rp_copy(&f, p, n);
}

static int rp_array_out(const struct rp_call *c, int param, CK_ULONG *arr, CK_ULONG room)
{
    struct rp_field f = rp_out_field(c, param);
    if (!arr || !f.present || f.kind != K_ULONG_ARRAY) return 0;
    if (f.n / 8 > room) return 1;
    memcpy(arr, f.p, f.n);
    return 0;
}

static void rp_struct_out(const struct rp_call *c, int param, void *p, size_t n)
{
    struct rp_field f = rp_out_field(c, param);
    if (p && f.present && f.kind == K_STRUCT && f.n == n) memcpy(p, f.p, n);
}

/* C_GetAttributeValue: each attribute's recorded length, and its value where the client gave
 * room for it. Masked values come back as zeros of their recorded length. */
static int rp_template_out(const struct rp_call *c, int param, CK_ATTRIBUTE *a, CK_ULONG n,
                           const struct p11_tmpl_saved *s)
{
    struct rp_field f = rp_out_field(c, param);
    if (!a || !f.present || f.kind != K_TEMPLATE || f.n < 8) return 0;
    CK_ULONG count = rp_u64(f.p);
    int small = 0;
    size_t off = 8;
    for (CK_ULONG i = 0; i < count && i < n && off + 24 <= f.n; i++) {
        CK_ULONG len = rp_u64(f.p + off + 8);
        int kind = f.p[off + 16];
        uint32_t pn = rp_u32(f.p + off + 20);
        const unsigned char *v = f.p + off + 24;
        off += 24;
        if (pn > f.n - off) break;
        off += pn;
        CK_ULONG room = s && s->lens && i < s->n ? s->lens[i] : 0;
        a[i].ulValueLen = len;
        if (!a[i].pValue || len == CK_UNAVAILABLE_) continue;
        if (len > room) {
            a[i].ulValueLen = CK_UNAVAILABLE_;
            small = 1;
        } else if (len == 0) {
            continue;
        } else if (kind == K_BYTES && pn == len) {
            memcpy(a[i].pValue, v, len);
        } else if (kind == K_DIGEST && pn >= 16) {
            struct rp_field d = {1, K_DIGEST, v, pn};
            rp_copy(&d, a[i].pValue, room);
        } else {
            memset(a[i].pValue, 0, len);
            t_rp_notes |= kind == K_MASKED ? RPN_SECRETS : RPN_BIG;
        }
    }
    return small;
}

/* ---- the module's entry points ---------------------------------------------------------- */

static P11_FUNCTION_LIST_3_2 g_rp_list;     /* filled by the generated rp_fill_list */
static CK_INTERFACE g_rp_iface = {(CK_UTF8CHAR *)"PKCS 11", &g_rp_list, 0};
static void rp_fill_list(P11_FUNCTION_LIST_3_2 *l);   /* generated */

static struct p11_module *const g_rp_mod = &g_mods[0];

static void p11_init(void)
{
    g_pid = getpid();
    if (!p11_load_options()) {
        p11_complain("replay: a setuid or setgid program takes no replay%s%s", NULL, NULL);
        return;
    }
    if (!rp_load_script()) return;
    if (g_cfg.output_is_default) {
        /* beside the script, where `p11spy replay --lib` made a folder of the user's own */
        char path[PATH_MAX];
        if (rp_script_path(path, sizeof path)) {
            char *slash = strrchr(path, '/');
            snprintf(g_cfg.output_pattern, sizeof g_cfg.output_pattern, "%.*s/%%n-%%p.p11",
                     slash ? (int)(slash - path) : 1, slash ? path : ".");
            g_cfg.output_is_default = 0;
        }
    }
    snprintf(g_cfg.module, sizeof g_cfg.module, "p11spy replay of %s%s", g_rp_name,
             g_rp_flags & RP_SECRETS_MASKED ? " (secrets unavailable)" : "");
    g_rp_mod->index = 0;
    snprintf(g_rp_mod->path, sizeof g_rp_mod->path, "%s", g_cfg.module);
    g_nmods = 1;
    rp_fill_list(&g_rp_list);
    g_rp_list.version = g_rp_version;
    g_ready = 1; /* answers even when no trace can be written */
    if (!p11_open_output()) return;
    pthread_atfork(NULL, NULL, p11_atfork_child);
    p11_write_header(0);
    p11_announce_module(g_rp_mod);
    rp_open_match();
}

__attribute__((destructor)) static void rp_unload(void)
{
    int fd = __atomic_exchange_n(&g_fd, -1, __ATOMIC_ACQ_REL);
    if (fd >= 0 && p11_fd_is_ours(fd)) close(fd);
    if (g_rp_match_fd >= 0) close(g_rp_match_fd);
    g_rp_match_fd = -1;
}

/* The entry points are answered, not replayed: they hand out the replay's own list. A recorded
 * entry call next in line is taken, so the rest lines up; one not recorded is no divergence
 * (a recording through `p11spy run` may have used another of the three). */
static void rp_take_entry(struct p11_rec *r)
{
    struct rp_call *c = NULL;
    pthread_mutex_lock(&g_rp_lock);
    for (uint32_t k = g_rp_first; k < g_rp_n; k++) {
        unsigned f = g_rp_calls[k].fn;
        if (g_rp_calls[k].used) continue;
        /* any of the three: each hands out the same list */
        if (f == P11_FN_C_GetFunctionList || f == P11_FN_C_GetInterfaceList ||
            f == P11_FN_C_GetInterface)
            c = &g_rp_calls[k];
        break;
    }
    if (c) {
        c->used = 1;
        while (g_rp_first < g_rp_n && g_rp_calls[g_rp_first].used) g_rp_first++;
    }
    pthread_mutex_unlock(&g_rp_lock);
    if (c) {
        t_rp_notes = 0;
        rp_answered(r, c);
    } else {
        rp_unrecorded(r, "an entry point: answered with the replay's function list");
    }
}

P11_EXPORT CK_RV C_GetFunctionList(void **pp)
{
    if (!p11_ready()) return CKR_GENERAL_ERROR_;
    struct p11_rec r;
    p11_rec_begin(&r, P11_FN_C_GetFunctionList, 0);
    p11_out_in(&r, 0, pp);
    p11_rec_call_start(&r);
    CK_RV rv = CKR_ARGUMENTS_BAD_;
    if (pp) {
        *pp = &g_rp_list;
        rv = CKR_OK_;
    }
    rp_take_entry(&r);
    p11_rec_call_end(&r);
    if (pp) p11_struct_out(&r, 0, rv, *pp, sizeof(CK_VERSION));
    p11_rec_finish(&r, rv);
    return rv;
}

/* The replay offers interfaces only where the recorded client found them (the 2.x build,
 * libp11spy-replay-2.so, exports neither), so that the client takes the same path. */
#if P11SPY_EXPORT_INTERFACES
#define RP_IFACE_EXPORT P11_EXPORT
#else
#define RP_IFACE_EXPORT static
#endif

RP_IFACE_EXPORT CK_RV C_GetInterfaceList(CK_INTERFACE *list, CK_ULONG *count)
{
    if (!p11_ready()) return CKR_GENERAL_ERROR_;
    struct p11_rec r;
    CK_ULONG saved = 0;
    p11_rec_begin(&r, P11_FN_C_GetInterfaceList, 0);
    p11_out_in(&r, 0, list);
    p11_len_ptr_in(&r, 1, count, &saved);
    p11_rec_call_start(&r);
    CK_RV rv = CKR_OK_;
    if (!count) rv = CKR_ARGUMENTS_BAD_;
    else if (list && saved < 1) rv = CKR_BUFFER_TOO_SMALL_;
    else if (list) list[0] = g_rp_iface;
    if (count) *count = 1;
    rp_take_entry(&r);
    p11_rec_call_end(&r);
    p11_len_ptr_out(&r, 1, rv, count);
    p11_interfaces_out(&r, 0, rv, list, count, saved);
    p11_rec_finish(&r, rv);
    return rv;
}

RP_IFACE_EXPORT CK_RV C_GetInterface(CK_UTF8CHAR *name, CK_VERSION *version, CK_INTERFACE **pp,
                                CK_FLAGS flags)
{
    if (!p11_ready()) return CKR_GENERAL_ERROR_;
    struct p11_rec r;
    p11_rec_begin(&r, P11_FN_C_GetInterface, 0);
    p11_cstring(&r, 0, (const char *)name);
    p11_struct(&r, 1, PH_IN, version, sizeof(CK_VERSION));
    p11_out_in(&r, 2, pp);
    p11_ulong(&r, 3, PH_IN, flags);
    p11_rec_call_start(&r);
    CK_RV rv = CKR_OK_;
    if (!pp) rv = CKR_ARGUMENTS_BAD_;
    else if ((name && strcmp((const char *)name, "PKCS 11") != 0) ||
             (version && (version->major != g_rp_version.major ||
                          version->minor != g_rp_version.minor)) || flags)
        rv = CKR_ARGUMENTS_BAD_;
    else *pp = &g_rp_iface;
    rp_take_entry(&r);
    p11_rec_call_end(&r);
    if (pp && rv == CKR_OK_) {
        CK_ULONG one = 1;
        p11_interfaces_out(&r, 2, rv, *pp, &one, 1);
    }
    p11_rec_finish(&r, rv);
    return rv;
}

/* What the shim runtime expects of the generated part, unused by the replay. */
static void p11_fill_ctx(int i, void *real_list, CK_VERSION version, int nslots)
{
    (void)i, (void)real_list, (void)version, (void)nslots;
}
