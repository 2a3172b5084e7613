/* The compiled decoder's interface (p11json.c), declared once: the build puts it ahead of the
 * C, and its Python side (fastjson.py) reads it with cffi. Plain declarations only. */

struct p11j_param {
    uint32_t mode;     /* how a field renders: p11json.c's SM_, BM_, AM_ and MODE_ bits */
    uint32_t family;   /* the family names are looked up in */
    uint32_t name_off, name_len;  /* the parameter's name, JSON-quoted, in names */
};

struct p11j_func {
    uint32_t name_off, name_len;  /* the function's name, JSON-quoted */
    uint32_t first, count;        /* its parameters in params */
};

struct p11j_conf {
    /* Python's answers (fastjson.py): a name, a field, a record; and where the rows go */
    int (*lookup)(int what, uint64_t a, uint64_t b, const char **out, size_t *n);
    int (*arg)(int pcsc, int fidx, int param, int kind, uint64_t declared,
               const uint8_t *data, size_t n, const char **out, size_t *outn);
    int (*record)(int what, const uint8_t *rec, size_t n, int64_t seq, uint64_t offset,
                  uint64_t *number, const char **out, size_t *outn);
    int (*write)(const char *p, size_t n);
    const struct p11j_func *funcs;   /* PKCS#11 functions by index */
    uint32_t nfuncs;
    const struct p11j_func *pfuncs;  /* PC/SC functions by index */
    uint32_t npfuncs;
    const struct p11j_param *params;
    const char *names;
    uint32_t ckm_family, cka_family;
    uint32_t max_record, max_fields, field_limit, max_open;
    uint64_t max_bytes;
    uint32_t parent_param, transmit;
    uint64_t max_waiting;  /* bytes of PC/SC records held for calls not returned yet */
};

int p11j_run(const struct p11j_conf *c, int fd, uint64_t size);
