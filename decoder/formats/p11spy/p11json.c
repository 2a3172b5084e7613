/* p11spy binary trace -> JSON Lines, byte for byte what `p11spy decode --json` writes.
 *
 * Why C: a p11spy record decodes in about 12 us in Python, so a binary trace decoded at a
 * ninth of the speed of an OpenSC debug log, whose lines mostly need no decoding. Here the
 * loop over records, the reader's state (entries waiting for their return, PC/SC calls waiting
 * for their parent, the modules) and the JSON are C.
 *
 * What C does not know it asks Python (fastjson.py), so that the output cannot differ from the
 * Python reader's:
 * - every name from the fact tables (constants, attributes, instructions, return codes) comes
 *   from `lookup` once, and is cached here;
 * - a field C is not sure of (a struct, non-ASCII text, a payload that does not frame) is
 *   rendered by `arg`, the Python reader's own code for one field;
 * - a record C is not sure of (process and module headers, damage) by `record`.
 * The framing is checked first (p11j_run): a trace whose records do not chain exactly, the
 * usual case being a truncation at its end aside, is left to the Python reader whole.
 *
 * The #defines of the format (P11_RECORD_SIZE, REC_*, K_*, PH_*) come from facts/logformat.py,
 * and the interface from p11json.h, both prepended by the build (shim_build/build.py). No fact
 * table is compiled in.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <stdio.h>
#include <time.h>

#define API __attribute__((visibility("default")))

/* The interface (struct p11j_conf, its callbacks and the codes they speak in: LK_, RQ_, SM_,
 * BM_, AM_, MODE_, AV_) is p11json.h, put ahead of this file by the build after the format's
 * #defines. */

/* ---- output ---- */

typedef struct { char *p; size_t n, cap; int oom; } buf_t;

static int grow(buf_t *b, size_t need) {
    if (b->n + need <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + need) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) { b->oom = 1; return 0; }
    b->p = p; b->cap = cap;
    return 1;
}
static inline void put(buf_t *b, const void *s, size_t n) {
    if (!n || !grow(b, n)) return;  /* (an empty answer may come as a NULL pointer) */
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
#define PUTS(b, lit) put((b), (lit), sizeof(lit) - 1)
static inline void putch(buf_t *b, char c) { if (grow(b, 1)) b->p[b->n++] = c; }

static void put_u64(buf_t *b, uint64_t v) {
    char t[24];
    int i = 24;
    do { t[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    put(b, t + i, 24 - i);
}
static void put_i64(buf_t *b, int64_t v) {
    if (v < 0) { putch(b, '-'); put_u64(b, (uint64_t)0 - (uint64_t)v); }
    else put_u64(b, (uint64_t)v);
}
static const char HEXD[] = "0123456789abcdef";
static void put_hex(buf_t *b, const uint8_t *d, size_t n) {
    if (!grow(b, 2 * n)) return;
    char *o = b->p + b->n;
    for (size_t i = 0; i < n; i++) { o[2 * i] = HEXD[d[i] >> 4]; o[2 * i + 1] = HEXD[d[i] & 15]; }
    b->n += 2 * n;
}
static void put_qhex(buf_t *b, const uint8_t *d, size_t n) {
    putch(b, '"'); put_hex(b, d, n); putch(b, '"');
}
static void put_0x(buf_t *b, uint64_t v) {  /* "0x1f", as f"0x{v:x}" */
    char t[20];
    int i = 20;
    do { t[--i] = HEXD[v & 15]; v >>= 4; } while (v);
    PUTS(b, "\"0x");
    put(b, t + i, 20 - i);
    putch(b, '"');
}
/* A JSON string of ASCII bytes, escaped as orjson escapes them. */
static void put_ascii(buf_t *b, const uint8_t *s, size_t n) {
    putch(b, '"');
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') { putch(b, (char)c); continue; }
        switch (c) {
        case '"': PUTS(b, "\\\""); break;
        case '\\': PUTS(b, "\\\\"); break;
        case '\b': PUTS(b, "\\b"); break;
        case '\t': PUTS(b, "\\t"); break;
        case '\n': PUTS(b, "\\n"); break;
        case '\f': PUTS(b, "\\f"); break;
        case '\r': PUTS(b, "\\r"); break;
        default: { char e[6] = {'\\', 'u', '0', '0', HEXD[c >> 4], HEXD[c & 15]}; put(b, e, 6); }
        }
    }
    putch(b, '"');
}
static int is_ascii(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++) if (s[i] & 0x80) return 0;
    return 1;
}
/* n / 10^digits as Python's repr (and orjson) write that float: exact while the float's
 * spacing is below one unit of the last digit (the caller checks the range). */
static void put_scaled(buf_t *b, uint64_t n, int digits, uint64_t scale) {
    put_u64(b, n / scale);
    uint64_t frac = n % scale;
    putch(b, '.');
    if (!frac) { putch(b, '0'); return; }
    char t[8];
    for (int i = digits - 1; i >= 0; i--) { t[i] = (char)('0' + frac % 10); frac /= 10; }
    int len = digits;
    while (t[len - 1] == '0') len--;
    put(b, t, len);
}

static inline uint64_t le64(const uint8_t *p) {
    uint64_t v; memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}
static inline uint32_t le32(const uint8_t *p) {
    uint32_t v; memcpy(&v, p, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}
/* int.from_bytes(p[:n], "little") for n <= 8 */
static uint64_t le_n(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = n; i > 0; i--) v = (v << 8) | p[i - 1];
    return v;
}

/* ---- a small hash map: 64-bit key hash -> bucket chain ---- */

static uint64_t mix(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb3fe1a85ec53ULL;
    return x ^ (x >> 33);
}
static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ULL; }
    return mix(h);
}

/* The cache of lookup's answers. */
typedef struct cached { struct cached *next; int what; uint64_t a, b; size_t n; char s[]; } cached;
#define CACHE_BUCKETS 4096
#define CACHE_MAX 65536

/* Python's answers about field payloads and whole records, by their bytes: the answers are
 * pure functions of them, and real traces repeat them (a token's CK_TOKEN_INFO, the module
 * headers of each process of a script run many times). Bounded in entries and bytes. */
typedef struct memo {
    struct memo *next; uint64_t h; size_t kn, n1, n2; int status; uint64_t number;
    uint8_t *key; char *a1, *a2; uint8_t mem[];
} memo;
#define MEMO_BUCKETS 4096
#define MEMO_MAX 4096
#define MEMO_BYTES (16u << 20)
#define MEMO_KEY_MAX (64u << 10)

/* A PC/SC call waiting for its parent: its row from after "parent": on. */
typedef struct child { struct child *next; int apdu; size_t n; char tail[]; } child;
/* The PC/SC calls waiting for one parent (pid, call number), in the order the parents
 * were first waited for (read()'s pending dict). */
typedef struct waiting {
    struct waiting *hnext, *prev, *next;
    uint32_t pid; uint64_t number;
    child *first, *last;
    uint64_t bytes;  /* of the records its children came from */
} waiting;
/* A module's JSON for the rows of its calls, by (pid, index). */
typedef struct module {
    struct module *next, *older, *newer;  /* its bucket; the order names were first given in */
    uint32_t pid; uint32_t index; size_t n; char *s;
} module;
#define MBUCKETS 4096
/* An ENTRY record not yet closed (entries.OpenCalls). */
typedef struct entry { uint64_t offset; uint8_t *rec; size_t n; int doubtful; } entry;
#define KEY_LEN 30
typedef struct open_key {
    struct open_key *hnext, *prev, *next;
    uint8_t key[KEY_LEN];
    entry *stack; size_t count, cap;
} open_key;

#define HBUCKETS 4096

typedef struct {
    const struct p11j_conf *c;
    buf_t out, scratch;
    int64_t seq;
    int failed;  /* a callback failed or memory ran out: stop */
    cached *cache[CACHE_BUCKETS]; size_t ncached;
    memo *memo[MEMO_BUCKETS]; size_t nmemo, memo_bytes;
    waiting *wbucket[HBUCKETS]; waiting *whead, *wtail; uint64_t held;
    module *mbucket[MBUCKETS]; module *moldest, *mnewest; size_t nmodules;
    open_key *obucket[HBUCKETS]; open_key *ohead, *otail;
    size_t open_count; uint64_t open_bytes;
    /* mixed into every hash: keys come from the trace, and chains an attacker could predict
     * would make the tables quadratic */
    uint64_t seed;
} st_t;

#define FLUSH_AT (1u << 20)

static int flush(st_t *s) {
    if (s->out.oom || s->scratch.oom) { s->failed = 1; return 0; }
    if (s->out.n && s->c->write(s->out.p, s->out.n) != 0) { s->failed = 1; return 0; }
    s->out.n = 0;
    return 1;
}

/* lookup's answer, cached (times and durations are not: each is its own). */
static int lookup(st_t *s, int what, uint64_t a, uint64_t b, const char **out, size_t *n) {
    int cache = what != LK_TIME && what != LK_DURATION;
    uint64_t h = mix(((uint64_t)what << 56) ^ (a * 0x9E3779B97F4A7C15ULL) ^ b ^ s->seed)
                 % CACHE_BUCKETS;
    if (cache)
        for (cached *e = s->cache[h]; e; e = e->next)
            if (e->what == what && e->a == a && e->b == b) { *out = e->s; *n = e->n; return 1; }
    const char *p; size_t len;
    if (s->c->lookup(what, a, b, &p, &len) != 0) { s->failed = 1; return 0; }
    if (cache && s->ncached < CACHE_MAX) {
        cached *e = malloc(sizeof *e + len + 1);
        if (!e) { s->failed = 1; return 0; }
        e->what = what; e->a = a; e->b = b; e->n = len;
        if (len) memcpy(e->s, p, len);
        e->next = s->cache[h]; s->cache[h] = e; s->ncached++;
        p = e->s;
    }
    *out = p; *n = len;
    return 1;
}
static int put_lookup(st_t *s, buf_t *b, int what, uint64_t a, uint64_t v) {
    const char *p; size_t n;
    if (!lookup(s, what, a, v, &p, &n)) return 0;
    put(b, p, n);
    return 1;
}

static uint64_t memo_hash(const st_t *s, const uint8_t *tag, size_t tn, const uint8_t *d,
                          size_t n) {
    return mix(hash_bytes(tag, tn) ^ (hash_bytes(d, n) * 31) ^ s->seed);
}
static memo *memo_find(st_t *s, uint64_t h, const uint8_t *tag, size_t tn, const uint8_t *d,
                       size_t n) {
    for (memo *m = s->memo[h % MEMO_BUCKETS]; m; m = m->next)
        if (m->h == h && m->kn == tn + n && !memcmp(m->key, tag, tn) && !memcmp(m->key + tn, d, n))
            return m;
    return NULL;
}
/* Keeps an answer, if there is room (nothing is lost where there is not: Python is asked). */
static void memo_keep(st_t *s, uint64_t h, const uint8_t *tag, size_t tn, const uint8_t *d,
                      size_t n, int status, uint64_t number, const char *a1, size_t n1,
                      const char *a2, size_t n2) {
    size_t size = sizeof(memo) + tn + n + n1 + n2;
    if (tn + n > MEMO_KEY_MAX || s->nmemo >= MEMO_MAX || s->memo_bytes + size > MEMO_BYTES) return;
    memo *m = malloc(size);
    if (!m) return;
    m->h = h; m->kn = tn + n; m->n1 = n1; m->n2 = n2; m->status = status; m->number = number;
    m->key = m->mem; m->a1 = (char *)m->mem + tn + n; m->a2 = m->a1 + n1;
    memcpy(m->key, tag, tn);
    if (n) memcpy(m->key + tn, d, n);
    if (n1) memcpy(m->a1, a1, n1);
    if (n2) memcpy(m->a2, a2, n2);
    m->next = s->memo[h % MEMO_BUCKETS]; s->memo[h % MEMO_BUCKETS] = m;
    s->nmemo++; s->memo_bytes += size;
}

/* ---- fields ---- */

typedef struct { const uint8_t *rec; size_t len; size_t off; int left; } fields_t;
typedef struct { int param, phase, kind; uint64_t declared; size_t off, n; int whole; } field_t;

static void fields_start(fields_t *f, const uint8_t *rec, size_t len, int max) {
    f->rec = rec; f->len = len; f->off = P11_RECORD_SIZE; f->left = max;
}
/* The next field, as frames.fields walks them; whole says its payload lies in the record. */
static int field_next(fields_t *f, field_t *o) {
    if (f->left-- <= 0 || f->off + P11_FIELD_SIZE > f->len) return 0;
    const uint8_t *h = f->rec + f->off;
    o->param = h[0]; o->phase = h[1]; o->kind = h[2];
    o->declared = le32(h + 4);
    o->off = f->off + P11_FIELD_SIZE;
    o->whole = o->declared <= f->len - o->off;
    o->n = o->whole ? o->declared : f->len - o->off;
    f->off = o->off + o->declared;
    return 1;
}

/* The generic kinds reader._value renders: 1 done, 0 not one of them (or not sure). */
static int generic(st_t *s, buf_t *b, int kind, const uint8_t *d, size_t n) {
    switch (kind) {
    case K_NULL: PUTS(b, "null"); return 1;
    case K_MASKED: {
        if (n < 16) return 0;
        PUTS(b, "{\"masked\":true,\"length\":");
        put_u64(b, le64(d));
        return put_lookup(s, b, LK_MASKED, d[8], d[9]);
    }
    case K_DIGEST:
        if (n < 16) return 0;
        PUTS(b, "{\"length\":");
        put_u64(b, le64(d));
        PUTS(b, ",\"fnv1a64\":\"");
        { uint64_t h = le64(d + 8); char t[16];
          for (int i = 15; i >= 0; i--) { t[i] = HEXD[h & 15]; h >>= 4; }
          put(b, t, 16); }
        PUTS(b, "\",\"prefix\":");
        put_qhex(b, d + 16, n - 16);
        putch(b, '}');
        return 1;
    case K_UNREAD:
        if (n < 8) return 0;
        PUTS(b, "{\"unread\":true,\"length\":");
        put_u64(b, le64(d));
        putch(b, '}');
        return 1;
    }
    return 0;
}

static int scalar(st_t *s, buf_t *b, const struct p11j_param *p, uint64_t v) {
    switch (p->mode & 15) {
    case SM_INT: put_u64(b, v); return 1;
    case SM_UNAVAIL:
        if (v == UINT64_MAX) PUTS(b, "\"CK_UNAVAILABLE_INFORMATION\"");
        else put_u64(b, v);
        return 1;
    case SM_BOOL: if (v) PUTS(b, "true"); else PUTS(b, "false"); return 1;
    case SM_PTR: put_0x(b, v); return 1;
    case SM_NAMED: return put_lookup(s, b, LK_NAME, p->family, v);
    }
    return 0;
}

static int attr_value(st_t *s, buf_t *b, uint64_t atype, const uint8_t *d, size_t n) {
    const char *info; size_t in;
    if (!lookup(s, LK_ATTR, 0, atype, &info, &in) || in < 5) return 0;
    uint32_t family = le32((const uint8_t *)info + 1);
    switch (info[0]) {
    case AV_BOOL:
        if (n != 1) break;
        if (d[0]) PUTS(b, "true"); else PUTS(b, "false");
        return 1;
    case AV_INT: if (n != 8) break; put_u64(b, le64(d)); return 1;
    case AV_NAMED: if (n != 8) break; return put_lookup(s, b, LK_NAME, family, le64(d));
    case AV_STRING:
        if (!is_ascii(d, n)) return 0;  /* UTF-8 or not: Python decides */
        put_ascii(b, d, n);
        return 1;
    case AV_DATE: {
        if (n != 8) break;
        for (int i = 0; i < 8; i++) if (d[i] < '0' || d[i] > '9') goto hex;
        char t[12] = {'"', d[0], d[1], d[2], d[3], '-', d[4], d[5], '-', d[6], d[7], '"'};
        put(b, t, 12);
        return 1;
    }
    case AV_MECHS: case AV_INTS:
        if (n % 8) break;
        putch(b, '[');
        for (size_t i = 0; i < n; i += 8) {
            if (i) putch(b, ',');
            if (info[0] == AV_INTS) put_u64(b, le64(d + i));
            else if (!put_lookup(s, b, LK_NAME, s->c->ckm_family, le64(d + i))) return 0;
        }
        putch(b, ']');
        return 1;
    }
hex:
    put_qhex(b, d, n);
    return 1;
}

/* reader._template: 1 done, 0 leave the field to Python. */
static int template(st_t *s, buf_t *b, const uint8_t *d, size_t n, int depth) {
    if (n < 8 || depth > 8) return 0;
    uint64_t count = le64(d);
    size_t off = 8;
    putch(b, '[');
    for (uint64_t i = 0; i < count; i++) {
        if (off + 24 > n) return 0;  /* Python's unpack raises: the field is undecodable */
        uint64_t atype = le64(d + off), alen = le64(d + off + 8);
        int vkind = d[off + 16];
        uint32_t plen = le32(d + off + 20);
        off += 24;
        if (plen > n - off) return 0;
        const uint8_t *v = d + off;
        off += plen;
        if (i) putch(b, ',');
        PUTS(b, "{\"type\":");
        if (!put_lookup(s, b, LK_NAME, s->c->cka_family, atype)) return 0;
        PUTS(b, ",\"len\":");
        if (alen == UINT64_MAX) PUTS(b, "\"CK_UNAVAILABLE_INFORMATION\"");
        else put_u64(b, alen);
        switch (vkind) {
        case K_TEMPLATE:
            PUTS(b, ",\"value\":");
            if (!template(s, b, v, plen, depth + 1)) return 0;
            break;
        case K_BYTES:
            PUTS(b, ",\"value\":");
            if (!attr_value(s, b, atype, v, plen)) return 0;
            break;
        case K_MASKED: case K_DIGEST:
            PUTS(b, ",\"value\":");
            if (!generic(s, b, vkind, v, plen)) return 0;
            break;
        }
        putch(b, '}');
    }
    putch(b, ']');
    return 1;
}

static int mechanism(st_t *s, buf_t *b, const uint8_t *d, size_t n) {
    if (n < 24) return 0;
    uint64_t mtype = le64(d), plen = le64(d + 8);
    int pkind = d[16];
    uint32_t pn = le32(d + 20);
    size_t have = n - 24 < pn ? n - 24 : pn;
    PUTS(b, "{\"mechanism\":");
    if (!put_lookup(s, b, LK_NAME, s->c->ckm_family, mtype)) return 0;
    switch (pkind) {
    case K_NULL: PUTS(b, ",\"parameter\":null"); break;
    case K_BYTES: PUTS(b, ",\"parameter\":"); put_qhex(b, d + 24, have); break;
    case K_UNREAD: PUTS(b, ",\"parameter\":{\"unread\":true,\"length\":"); put_u64(b, plen);
        putch(b, '}'); break;
    case K_STRUCT: return 0;
    }
    putch(b, '}');
    return 1;
}

/* frames.reader_states, rendered as reader._reader_states. */
static int reader_states(buf_t *b, const uint8_t *d, size_t n) {
    size_t off = 0;
    int first = 1;
    putch(b, '[');
    while (off + 17 <= n) {
        size_t start = off, atr = off + 17;
        off = atr + d[off + 16];
        if (off >= n) return 0;  /* Python: IndexError */
        size_t name = off + 1, end = name + d[off];
        if (end > n || !is_ascii(d + name, end - name)) return 0;
        if (!first) putch(b, ',');
        first = 0;
        PUTS(b, "{\"reader\":");
        put_ascii(b, d + name, end - name);
        PUTS(b, ",\"current_state\":");
        put_0x(b, le64(d + start));
        PUTS(b, ",\"event_state\":");
        put_0x(b, le64(d + start + 8));
        PUTS(b, ",\"atr\":");
        put_qhex(b, d + atr, off - atr);
        putch(b, '}');
        off = end;
    }
    putch(b, ']');
    return 1;
}

/* [r for r in text.split("\0") if r] */
static int multisz(buf_t *b, const uint8_t *d, size_t n) {
    if (!is_ascii(d, n)) return 0;
    putch(b, '[');
    int first = 1;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && d[j]) j++;
        if (j > i) {
            if (!first) putch(b, ',');
            first = 0;
            put_ascii(b, d + i, j - i);
        }
        i = j + 1;
    }
    putch(b, ']');
    return 1;
}

/* One field's value (reader.decode_call's loop, or decode_pcsc's): 1 rendered here, 0 not
 * sure (the caller asks Python). */
static int value(st_t *s, buf_t *b, const struct p11j_param *p, int pcsc, const field_t *f,
                 const uint8_t *d) {
    if (!f->whole) return 0;
    size_t n = f->n;
    if (!pcsc && f->declared > s->c->field_limit && f->kind != K_TEMPLATE) return 0;
    switch (f->kind) {
    case K_ULONG:
        if (n != 8) return 0;
        return scalar(s, b, p, le64(d));
    case K_NULL: case K_MASKED: case K_DIGEST: case K_UNREAD:
        return generic(s, b, f->kind, d, n);
    case K_BYTES:
        switch ((p->mode >> 4) & 15) {
        case BM_HEX: put_qhex(b, d, n); return 1;
        case BM_READER_STATES: return pcsc && reader_states(b, d, n);
        case BM_MULTISZ: return pcsc && multisz(b, d, n);
        }
        return 0;
    case K_CSTRING:
        if (!is_ascii(d, n)) return 0;
        put_ascii(b, d, n);
        return 1;
    case K_TEMPLATE: return !pcsc && template(s, b, d, n, 0);
    case K_MECHANISM: return !pcsc && mechanism(s, b, d, n);
    case K_ULONG_ARRAY: {
        putch(b, '[');
        int named = ((p->mode >> 8) & 15) == AM_NAMED;
        for (size_t i = 0; i + 8 <= n; i += 8) {
            if (i) putch(b, ',');
            if (!named) put_u64(b, le64(d + i));
            else if (!put_lookup(s, b, LK_NAME, p->family, le64(d + i))) return 0;
        }
        putch(b, ']');
        return 1;
    }
    }
    return 0;
}

/* A field's value into b: here, or by Python. Returns 0 ok, 1 Python's reader raised
 * (a PC/SC record: the record is damaged), -1 stop. */
static int field_value(st_t *s, buf_t *b, const struct p11j_param *p, int pcsc, int fidx,
                       const field_t *f, const uint8_t *rec) {
    size_t mark = b->n;
    if (value(s, b, p, pcsc, f, rec + f->off)) return s->failed ? -1 : 0;
    if (s->failed) return -1;
    b->n = mark;
    uint8_t tag[16] = {(uint8_t)pcsc, (uint8_t)fidx, (uint8_t)(fidx >> 8), (uint8_t)f->param,
                       (uint8_t)f->kind, (uint8_t)f->phase};
    memcpy(tag + 8, &f->declared, 8);
    const uint8_t *d = rec + f->off;
    uint64_t h = memo_hash(s, tag, 16, d, f->n);
    memo *m = memo_find(s, h, tag, 16, d, f->n);
    if (m) {
        if (m->status) return 1;
        put(b, m->a1, m->n1);
        return 0;
    }
    const char *o; size_t on;
    int r = s->c->arg(pcsc, fidx, f->param, f->kind, f->declared, d, f->n, &o, &on);
    if (r < 0) { s->failed = 1; return -1; }
    memo_keep(s, h, tag, 16, d, f->n, r, 0, o, r ? 0 : on, "", 0);
    if (r > 0) return 1;
    put(b, o, on);
    return 0;
}

/* ---- calls ---- */

#define MAXP 256
typedef struct { size_t at[2], len[2]; int8_t first; uint8_t have; } slot_t;

static void put_time(st_t *s, buf_t *b, uint64_t us) {
    if (us == 0) { PUTS(b, "0.0"); return; }
    if (us >= 1000000ULL && us < (1ULL << 33) * 1000000ULL) { put_scaled(b, us, 6, 1000000); return; }
    put_lookup(s, b, LK_TIME, 0, us);
}
static void put_duration(st_t *s, buf_t *b, uint64_t ns) {
    if (ns < 1000000000000000ULL) { put_scaled(b, ns, 3, 1000); return; }
    put_lookup(s, b, LK_DURATION, 0, ns);
}

/* The arguments of a call or PC/SC record, from the slots filled from its fields. */
static void put_args(st_t *s, buf_t *b, const struct p11j_func *fn, slot_t *slots) {
    const char *names = s->c->names;
    int any = 0;
    putch(b, '{');
    for (uint32_t i = 0; i < fn->count; i++) {
        slot_t *sl = &slots[i];
        if (!sl->have) continue;
        const struct p11j_param *p = &s->c->params[fn->first + i];
        if (any) putch(b, ',');
        any = 1;
        put(b, names + p->name_off, p->name_len);
        putch(b, ':');
        if (!(p->mode & MODE_INOUT)) { put(b, s->scratch.p + sl->at[0], sl->len[0]); continue; }
        putch(b, '{');
        for (int k = 0; k < 2; k++) {
            int ph = k == 0 ? sl->first : !sl->first;
            if (!(sl->have & (1 << ph))) continue;
            if (k && (sl->have & (1 << sl->first))) putch(b, ',');
            if (ph == PH_IN) PUTS(b, "\"in\":"); else PUTS(b, "\"out\":");
            put(b, s->scratch.p + sl->at[ph], sl->len[ph]);
        }
        putch(b, '}');
    }
    putch(b, '}');
}

static void keep(slot_t *sl, int inout, int phase, size_t at, size_t len) {
    int k = inout ? (phase == PH_IN ? PH_IN : PH_OUT) : 0;
    if (inout && !sl->have) sl->first = (int8_t)k;
    sl->have |= (uint8_t)(1 << k);
    sl->at[k] = at; sl->len[k] = len;
}

static size_t mslot(const st_t *s, uint32_t pid, uint32_t index) {
    return mix(((uint64_t)pid << 8 | index) ^ s->seed) % MBUCKETS;
}

static const module *module_of(st_t *s, uint32_t pid, uint32_t index) {
    for (module *m = s->mbucket[mslot(s, pid, index)]; m; m = m->next)
        if (m->pid == pid && m->index == index) return m;
    return NULL;
}

/* modules.Modules.named: a name given again keeps its place; past max_modules the oldest
 * is forgotten. */
static void module_named(st_t *s, uint32_t pid, uint32_t index, const char *json, size_t n) {
    char *copy = malloc(n ? n : 1);
    if (!copy) { s->failed = 1; return; }
    if (n) memcpy(copy, json, n);
    module *m = (module *)module_of(s, pid, index);
    if (m) { free(m->s); m->s = copy; m->n = n; return; }
    m = calloc(1, sizeof *m);
    if (!m) { free(copy); s->failed = 1; return; }
    m->pid = pid; m->index = index; m->s = copy; m->n = n;
    size_t h = mslot(s, pid, index);
    m->next = s->mbucket[h]; s->mbucket[h] = m;
    m->older = s->mnewest;
    if (s->mnewest) s->mnewest->newer = m; else s->moldest = m;
    s->mnewest = m;
    if (++s->nmodules <= s->c->max_modules) return;
    module *old = s->moldest;
    module **pp = &s->mbucket[mslot(s, old->pid, old->index)];
    while (*pp != old) pp = &(*pp)->next;
    *pp = old->next;
    s->moldest = old->newer;
    if (s->moldest) s->moldest->older = NULL; else s->mnewest = NULL;
    s->nmodules--;
    free(old->s);
    free(old);
}

static void adopt(st_t *s, uint32_t pid, uint64_t number, int64_t parent);

/* reader.read's call_events: a call record, or an ENTRY no return closed. */
static void call_row(st_t *s, const uint8_t *rec, size_t len, int entry, int lost) {
    buf_t *b = &s->out;
    uint32_t fidx = rec[10] | (rec[11] << 8);
    uint32_t pid = le32(rec + 12);
    uint64_t tid = le64(rec + 16), start = le64(rec + 24), dur = le64(rec + 32);
    uint64_t rv = le64(rec + 40), number = le64(rec + 48);
    const struct p11j_func *fn = fidx < s->c->nfuncs ? &s->c->funcs[fidx] : NULL;
    int64_t seq = s->seq;
    PUTS(b, "{\"type\":\"call\",\"seq\":");
    put_i64(b, seq);
    PUTS(b, ",\"function\":");
    if (fn) put(b, s->c->names + fn->name_off, fn->name_len);
    else { PUTS(b, "\"function #"); put_u64(b, fidx); putch(b, '"'); }
    if (entry) PUTS(b, ",\"rv\":null,\"rv_name\":null");
    else {
        PUTS(b, ",\"rv\":"); put_u64(b, rv);
        PUTS(b, ",\"rv_name\":"); put_lookup(s, b, LK_RV, 0, rv);
    }
    PUTS(b, ",\"pid\":"); put_u64(b, pid);
    PUTS(b, ",\"tid\":"); put_u64(b, tid);
    PUTS(b, ",\"time\":"); put_time(s, b, start);
    PUTS(b, ",\"duration_us\":");
    if (entry) PUTS(b, "null"); else put_duration(s, b, dur);
    PUTS(b, ",\"args\":");
    int length_query = 0;
    if (!fn) PUTS(b, "{}");
    else {
        slot_t slots[MAXP];
        memset(slots, 0, sizeof(slot_t) * fn->count);
        s->scratch.n = 0;
        fields_t fw; field_t f;
        fields_start(&fw, rec, len, (int)s->c->max_fields);
        while (field_next(&fw, &f)) {
            if ((uint32_t)f.param >= fn->count) continue;
            const struct p11j_param *p = &s->c->params[fn->first + f.param];
            size_t at = s->scratch.n;
            if (field_value(s, &s->scratch, p, 0, (int)fidx, &f, rec) != 0) {
                s->failed = 1;  /* (a call's field is never "damaged record": Python says so) */
                return;
            }
            keep(&slots[f.param], (p->mode & MODE_INOUT) != 0, f.phase, at, s->scratch.n - at);
            if ((p->mode & MODE_TWO_CALL) && f.phase == PH_IN && f.kind == K_NULL)
                length_query = 1;
        }
        put_args(s, b, fn, slots);
    }
    if (length_query) PUTS(b, ",\"length_query\":true");
    const module *m = module_of(s, pid, rec[9]);
    if (m) put(b, m->s, m->n);
    if (entry && !lost) PUTS(b, ",\"never_returned\":true");
    PUTS(b, "}\n");
    s->seq++;
    adopt(s, pid, number, seq);
}

/* ---- PC/SC calls waiting for their parent ---- */

static size_t wslot(const st_t *s, uint32_t pid, uint64_t number) {
    return mix((number * 1000003 + pid) ^ s->seed) % HBUCKETS;
}

static waiting *waiting_for(st_t *s, uint32_t pid, uint64_t number, int create) {
    size_t h = wslot(s, pid, number);
    for (waiting *w = s->wbucket[h]; w; w = w->hnext)
        if (w->pid == pid && w->number == number) return w;
    if (!create) return NULL;
    waiting *w = calloc(1, sizeof *w);
    if (!w) { s->failed = 1; return NULL; }
    w->pid = pid; w->number = number;
    w->hnext = s->wbucket[h]; s->wbucket[h] = w;
    w->prev = s->wtail;
    if (s->wtail) s->wtail->next = w; else s->whead = w;
    s->wtail = w;
    return w;
}

static void waiting_drop(st_t *s, waiting *w) {
    size_t h = wslot(s, w->pid, w->number);
    waiting **pp = &s->wbucket[h];
    while (*pp != w) pp = &(*pp)->hnext;
    *pp = w->hnext;
    if (w->prev) w->prev->next = w->next; else s->whead = w->next;
    if (w->next) w->next->prev = w->prev; else s->wtail = w->prev;
    free(w);
}

static void emit_child(st_t *s, const child *c, int64_t parent) {
    buf_t *b = &s->out;
    if (c->apdu) PUTS(b, "{\"type\":\"apdu\",\"seq\":");
    else PUTS(b, "{\"type\":\"pcsc\",\"seq\":");
    put_i64(b, s->seq++);
    PUTS(b, ",\"parent\":");
    if (parent < 0) PUTS(b, "null"); else put_i64(b, parent);
    put(b, c->tail, c->n);
}

static void emit_children(st_t *s, waiting *w, int64_t parent) {
    s->held -= w->bytes;
    for (child *c = w->first, *next; c; c = next) {
        next = c->next;
        emit_child(s, c, parent);
        free(c);
    }
    waiting_drop(s, w);
}

static void adopt(st_t *s, uint32_t pid, uint64_t number, int64_t parent) {
    waiting *w = waiting_for(s, pid, number, 0);
    if (w) emit_children(s, w, parent);
}

static void warning(st_t *s, const char *message, const char *kind);

/* A rendered PC/SC row (its tail after "parent") under its parent, or out now; rec_len is the
 * size of its record, which counts against max_waiting (reader.MAX_WAITING). */
static void pcsc_done(st_t *s, uint32_t pid, uint64_t parent, int apdu, const char *tail, size_t n,
                      size_t rec_len) {
    child *c = malloc(sizeof *c + n);
    if (!c) { s->failed = 1; return; }
    c->next = NULL; c->apdu = apdu; c->n = n;
    memcpy(c->tail, tail, n);
    if (!parent) { emit_child(s, c, -1); free(c); return; }
    waiting *w = waiting_for(s, pid, parent, 1);
    if (!w) { free(c); return; }
    if (w->last) w->last->next = c; else w->first = c;
    w->last = c;
    w->bytes += rec_len;
    s->held += rec_len;
    while (s->held > s->c->max_waiting && s->whead) {  /* a hostile trace: the oldest wait ends */
        waiting *old = s->whead;
        char m[200];
        snprintf(m, sizeof m, "process %u: call #%llu made more PC/SC calls than a reader keeps "
                 "waiting for it (%llu MiB): they are shown here, without it", old->pid,
                 (unsigned long long)old->number, (unsigned long long)(s->c->max_waiting >> 20));
        warning(s, m, NULL);
        emit_children(s, old, -1);
    }
}

/* reader.decode_pcsc, rendered: 1 done, 0 leave the record to Python. */
static int pcsc_row(st_t *s, const uint8_t *rec, size_t len) {
    uint32_t fidx = rec[10] | (rec[11] << 8);
    uint32_t pid = le32(rec + 12);
    uint64_t tid = le64(rec + 16), start = le64(rec + 24), dur = le64(rec + 32);
    uint64_t rv = le64(rec + 40);
    const struct p11j_func *fn = fidx < s->c->npfuncs ? &s->c->pfuncs[fidx] : NULL;
    if (!fn) return 0;
    /* values[(param, phase)], the last one of each kept, and the parent */
    struct { int kind; size_t off, n; uint64_t declared; int whole; int set; } vals[8][2];
    memset(vals, 0, sizeof vals);
    uint64_t parent = 0;
    fields_t fw; field_t f;
    fields_start(&fw, rec, len, (int)s->c->max_fields);
    while (field_next(&fw, &f)) {
        if ((uint32_t)f.param == s->c->parent_param) {
            parent = le_n(rec + f.off, f.n < 8 ? f.n : 8);
            continue;
        }
        if ((uint32_t)f.param >= fn->count) continue;
        if (f.phase > 1 || f.param >= 8) return 0;
        vals[f.param][f.phase].kind = f.kind; vals[f.param][f.phase].off = f.off;
        vals[f.param][f.phase].n = f.n; vals[f.param][f.phase].declared = f.declared;
        vals[f.param][f.phase].whole = f.whole; vals[f.param][f.phase].set = 1;
    }
    buf_t *b = &s->scratch;
    b->n = 0;
    int apdu = fidx == s->c->transmit;
    if (apdu) {
        /* Apdu.to_json after "parent" */
        const uint8_t *cmd = NULL; size_t cn = 0;
        int masked = 0;
        const uint8_t *hdr = NULL, *trl = NULL; size_t hl = 0, tl = 0; uint64_t mlen = 0;
        if (vals[2][PH_IN].set) {
            const uint8_t *d = rec + vals[2][PH_IN].off; size_t n = vals[2][PH_IN].n;
            if (vals[2][PH_IN].kind == K_APDU_MASKED) {
                if (n < 1) return 0;
                hl = d[0];
                if (1 + hl + 16 + 1 > n) return 0;
                hdr = d + 1;
                mlen = le64(d + 1 + hl);
                if (mlen > 65536) return 0;
                size_t off = 1 + hl + 16;
                tl = d[off];
                if (off + 1 + tl > n) return 0;
                trl = d + off + 1;
                masked = 1;
            } else if (vals[2][PH_IN].kind == K_BYTES) { cmd = d; cn = n; }
        }
        size_t total = masked ? hl + mlen + tl : cn;
        uint8_t b0 = 0, b1 = 0;
        if (masked) {
            /* the first two bytes of header + '*' * mlen + trailer */
            uint8_t joined[2]; size_t k = 0;
            for (size_t i = 0; i < hl && k < 2; i++) joined[k++] = hdr[i];
            for (uint64_t i = 0; i < mlen && k < 2; i++) joined[k++] = '*';
            for (size_t i = 0; i < tl && k < 2; i++) joined[k++] = trl[i];
            b0 = k > 0 ? joined[0] : 0; b1 = k > 1 ? joined[1] : 0;
        } else if (cn >= 2) { b0 = cmd[0]; b1 = cmd[1]; }
        PUTS(b, ",\"command\":\"");
        if (masked) {
            put_hex(b, hdr, hl);
            if (grow(b, 2 * mlen)) { for (uint64_t i = 0; i < mlen; i++) { b->p[b->n++] = '2'; b->p[b->n++] = 'a'; } }
            put_hex(b, trl, tl);
        } else put_hex(b, cmd, cn);
        PUTS(b, "\",\"response\":");
        const uint8_t *r = NULL; size_t rn = 0;
        if (vals[5][PH_OUT].set && vals[5][PH_OUT].kind == K_BYTES) {
            r = rec + vals[5][PH_OUT].off; rn = vals[5][PH_OUT].n;
            put_qhex(b, r, rn);
        } else PUTS(b, "null");
        PUTS(b, ",\"sw\":");
        if (r && rn >= 2) {
            char t[6] = {'"', "0123456789ABCDEF"[r[rn - 2] >> 4], "0123456789ABCDEF"[r[rn - 2] & 15],
                         "0123456789ABCDEF"[r[rn - 1] >> 4], "0123456789ABCDEF"[r[rn - 1] & 15], '"'};
            put(b, t, 6);
        } else PUTS(b, "null");
        if (total >= 2) {
            char t[12] = {',', '"', 'i', 'n', 's', '"', ':', '"', "0123456789ABCDEF"[b1 >> 4],
                          "0123456789ABCDEF"[b1 & 15], '"', ','};
            put(b, t, 12);
            PUTS(b, "\"ins_name\":");
            if (!put_lookup(s, b, LK_INS, b0, b1)) return 1;
        } else PUTS(b, ",\"ins\":null,\"ins_name\":null");
    } else {
        PUTS(b, ",\"function\":");
        put(b, s->c->names + fn->name_off, fn->name_len);
        PUTS(b, ",\"rv\":"); put_u64(b, rv);
        PUTS(b, ",\"rv_name\":");
        if (!put_lookup(s, b, LK_PCSC_RV, 0, rv)) return 1;
    }
    PUTS(b, ",\"pid\":"); put_u64(b, pid);
    PUTS(b, ",\"tid\":"); put_u64(b, tid);
    PUTS(b, ",\"time\":"); put_time(s, b, start);
    PUTS(b, ",\"duration_us\":"); put_duration(s, b, dur);
    if (apdu) {
        if (vals[2][PH_IN].set && vals[2][PH_IN].kind == K_APDU_MASKED) PUTS(b, ",\"masked\":true");
        if (rv) { PUTS(b, ",\"error\":"); if (!put_lookup(s, b, LK_PCSC_RV, 0, rv)) return 1; }
        PUTS(b, "}\n");
    } else {
        /* the values render after the row so far; the args go at its end */
        size_t row = b->n;
        slot_t slots[8];
        memset(slots, 0, sizeof slots);
        for (uint32_t i = 0; i < fn->count && i < 8; i++)
            for (int ph = 0; ph < 2; ph++) {
                if (!vals[i][ph].set) continue;
                const struct p11j_param *p = &s->c->params[fn->first + i];
                field_t fv = {(int)i, ph, vals[i][ph].kind, vals[i][ph].declared,
                              vals[i][ph].off, vals[i][ph].n, vals[i][ph].whole};
                size_t at = b->n;
                int r = field_value(s, b, p, 1, (int)fidx, &fv, rec);
                if (r != 0) return r < 0 ? 1 : 0;
                keep(&slots[i], (p->mode & MODE_INOUT) != 0, ph, at, b->n - at);
            }
        size_t vend = b->n;
        PUTS(b, ",\"args\":");
        put_args(s, b, fn, slots);
        PUTS(b, "}\n");
        if (b->oom) { s->failed = 1; return 1; }
        /* the row: [0, row) + [vend, end) */
        size_t head = row, tailn = b->n - vend;
        if (!grow(b, head + tailn)) { s->failed = 1; return 1; }
        memcpy(b->p + b->n, b->p, head);
        memcpy(b->p + b->n + head, b->p + vend, tailn);
        pcsc_done(s, pid, parent, 0, b->p + b->n, head + tailn, len);
        return 1;
    }
    if (b->oom) { s->failed = 1; return 1; }
    pcsc_done(s, pid, parent, apdu, b->p, b->n, len);
    return 1;
}

/* ---- entries (entries.OpenCalls) ---- */

static size_t kslot(const st_t *s, const uint8_t *key) {
    return mix(hash_bytes(key, KEY_LEN) ^ s->seed) % HBUCKETS;
}
static void call_key(const uint8_t *rec, uint8_t *key) {
    memcpy(key, rec + 10, 22);
    memcpy(key + 22, rec + 48, 8);
}
static open_key *key_find(st_t *s, const uint8_t *key) {
    for (open_key *k = s->obucket[kslot(s, key)]; k; k = k->hnext)
        if (!memcmp(k->key, key, KEY_LEN)) return k;
    return NULL;
}
static void key_drop(st_t *s, open_key *k) {
    open_key **pp = &s->obucket[kslot(s, k->key)];
    while (*pp != k) pp = &(*pp)->hnext;
    *pp = k->hnext;
    if (k->prev) k->prev->next = k->next; else s->ohead = k->next;
    if (k->next) k->next->prev = k->prev; else s->otail = k->prev;
    free(k->stack);
    free(k);
}
/* Takes the entry at the bottom (at = 0) or the top (at = -1) of a key's stack. */
static entry key_take(st_t *s, open_key *k, int at) {
    entry e;
    if (at == 0) { e = k->stack[0]; memmove(k->stack, k->stack + 1, (k->count - 1) * sizeof(entry)); }
    else e = k->stack[k->count - 1];
    k->count--;
    s->open_count--;
    s->open_bytes -= e.n;
    if (!k->count) key_drop(s, k);
    return e;
}
static void entry_row(st_t *s, entry e) {
    call_row(s, e.rec, e.n, 1, e.doubtful);
    free(e.rec);
}
static void enter(st_t *s, const uint8_t *rec, size_t len, uint64_t offset) {
    uint8_t key[KEY_LEN];
    call_key(rec, key);
    open_key *k = key_find(s, key);
    if (!k) {
        k = calloc(1, sizeof *k);
        if (!k) { s->failed = 1; return; }
        memcpy(k->key, key, KEY_LEN);
        size_t h = kslot(s, key);
        k->hnext = s->obucket[h]; s->obucket[h] = k;
        k->prev = s->otail;
        if (s->otail) s->otail->next = k; else s->ohead = k;
        s->otail = k;
    }
    if (k->count == k->cap) {
        size_t cap = k->cap ? 2 * k->cap : 2;
        entry *st = realloc(k->stack, cap * sizeof(entry));
        if (!st) { s->failed = 1; return; }
        k->stack = st; k->cap = cap;
    }
    uint8_t *copy = malloc(len);
    if (!copy) { s->failed = 1; return; }
    memcpy(copy, rec, len);
    k->stack[k->count++] = (entry){offset, copy, len, 0};
    s->open_count++;
    s->open_bytes += len;
    while (s->open_count > s->c->max_open || (s->open_bytes > s->c->max_bytes && s->open_count > 1))
        entry_row(s, key_take(s, s->ohead, 0));
}
static void leave(st_t *s, const uint8_t *rec) {
    if (!s->ohead) return;
    uint8_t key[KEY_LEN];
    call_key(rec, key);
    open_key *k = key_find(s, key);
    if (k) free(key_take(s, k, -1).rec);
}
static void records_lost(st_t *s, const uint8_t *pid) {
    for (open_key *k = s->ohead; k; k = k->next)
        if (!memcmp(k->key + 2, pid, 4))
            for (size_t i = 0; i < k->count; i++) k->stack[i].doubtful = 1;
}

/* ---- records ---- */

static int ask(st_t *s, int what, const uint8_t *rec, size_t len, uint64_t offset,
               uint64_t *number, const char **o, size_t *on) {
    int r = s->c->record(what, rec, len, s->seq, offset, number, o, on);
    if (r < 0) s->failed = 1;
    return r;
}

/* A warning row (its message plain ASCII, as every one written here is). */
static void warning(st_t *s, const char *message, const char *kind) {
    buf_t *b = &s->out;
    PUTS(b, "{\"type\":\"warning\",\"seq\":");
    put_i64(b, s->seq++);
    PUTS(b, ",\"message\":\"");
    put(b, message, strlen(message));
    putch(b, '"');
    if (kind) { PUTS(b, ",\"kind\":\""); put(b, kind, strlen(kind)); putch(b, '"'); }
    PUTS(b, "}\n");
}

/* The row of a record that is no call, by Python, and for a module the JSON its calls name it
 * by (o, on) and its index (number). The rows of module headers and dropped records are kept
 * by their bytes, their seq spliced in: they are the same for every process that loaded the
 * same module. (A process header holds its pid and time, and a "seq" of its own may be in it.)
 * A kept row is stored without its seq's digits; the memo's status says where they go. */
static int header_row(st_t *s, int what, const uint8_t *rec, size_t len, uint64_t offset,
                      uint64_t *number, const char **o, size_t *on) {
    uint8_t tag[8] = {(uint8_t)what};
    int keepable = what != RQ_PROCESS;
    uint64_t h = memo_hash(s, tag, 8, rec, len);
    memo *m = keepable ? memo_find(s, h, tag, 8, rec, len) : NULL;
    if (m) {
        size_t at = (size_t)m->status;
        put(&s->out, m->a1, at);
        put_i64(&s->out, s->seq++);
        put(&s->out, m->a1 + at, m->n1 - at);
        *number = m->number; *o = m->a2; *on = m->n2;
        return 1;
    }
    const char *r; size_t rn;
    if (ask(s, what, rec, len, offset, number, &r, &rn) < 0) return 0;
    size_t start = s->out.n;
    put(&s->out, r, rn);  /* (r is Python's until the next question: copied here first) */
    *o = ""; *on = 0; *number = UINT64_MAX;
    if (what == RQ_MODULE && ask(s, RQ_MODULE_PATH, rec, len, offset, number, o, on) < 0)
        return 0;
    char seq[32];
    int k = snprintf(seq, sizeof seq, "\"seq\":%lld,", (long long)s->seq++);
    const char *row = s->out.p + start;
    const char *at = keepable && !s->out.oom ? memmem(row, rn < 48 ? rn : 48, seq, (size_t)k) : NULL;
    if (at) {  /* kept without the digits, which sit between "seq": and the comma */
        size_t head = (size_t)(at - row) + 6, digits = (size_t)k - 7;
        char *kept = malloc(rn - digits);
        if (!kept) { s->failed = 1; return 0; }
        memcpy(kept, row, head);
        memcpy(kept + head, row + head + digits, rn - head - digits);
        memo_keep(s, h, tag, 8, rec, len, (int)head, *number, kept, rn - digits, *o, *on);
        free(kept);
    }
    return 1;
}

static void one(st_t *s, const uint8_t *rec, size_t len, uint64_t offset) {
    int type = rec[8];
    const char *o; size_t on; uint64_t number = 0;
    switch (type) {
    case REC_PCSC:
        if (pcsc_row(s, rec, len) || s->failed) return;
        {
            int r = ask(s, RQ_PCSC, rec, len, offset, &number, &o, &on);
            if (r < 0) return;
            if (r == 1) { put(&s->out, o, on); s->seq++; return; }
            int apdu = on > 9 && !memcmp(o, "\"apdu\"", 6);
            /* the answer: "apdu" or "pcsc" (6 bytes), then the tail */
            pcsc_done(s, le32(rec + 12), number, apdu, o + 6, on - 6, len);
        }
        return;
    case REC_ENTRY: enter(s, rec, len, offset); return;
    case REC_PASSED_ON: leave(s, rec); return;
    case REC_CALL:
        leave(s, rec);
        call_row(s, rec, len, 0, 0);
        return;
    case REC_PROCESS: case REC_MODULE_INFO: case REC_DROPPED: case REC_MODULE: {
        int what = type == REC_PROCESS ? RQ_PROCESS : type == REC_MODULE_INFO ? RQ_MODULE_INFO
                   : type == REC_DROPPED ? RQ_DROPPED : RQ_MODULE;
        if (type == REC_DROPPED) records_lost(s, rec + 12);
        if (!header_row(s, what, rec, len, offset, &number, &o, &on)) return;
        if (type == REC_MODULE) {
            if (number != UINT64_MAX) module_named(s, le32(rec + 12), (uint32_t)number, o, on);
        }
        return;
    }
    }
    char m[96];
    snprintf(m, sizeof m, "byte %llu: record of unknown type %d", (unsigned long long)offset, type);
    warning(s, m, NULL);
}

/* ---- reading ---- */

typedef struct { int fd; uint8_t *p; size_t cap, n; uint64_t at; int oom; } win_t;
/* Bytes read at a time: small enough that what the kernel copies in is still in the CPU's
 * cache when it is decoded (4 MiB windows made the copy a third of the run). */
#define WINDOW (256u << 10)

/* Makes bytes [pos, pos + k) of the file available; NULL when the file ends first. */
static const uint8_t *window(win_t *w, uint64_t pos, size_t k) {
    if (pos >= w->at && pos + k <= w->at + w->n) return w->p + (pos - w->at);
    size_t want = k > WINDOW ? k : WINDOW;
    if (want > w->cap) {
        uint8_t *p = realloc(w->p, want);
        if (!p) { w->oom = 1; return NULL; }
        w->p = p; w->cap = want;
    }
    /* keep what is already here from pos on */
    size_t kept = 0;
    if (pos >= w->at && pos < w->at + w->n) {
        kept = (size_t)(w->at + w->n - pos);
        memmove(w->p, w->p + (pos - w->at), kept);
    }
    w->at = pos; w->n = kept;
    while (w->n < want) {
        ssize_t r = pread(w->fd, w->p + w->n, want - w->n, (off_t)(pos + w->n));
        if (r < 0) { if (errno == EINTR) continue; return NULL; }
        if (r == 0) break;
        w->n += (size_t)r;
    }
    return w->n >= k ? w->p : NULL;
}

static const uint8_t MAGIC[4] = {'P', '1', '1', 'R'};
static const uint8_t BIG_MARK[8] = {1, 2, 3, 4, 5, 6, 7, 8};

/* How the file is framed, checked before anything is written: 1 the records chain from start
 * to the end (then *end = size), 2 they chain to a tail too short for a header, 3 to a record
 * the file ends inside (in which no record marker lies: the Python reader would look for a
 * record there), 0 anything else (a damaged stretch, a big-endian writer: Python reads it). */
static int scan(const struct p11j_conf *c, win_t *w, uint64_t size, uint64_t *end,
                uint64_t *claimed) {
    uint64_t pos = 0;
    for (;;) {
        if (pos == size) { *end = pos; return 1; }
        if (size - pos < P11_RECORD_SIZE) { *end = pos; return 2; }
        const uint8_t *h = window(w, pos, P11_RECORD_SIZE);
        if (!h || memcmp(h, MAGIC, 4)) return 0;
        if (h[8] == REC_PROCESS && !memcmp(h + 40, BIG_MARK, 8)) return 0;
        uint32_t len = le32(h + 4);
        if (len < P11_RECORD_SIZE || len > c->max_record) return 0;
        if (pos + len == size) { *end = size; return 1; }
        if (pos + len > size) {
            *end = pos; *claimed = len;
            uint64_t from = pos + P11_RECORD_SIZE;
            const uint8_t *t = window(w, from, (size_t)(size - from));
            if (!t) return 0;
            for (size_t i = 0; i + 4 <= size - from; i++)
                if (!memcmp(t + i, MAGIC, 4)) return 0;
            return 3;
        }
        if (size - (pos + len) < 4) return 0;
        const uint8_t *nx = window(w, pos + len, 4);
        if (!nx || memcmp(nx, MAGIC, 4)) return 0;
        pos += len;
    }
}

static void cleanup(st_t *s) {
    for (size_t i = 0; i < CACHE_BUCKETS; i++)
        for (cached *e = s->cache[i], *n; e; e = n) { n = e->next; free(e); }
    for (size_t i = 0; i < MEMO_BUCKETS; i++)
        for (memo *m = s->memo[i], *n; m; m = n) { n = m->next; free(m); }
    while (s->whead) {
        for (child *c = s->whead->first, *n; c; c = n) { n = c->next; free(c); }
        waiting_drop(s, s->whead);
    }
    for (module *m = s->moldest, *n; m; m = n) { n = m->newer; free(m->s); free(m); }
    while (s->ohead) {
        open_key *k = s->ohead;
        for (size_t i = 0; i < k->count; i++) free(k->stack[i].rec);
        key_drop(s, k);
    }
    free(s->out.p);
    free(s->scratch.p);
}

/* The trace in fd from its first byte to size, as JSON Lines through c->write. Returns 0 done,
 * 1 not framed cleanly (nothing written: read it in Python), -1 a callback failed (Python
 * has the reason), -2 out of memory, -3 the file could not be read to the end (it shrank, or a
 * read failed). */
API int p11j_run(const struct p11j_conf *c, int fd, uint64_t size) {
    win_t w = {fd, NULL, 0, 0, 0, 0};
    uint64_t end = 0, claimed = 0;
    int framing = scan(c, &w, size, &end, &claimed);
    if (!framing) { free(w.p); return 1; }
    st_t *s = calloc(1, sizeof *s);
    if (!s) { free(w.p); return -2; }
    s->c = c;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    s->seed = mix((uint64_t)now.tv_nsec ^ ((uint64_t)now.tv_sec << 32) ^ (uint64_t)(uintptr_t)s);
    int rc = 0;
    uint64_t pos = 0;
    while (pos < end && !s->failed) {
        const uint8_t *h = window(&w, pos, P11_RECORD_SIZE);
        if (!h) { rc = w.oom ? -2 : -3; break; }
        uint32_t len = le32(h + 4);
        const uint8_t *rec = window(&w, pos, len);
        if (!rec) { rc = w.oom ? -2 : -3; break; }
        one(s, rec, len, pos);
        pos += len;
        if (s->out.n >= FLUSH_AT && !flush(s)) break;
    }
    if (!rc && !s->failed) {
        char m[160];
        if (framing == 3) {
            snprintf(m, sizeof m, "byte %llu: file ends inside a record (%llu of %llu bytes)",
                     (unsigned long long)end, (unsigned long long)(size - end),
                     (unsigned long long)claimed);
            warning(s, m, "truncated");
        }
        if (framing == 2) {
            snprintf(m, sizeof m, "byte %llu: file ends inside a record header (%llu bytes)",
                     (unsigned long long)end, (unsigned long long)(size - end));
            warning(s, m, "truncated");
        }
        /* entries never closed, in the order they were entered */
        while (s->ohead && !s->failed) {
            entry_row(s, key_take(s, s->ohead, 0));
            if (s->out.n >= FLUSH_AT && !flush(s)) break;
        }
        /* PC/SC calls whose parent never came */
        while (s->whead && !s->failed) {
            waiting *wt = s->whead;
            char m[160];
            snprintf(m, sizeof m, "process %u: call #%llu never returned (the client stopped "
                     "inside it)", wt->pid, (unsigned long long)wt->number);
            warning(s, m, NULL);
            emit_children(s, wt, -1);
            if (s->out.n >= FLUSH_AT && !flush(s)) break;
        }
        if (!s->failed) flush(s);
    }
    if (!rc && s->failed) rc = (s->out.oom || s->scratch.oom) ? -2 : -1;
    cleanup(s);
    free(s);
    free(w.p);
    return rc;
}
