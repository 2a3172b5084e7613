/* The compiled decoder's interface (p11json.c), declared once: the build puts it ahead of the
 * C, and its Python side (fastjson.py) reads it with cffi, codes included. Plain declarations
 * only. */

/* lookup's questions: the name of a value in a family, of a PKCS#11 or PC/SC return code, of
 * an instruction (CLA, INS); an attribute type's value mode (AV_) and family; what follows
 * the length in a masked value's row; a time (us) or a duration (ns) as a float */
enum p11j_lookup { LK_NAME = 1, LK_RV = 2, LK_PCSC_RV = 3, LK_INS = 4, LK_ATTR = 5,
                   LK_MASKED = 6, LK_TIME = 7, LK_DURATION = 8 };
/* record's questions: a PC/SC record (answer 0: "apdu" or "pcsc" and its row after "parent",
 * number its parent; 1: a warning row, it is damaged); the row of a process, module info,
 * module or dropped record; after RQ_MODULE, the module's ',"module":...' and its index in
 * number (~0: none) */
enum p11j_record { RQ_PCSC = 1, RQ_PROCESS = 2, RQ_MODULE_INFO = 3, RQ_MODULE = 4,
                   RQ_MODULE_PATH = 5, RQ_DROPPED = 6 };
/* How a parameter's field renders (struct p11j_param's mode): a ULONG (bits 0-3) as
 * values.scalar() does, a BYTES payload (bits 4-7), a ULONG_ARRAY (bits 8-11), and flags */
enum p11j_scalar { SM_INT = 0, SM_UNAVAIL = 1, SM_BOOL = 2, SM_PTR = 3, SM_NAMED = 4 };
enum p11j_bytes { BM_HEX = 0, BM_CALLBACK = 1, BM_READER_STATES = 2, BM_MULTISZ = 3 };
enum p11j_array { AM_INTS = 0, AM_NAMED = 1 };
#define MODE_INOUT 4096
#define MODE_TWO_CALL 8192
/* An attribute value's mode (values.attribute_form), LK_ATTR's answer's first byte */
enum p11j_value { AV_HEX = 0, AV_BOOL = 1, AV_INT = 2, AV_NAMED = 3, AV_STRING = 4,
                  AV_DATE = 5, AV_MECHS = 6, AV_INTS = 7 };

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
    uint32_t max_modules;  /* (pid, module index) pairs remembered (modules.py) */
};

int p11j_run(const struct p11j_conf *c, int fd, uint64_t size);
