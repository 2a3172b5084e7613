/*
 * The preloaded spy (libp11spy-preload.so, used by `p11spy run`): wraps every PKCS#11 module a
 * client loads and records the PC/SC calls under the PKCS#11 call that made them.
 *
 * Two doors in, both without touching the client's configuration:
 *  - dlsym: clients find a module's C_GetFunctionList / C_GetInterfaceList / C_GetInterface
 *    by dlsym, and OpenSC finds libpcsclite's SCard functions the same way; our dlsym hands
 *    back wrappers and keeps the real addresses;
 *  - the SCard symbols themselves, for programs linked to libpcsclite (opensc-tool, pcsc_scan).
 * A client that never loads a module or talks to a reader leaves no trace file.
 *
 * Under `p11spy run` the spy reports to run instead of the client's stderr (preload_report.c,
 * before this file), and never wraps a p11spy shim nor the modules a shim loads: the shim
 * records those calls.
 */

#include <link.h>
#include <sched.h>

typedef long P11_LONG;
typedef unsigned long P11_DWORD;
typedef struct { unsigned long dwProtocol, cbPciLength; } P11_IO_REQUEST;
typedef struct {
    const char *szReader;
    void *pvUserData;
    unsigned long dwCurrentState, dwEventState, cbAtr;
    unsigned char rgbAtr[33];
} P11_READERSTATE;
#define P11_AUTOALLOCATE ((P11_DWORD)-1)

static void *(*p11_real_dlsym)(void *, const char *);
static void *g_sc_real[P11_SC_N];
static unsigned long g_pin_ctl[4];     /* control codes of the PIN-pad features seen */
static int g_npin_ctl;
static char g_wrap[4096];              /* P11SPY_WRAP: colon-separated modules to wrap */
static Dl_info g_self;
static int (*p11_real_dlclose)(void *);

/* The version dlsym and dlclose had before glibc 2.34 moved them into libc: the architecture's
 * first glibc version, so a shim built against an old glibc finds the real ones on any glibc. */
#if defined(__x86_64__)
#define P11_LIBDL_OLD "GLIBC_2.2.5"
#elif defined(__s390x__)
#define P11_LIBDL_OLD "GLIBC_2.2"
#elif defined(__aarch64__) || (defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
#define P11_LIBDL_OLD "GLIBC_2.17"
#else
#error "p11spy: name this architecture's first glibc version (P11_LIBDL_OLD)"
#endif

static void p11_resolve_real_dlsym(void)
{
    if (p11_real_dlsym && p11_real_dlclose) return;
    p11_real_dlsym = (void *(*)(void *, const char *))dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
    if (!p11_real_dlsym)
        p11_real_dlsym = (void *(*)(void *, const char *))dlvsym(RTLD_NEXT, "dlsym", P11_LIBDL_OLD);
    p11_real_dlclose = (int (*)(void *))dlvsym(RTLD_NEXT, "dlclose", "GLIBC_2.34");
    if (!p11_real_dlclose)
        p11_real_dlclose = (int (*)(void *))dlvsym(RTLD_NEXT, "dlclose", P11_LIBDL_OLD);
}

static void p11_resolve_real_exec(void)
{
    p11_resolve_real_dlsym();
    if (!p11_real_dlsym) return;
    p11_real_execve = (int (*)(const char *, char *const[], char *const[]))p11_real_dlsym(
        RTLD_NEXT, "execve");
    p11_real_execvpe = (int (*)(const char *, char *const[], char *const[]))p11_real_dlsym(
        RTLD_NEXT, "execvpe");
    p11_real_fexecve =
        (int (*)(int, char *const[], char *const[]))p11_real_dlsym(RTLD_NEXT, "fexecve");
    static const char *const spawn[2] = {"posix_spawn", "posix_spawnp"};
    for (int i = 0; i < 2; i++)
        p11_real_spawn[i] = (int (*)(pid_t *, const char *, const void *, const void *,
                                     char *const[], char *const[]))p11_real_dlsym(RTLD_NEXT,
                                                                                  spawn[i]);
}

/* dlsym(RTLD_NEXT, ...) means "after the caller", and the caller is no longer the real dlsym's
 * caller once we stand between them: search the objects loaded after the caller's. */
static void *p11_dlsym_next(void *caller, const char *name)
{
    Dl_info info;
    struct link_map *lm = NULL;
    if (!dladdr1(caller, &info, (void **)&lm, RTLD_DL_LINKMAP) || !lm)
        return p11_real_dlsym(RTLD_NEXT, name);
    for (struct link_map *l = lm->l_next; l; l = l->l_next) {
        void *h = dlopen(l->l_name[0] ? l->l_name : NULL, RTLD_LAZY | RTLD_NOLOAD);
        if (!h) continue;
        void *p = p11_real_dlsym(h, name);
        p11_real_dlclose(h);
        if (p) return p;
    }
    return NULL;
}

/* The trace file is opened when there is first something to record (a module to wrap or a
 * reader used), so a client that loads no module of interest leaves no file behind.
 * State: 0 not yet, 1 being opened, 2 open, 3 failed (said once on stderr). */
static int g_open_state;

static int p11_trace_open(void)
{
    int st = __atomic_load_n(&g_open_state, __ATOMIC_ACQUIRE);
    if (st == 2) return 1;
    if (st == 0) {
        int expected = 0;
        if (__atomic_compare_exchange_n(&g_open_state, &expected, 1, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            int ok = p11_open_output();
            if (ok) {
                p11_write_header(0);
                p11_status("trace", g_cfg.output);
            }
            __atomic_store_n(&g_open_state, ok ? 2 : 3, __ATOMIC_RELEASE);
            return ok;
        }
    }
    while ((st = __atomic_load_n(&g_open_state, __ATOMIC_ACQUIRE)) == 1) sched_yield();
    return st == 2;
}

/* A fork while another thread was opening the trace must not leave the child waiting. */
static void p11_preload_atfork_child(void)
{
    if (__atomic_load_n(&g_open_state, __ATOMIC_ACQUIRE) == 1) g_open_state = g_fd >= 0 ? 2 : 0;
    p11_atfork_child();
    if (g_fd >= 0) p11_status("trace", g_cfg.output);
}

static int p11_wanted(const char *path)
{
    if (!g_wrap[0]) return 1;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char resolved[PATH_MAX];
    const char *real = realpath(path, resolved) ? resolved : path;
    char list[sizeof g_wrap];
    snprintf(list, sizeof list, "%s", g_wrap);
    for (char *save = NULL, *tok = strtok_r(list, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
        char rtok[PATH_MAX];
        const char *t = strchr(tok, '/') && realpath(tok, rtok) ? rtok : tok;
        if (strcmp(t, real) == 0 || strcmp(t, path) == 0 || strcmp(t, base) == 0) return 1;
    }
    return 0;
}

/* Whether the object at base (named fname) is one of our shims: it exports the shim's marker.
 * The answers are kept, so the object is opened once (base and name together name it). */
static int p11_is_shim(void *base, const char *fname)
{
    static struct { void *base; char name[128]; int shim; } seen[16];
    static int nseen;
    size_t len = strlen(fname);
    const char *tail = len < sizeof seen[0].name ? fname : fname + len - (sizeof seen[0].name - 1);
    int shim = 0, found = 0;
    pthread_mutex_lock(&g_ctx_lock);
    for (int i = 0; i < nseen && !found; i++)
        if (seen[i].base == base && strcmp(seen[i].name, tail) == 0) {
            found = 1;
            shim = seen[i].shim;
        }
    pthread_mutex_unlock(&g_ctx_lock);
    if (found) return shim;
    void *h = dlopen(fname, RTLD_LAZY | RTLD_NOLOAD);
    if (h) {
        /* Only the object's own marker counts: dlsym on a handle also searches its needs. */
        void *mark = p11_real_dlsym(h, "p11spy_shim_version");
        Dl_info mi;
        shim = mark && dladdr(mark, &mi) && mi.dli_fbase == base;
        p11_real_dlclose(h);
    }
    dlerror(); /* our lookup must not leave an error for the client's next dlerror() */
    pthread_mutex_lock(&g_ctx_lock);
    if (nseen < (int)(sizeof seen / sizeof seen[0])) {
        seen[nseen].base = base;
        snprintf(seen[nseen].name, sizeof seen[nseen].name, "%s", tail);
        seen[nseen++].shim = shim;
    }
    pthread_mutex_unlock(&g_ctx_lock);
    return shim;
}

/* Calls through a shim are the shim's to record: the shim is not wrapped, nor is a module that
 * the shim itself looks up (caller), else each call would be recorded two or three times.
 * run is told where the shim's trace goes (the same pattern, so the same file name). */
static int p11_shim_involved(void *caller, const Dl_info *mod)
{
    Dl_info ci;
    if (caller && dladdr(caller, &ci) && ci.dli_fname && ci.dli_fbase != g_self.dli_fbase &&
        p11_is_shim(ci.dli_fbase, ci.dli_fname))
        return 1;
    if (!p11_is_shim(mod->dli_fbase, mod->dli_fname)) return 0;
    char out[PATH_MAX];
    if (g_status[0] && p11_expand(g_cfg.output_pattern, out, sizeof out)) {
        p11_status("shim", mod->dli_fname);
        p11_status("trace", out);
    }
    return 1;
}

static void p11_module_entries(struct p11_module *m, void *handle)
{
    m->get_function_list = (CK_RV(*)(void *))p11_real_dlsym(handle, "C_GetFunctionList");
    m->get_interface_list =
        (CK_RV(*)(CK_INTERFACE *, CK_ULONG *))p11_real_dlsym(handle, "C_GetInterfaceList");
    m->get_interface = (CK_RV(*)(CK_UTF8CHAR *, CK_VERSION *, CK_INTERFACE **,
                                 CK_FLAGS))p11_real_dlsym(handle, "C_GetInterface");
}

/* The module that defines sym, registered on first sight (NULL: not one to wrap). A module is
 * known by its file and where it is loaded: another module later loaded at the address of an
 * unloaded one is a module of its own, and a module loaded again keeps its index. */
static struct p11_module *p11_module_of(void *handle, void *sym, void *caller)
{
    Dl_info info;
    if (!dladdr(sym, &info) || !info.dli_fname) return NULL;
    if (info.dli_fbase == g_self.dli_fbase) return NULL; /* our own entry points */
    struct p11_module *m = NULL, *again = NULL;
    pthread_mutex_lock(&g_ctx_lock);
    for (int i = 0; i < g_nmods; i++) {
        if (strcmp(g_mods[i].path, info.dli_fname) != 0) continue;
        if (g_mods[i].handle == info.dli_fbase) m = &g_mods[i];
        else if (!g_mods[i].handle) again = &g_mods[i];
    }
    if (!m && again) { /* unloaded (dlclose), now loaded again */
        again->handle = info.dli_fbase;
        p11_module_entries(again, handle);
        m = again;
    }
    pthread_mutex_unlock(&g_ctx_lock);
    if (m) return m;
    if (!p11_wanted(info.dli_fname)) {
        static void *said;
        if (said != info.dli_fbase) p11_status("skipped", info.dli_fname);
        said = info.dli_fbase;
        return NULL;
    }
    if (p11_shim_involved(caller, &info)) return NULL;
    pthread_mutex_lock(&g_ctx_lock);
    if (g_nmods < P11_MAX_MODULES) {
        m = &g_mods[g_nmods];
        m->index = g_nmods;
        m->handle = info.dli_fbase; /* identifies the object; never passed to dlclose */
        snprintf(m->path, sizeof m->path, "%s", info.dli_fname);
        p11_module_entries(m, handle);
        g_entry[g_nmods].mod = m;
        __atomic_store_n(&g_nmods, g_nmods + 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&g_ctx_lock);
    if (!m) return NULL;
    p11_status_env();
    if (p11_trace_open()) p11_announce_module(m);
    return m;
}

/* After a dlclose: forget the modules no longer loaded, their function lists and the PC/SC
 * functions, so that whatever is loaded at their addresses next is looked at afresh (and no
 * wrapper calls into an unloaded library). */
static void p11_forget_unloaded(void)
{
    pthread_mutex_lock(&g_ctx_lock);
    for (int i = 0; i < g_nmods; i++) {
        struct p11_module *m = &g_mods[i];
        Dl_info info;
        if (!m->handle || (dladdr(m->handle, &info) && info.dli_fbase == m->handle &&
                           info.dli_fname && strcmp(info.dli_fname, m->path) == 0))
            continue;
        m->handle = NULL;
        for (int k = 0; k < P11_MAX_CTX; k++) {
            if (!g_ctx[k].used || g_ctx[k].mod != m) continue;
            int kept = 0;
            for (int j = 0; j < g_nifaces; j++)
                if (g_ifaces[j].pFunctionList != (void *)&g_ctx[k].ours)
                    g_ifaces[kept++] = g_ifaces[j];
            g_nifaces = kept;
            g_ctx[k].used = 0;
        }
    }
    pthread_mutex_unlock(&g_ctx_lock);
    /* The same for libpcsclite, which OpenSC loads and unloads with itself. */
    for (int i = 0; i < P11_SC_N; i++) {
        void *p = __atomic_load_n(&g_sc_real[i], __ATOMIC_ACQUIRE);
        Dl_info info;
        if (p && !(dladdr(p, &info) && info.dli_sname &&
                   strcmp(info.dli_sname, p11_sc_names[i]) == 0))
            __atomic_store_n(&g_sc_real[i], NULL, __ATOMIC_RELEASE);
    }
}

P11_EXPORT int dlclose(void *handle)
{
    p11_resolve_real_dlsym();
    if (!p11_real_dlclose) return -1;
    int rv = p11_real_dlclose(handle);
    if (rv == 0 && __atomic_load_n(&g_nmods, __ATOMIC_ACQUIRE)) p11_forget_unloaded();
    return rv;
}

static void *p11_entry(int module, int which);   /* generated: the module's entry points */

static void *p11_intercept_pkcs11(void *handle, const char *name, void *sym, void *caller)
{
    static const char *const entries[3] = {"C_GetFunctionList", "C_GetInterfaceList",
                                           "C_GetInterface"};
    int which = -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(name, entries[i]) == 0) which = i;
    if (which < 0 || !p11_ready()) return sym;
    /* dlsym on our own handle or on the default scope may answer with a module's symbol: the
     * module is found from the address, whatever the handle was. */
    struct p11_module *m = p11_module_of(handle, sym, caller);
    if (!m) return sym;
    /* The entry point found must be the module's own one we recorded, else pass it on. */
    void *own = which == 0 ? (void *)m->get_function_list
                : which == 1 ? (void *)m->get_interface_list : (void *)m->get_interface;
    if (own != sym) {
        if (which == 0 && !m->get_function_list) m->get_function_list = (CK_RV(*)(void *))sym;
        else if (own) return sym;
    }
    dlerror(); /* our own lookups of absent entry points must not leave an error pending */
    return p11_entry(m->index, which);
}

static void *p11_sc_wrapper(int i);   /* below: our wrapper for SCard function i */

static void *p11_intercept_scard(const char *name, void *sym)
{
    for (int i = 0; i < P11_SC_N; i++) {
        if (strcmp(name, p11_sc_names[i]) != 0) continue;
        Dl_info info;
        if (dladdr(sym, &info) && info.dli_fbase == g_self.dli_fbase) return sym;
        if (!g_sc_real[i]) __atomic_store_n(&g_sc_real[i], sym, __ATOMIC_RELEASE);
        return p11_sc_wrapper(i);
    }
    return sym;
}

P11_EXPORT void *dlsym(void *handle, const char *name)
{
    void *caller = __builtin_return_address(0);
    p11_resolve_real_dlsym();
    if (!p11_real_dlsym) return NULL;
    void *sym = handle == RTLD_NEXT ? p11_dlsym_next(caller, name) : p11_real_dlsym(handle, name);
    if (!sym) return sym;
    if (name[0] == 'C' && name[1] == '_') return p11_intercept_pkcs11(handle, name, sym, caller);
    if (name[0] == 'S' && strncmp(name, "SCard", 5) == 0) return p11_intercept_scard(name, sym);
    return sym;
}

/* ---- PC/SC records ----------------------------------------------------------------------- */

static void *p11_sc_real(int i)
{
    void *p = __atomic_load_n(&g_sc_real[i], __ATOMIC_ACQUIRE);
    if (!p) {
        p11_resolve_real_dlsym();
        p = p11_real_dlsym ? p11_real_dlsym(RTLD_NEXT, p11_sc_names[i]) : NULL;
        if (p) __atomic_store_n(&g_sc_real[i], p, __ATOMIC_RELEASE);
    }
    return p;
}

static int p11_sc_begin(struct p11_rec *r, int fn)
{
    if (!p11_ready()) return 0;
    uint64_t parent = t_tls.call_seq;
    /* With a module filter, only the PC/SC calls made under a traced call belong to it. */
    if (g_wrap[0] && !parent) return 0;
    if (!p11_trace_open()) return 0;
    p11_rec_begin(r, (unsigned)fn, 0xff);
    r->type = REC_PCSC;
    p11_ulong(r, P11_SC_PARENT, PH_IN, parent);
    return 1;
}

static void p11_sc_finish(struct p11_rec *r, P11_LONG rv) { p11_rec_finish(r, (CK_RV)rv); }

/* Whether an APDU carries a PIN in clear: a command with data that facts/iso7816.py says
 * sends one (p11_pin_in_clear is generated from it, as the redactors read it). */
static int p11_apdu_has_pin(const unsigned char *a, size_t n)
{
    return a && n > 5 && p11_pin_in_clear(a[0], a[1]);
}

/* An APDU with its data masked: header and trailer kept, the data as length and class. */
static void p11_apdu_masked(struct p11_rec *r, int param, const unsigned char *a, size_t n)
{
    size_t h = 5, lc = a[4];
    if (a[4] == 0 && n >= 7) {
        h = 7;
        lc = ((size_t)a[5] << 8) | a[6];
    }
    if (h + lc > n) lc = n - h;
    size_t at = p11_field_begin(r, param, PH_IN, K_APDU_MASKED, 0);
    unsigned char hl = (unsigned char)h, tl = (unsigned char)(n - h - lc);
    p11_put(r, &hl, 1);
    p11_put(r, a, h);
    p11_masked_payload(r, a + h, lc);
    p11_put(r, &tl, 1);
    p11_put(r, a + h + lc, tl);
    p11_field_end(r, at);
}

static int p11_pin_control(unsigned long code)
{
    for (int i = 0; i < g_npin_ctl; i++)
        if (g_pin_ctl[i] == code) return 1;
    return 0;
}

/* GET_FEATURE_REQUEST answers tag, length 4, big-endian control code, for each feature. */
static void p11_learn_features(const unsigned char *p, unsigned long n)
{
    for (unsigned long i = 0; i + 6 <= n; i += 6) {
        if (p[i + 1] != 4) break;
        if (p[i] != P11_FEATURE_VERIFY_PIN_DIRECT && p[i] != P11_FEATURE_MODIFY_PIN_DIRECT)
            continue;
        unsigned long code = ((unsigned long)p[i + 2] << 24) | ((unsigned long)p[i + 3] << 16) |
                             ((unsigned long)p[i + 4] << 8) | p[i + 5];
        if (!p11_pin_control(code) && g_npin_ctl < 4) g_pin_ctl[g_npin_ctl++] = code;
    }
}

/* Reader states as u64 current, u64 event, u8 ATR length, ATR, u8 name length, name. */
static void p11_reader_states(struct p11_rec *r, int param, int phase, const P11_READERSTATE *s,
                              P11_DWORD n)
{
    if (!s) {
        p11_null(r, param, phase);
        return;
    }
    size_t at = p11_field_begin(r, param, phase, K_BYTES, 0);
    for (P11_DWORD i = 0; i < n && i < 64; i++) {
        uint64_t cur = s[i].dwCurrentState, ev = s[i].dwEventState;
        unsigned char al = (unsigned char)(s[i].cbAtr <= 33 ? s[i].cbAtr : 0);
        const char *name = s[i].szReader ? s[i].szReader : "";
        unsigned char nl = (unsigned char)strnlen(name, 255);
        p11_put_u64(r, cur);
        p11_put_u64(r, ev);
        p11_put(r, &al, 1);
        p11_put(r, s[i].rgbAtr, al);
        p11_put(r, &nl, 1);
        p11_put(r, name, nl);
    }
    p11_field_end(r, at);
}

/* An output buffer that pcsc-lite may have allocated itself (SCARD_AUTOALLOCATE). */
static void p11_sc_out(struct p11_rec *r, int param, P11_LONG rv, const void *buf,
                       const P11_DWORD *plen, P11_DWORD room)
{
    if (rv != 0 || !buf || !plen) return;
    if (room == P11_AUTOALLOCATE) {
        const void *p = *(const void *const *)buf;
        if (p && *plen <= g_cfg.max_buffer) p11_bytes_out(r, param, p, *plen);
        return;
    }
    if (*plen <= room) p11_bytes_out(r, param, buf, *plen);
}

#define SC_REAL(type, i) ((type)p11_sc_real(i))

P11_EXPORT P11_LONG SCardEstablishContext(P11_DWORD dwScope, const void *r1, const void *r2,
                                          P11_LONG *phContext)
{
    typedef P11_LONG (*f_t)(P11_DWORD, const void *, const void *, P11_LONG *);
    f_t real = SC_REAL(f_t, P11_SC_SCardEstablishContext);
    if (!real) return (P11_LONG)0x80100001L; /* SCARD_F_INTERNAL_ERROR: no pcsc-lite */
    struct p11_rec r;
    if (!p11_sc_begin(&r, P11_SC_SCardEstablishContext)) return real(dwScope, r1, r2, phContext);
    p11_ulong(&r, 0, PH_IN, dwScope);
    p11_rec_call_start(&r);
    P11_LONG rv = real(dwScope, r1, r2, phContext);
    p11_rec_call_end(&r);
    if (rv == 0 && phContext) p11_ulong(&r, 3, PH_OUT, (CK_ULONG)*phContext);
    p11_sc_finish(&r, rv);
    return rv;
}

/* Calls whose parameters are all plain numbers. */
#define SC_SIMPLE1(NAME, T0)                                                                  \
    P11_EXPORT P11_LONG NAME(T0 a0)                                                           \
    {                                                                                         \
        typedef P11_LONG (*f_t)(T0);                                                          \
        f_t real = SC_REAL(f_t, P11_SC_##NAME);                                               \
        if (!real) return (P11_LONG)0x80100001L;                                              \
        struct p11_rec r;                                                                     \
        if (!p11_sc_begin(&r, P11_SC_##NAME)) return real(a0);                                \
        p11_ulong(&r, 0, PH_IN, (CK_ULONG)a0);                                                \
        p11_rec_call_start(&r);                                                               \
        P11_LONG rv = real(a0);                                                               \
        p11_rec_call_end(&r);                                                                 \
        p11_sc_finish(&r, rv);                                                                \
        return rv;                                                                            \
    }
#define SC_SIMPLE2(NAME, T0, T1)                                                              \
    P11_EXPORT P11_LONG NAME(T0 a0, T1 a1)                                                    \
    {                                                                                         \
        typedef P11_LONG (*f_t)(T0, T1);                                                      \
        f_t real = SC_REAL(f_t, P11_SC_##NAME);                                               \
        if (!real) return (P11_LONG)0x80100001L;                                              \
        struct p11_rec r;                                                                     \
        if (!p11_sc_begin(&r, P11_SC_##NAME)) return real(a0, a1);                            \
        p11_ulong(&r, 0, PH_IN, (CK_ULONG)a0);                                                \
        p11_ulong(&r, 1, PH_IN, (CK_ULONG)a1);                                                \
        p11_rec_call_start(&r);                                                               \
        P11_LONG rv = real(a0, a1);                                                           \
        p11_rec_call_end(&r);                                                                 \
        p11_sc_finish(&r, rv);                                                                \
        return rv;                                                                            \
    }

SC_SIMPLE1(SCardReleaseContext, P11_LONG)
SC_SIMPLE1(SCardBeginTransaction, P11_LONG)
SC_SIMPLE1(SCardCancel, P11_LONG)
SC_SIMPLE2(SCardDisconnect, P11_LONG, P11_DWORD)
SC_SIMPLE2(SCardEndTransaction, P11_LONG, P11_DWORD)

P11_EXPORT P11_LONG SCardListReaders(P11_LONG hContext, const char *mszGroups, char *mszReaders,
                                     P11_DWORD *pcchReaders)
{
    typedef P11_LONG (*f_t)(P11_LONG, const char *, char *, P11_DWORD *);
    f_t real = SC_REAL(f_t, P11_SC_SCardListReaders);
    if (!real) return (P11_LONG)0x80100001L;
    struct p11_rec r;
    if (!p11_sc_begin(&r, P11_SC_SCardListReaders))
        return real(hContext, mszGroups, mszReaders, pcchReaders);
    P11_DWORD room = pcchReaders ? *pcchReaders : 0;
    p11_ulong(&r, 0, PH_IN, (CK_ULONG)hContext);
    p11_cstring(&r, 1, mszGroups);
    p11_out_in(&r, 2, mszReaders);
    if (pcchReaders) p11_ulong(&r, 3, PH_IN, room);
    else p11_null(&r, 3, PH_IN);
    p11_rec_call_start(&r);
    P11_LONG rv = real(hContext, mszGroups, mszReaders, pcchReaders);
    p11_rec_call_end(&r);
    if (pcchReaders && (rv == 0 || rv == (P11_LONG)0x80100008L)) /* SCARD_E_INSUFFICIENT_BUFFER */
        p11_ulong(&r, 3, PH_OUT, *pcchReaders);
    p11_sc_out(&r, 2, rv, mszReaders, pcchReaders, room);
    p11_sc_finish(&r, rv);
    return rv;
}

P11_EXPORT P11_LONG SCardGetStatusChange(P11_LONG hContext, P11_DWORD dwTimeout,
                                         P11_READERSTATE *rgReaderStates, P11_DWORD cReaders)
{
    typedef P11_LONG (*f_t)(P11_LONG, P11_DWORD, P11_READERSTATE *, P11_DWORD);
    f_t real = SC_REAL(f_t, P11_SC_SCardGetStatusChange);
    if (!real) return (P11_LONG)0x80100001L;
    struct p11_rec r;
    if (!p11_sc_begin(&r, P11_SC_SCardGetStatusChange))
        return real(hContext, dwTimeout, rgReaderStates, cReaders);
    p11_ulong(&r, 0, PH_IN, (CK_ULONG)hContext);
    p11_ulong(&r, 1, PH_IN, dwTimeout);
    p11_reader_states(&r, 2, PH_IN, rgReaderStates, cReaders);
    p11_ulong(&r, 3, PH_IN, cReaders);
    p11_rec_call_start(&r);
    P11_LONG rv = real(hContext, dwTimeout, rgReaderStates, cReaders);
    p11_rec_call_end(&r);
    if (rv == 0) p11_reader_states(&r, 2, PH_OUT, rgReaderStates, cReaders);
    p11_sc_finish(&r, rv);
    return rv;
}

P11_EXPORT P11_LONG SCardConnect(P11_LONG hContext, const char *szReader, P11_DWORD dwShareMode,
                                 P11_DWORD dwPreferredProtocols, P11_LONG *phCard,
                                 P11_DWORD *pdwActiveProtocol)
{
    typedef P11_LONG (*f_t)(P11_LONG, const char *, P11_DWORD, P11_DWORD, P11_LONG *,
                            P11_DWORD *);
    f_t real = SC_REAL(f_t, P11_SC_SCardConnect);
    if (!real) return (P11_LONG)0x80100001L;
    struct p11_rec r;
    if (!p11_sc_begin(&r, P11_SC_SCardConnect))
        return real(hContext, szReader, dwShareMode, dwPreferredProtocols, phCard,
                    pdwActiveProtocol);
    p11_ulong(&r, 0, PH_IN, (CK_ULONG)hContext);
    p11_cstring(&r, 1, szReader);
    p11_ulong(&r, 2, PH_IN, dwShareMode);
    p11_ulong(&r, 3, PH_IN, dwPreferredProtocols);
    p11_rec_call_start(&r);
    P11_LONG rv = real(hContext, szReader, dwShareMode, dwPreferredProtocols, phCard,
                       pdwActiveProtocol);
    p11_rec_call_end(&r);
    if (rv == 0 && phCard) p11_ulong(&r, 4, PH_OUT, (CK_ULONG)*phCard);
    if (rv == 0 && pdwActiveProtocol) p11_ulong(&r, 5, PH_OUT, *pdwActiveProtocol);
    p11_sc_finish(&r, rv);
    return rv;
}

P11_EXPORT P11_LONG SCardReconnect(P11_LONG hCard, P11_DWORD dwShareMode,
                                   P11_DWORD dwPreferredProtocols, P11_DWORD dwInitialization,
                                   P11_DWORD *pdwActiveProtocol)
{
    typedef P11_LONG (*f_t)(P11_LONG, P11_DWORD, P11_DWORD, P11_DWORD, P11_DWORD *);
    f_t real = SC_REAL(f_t, P11_SC_SCardReconnect);
    if (!real) return (P11_LONG)0x80100001L;
    struct p11_rec r;
    if (!p11_sc_begin(&r, P11_SC_SCardReconnect))
        return real(hCard, dwShareMode, dwPreferredProtocols, dwInitialization,
                    pdwActiveProtocol);
    p11_ulong(&r, 0, PH_IN, (CK_ULONG)hCard);
    p11_ulong(&r, 1, PH_IN, dwShareMode);
    p11_ulong(&r, 2, PH_IN, dwPreferredProtocols);
    p11_ulong(&r, 3, PH_IN, dwInitialization);
    p11_rec_call_start(&r);
    P11_LONG rv = real(hCard, dwShareMode, dwPreferredProtocols, dwInitialization,
                       pdwActiveProtocol);
    p11_rec_call_end(&r);
    if (rv == 0 && pdwActiveProtocol) p11_ulong(&r, 4, PH_OUT, *pdwActiveProtocol);
    p11_sc_finish(&r, rv);
    return rv;
}

P11_EXPORT P11_LONG SCardStatus(P11_LONG hCard, char *szReaderName, P11_DWORD *pcchReaderLen,
                                P11_DWORD *pdwState, P11_DWORD *pdwProtocol, unsigned char *pbAtr,
                                P11_DWORD *pcbAtrLen)
{
    typedef P11_LONG (*f_t)(P11_LONG, char *, P11_DWORD *, P11_DWORD *, P11_DWORD *,
                            unsigned char *, P11_DWORD *);
    f_t real = SC_REAL(f_t, P11_SC_SCardStatus);
    if (!real) return (P11_LONG)0x80100001L;
    struct p11_rec r;
    if (!p11_sc_begin(&r, P11_SC_SCardStatus))
        return real(hCard, szReaderName, pcchReaderLen, pdwState, pdwProtocol, pbAtr, pcbAtrLen);
    P11_DWORD room_name = pcchReaderLen ? *pcchReaderLen : 0;
    P11_DWORD room_atr = pcbAtrLen ? *pcbAtrLen : 0;
    p11_ulong(&r, 0, PH_IN, (CK_ULONG)hCard);
    p11_rec_call_start(&r);
    P11_LONG rv = real(hCard, szReaderName, pcchReaderLen, pdwState, pdwProtocol, pbAtr,
                       pcbAtrLen);
    p11_rec_call_end(&r);
    p11_sc_out(&r, 1, rv, szReaderName, pcchReaderLen, room_name);
    if (rv == 0 && pdwState) p11_ulong(&r, 3, PH_OUT, *pdwState);
    if (rv == 0 && pdwProtocol) p11_ulong(&r, 4, PH_OUT, *pdwProtocol);
    p11_sc_out(&r, 5, rv, pbAtr, pcbAtrLen, room_atr);
    p11_sc_finish(&r, rv);
    return rv;
}

P11_EXPORT P11_LONG SCardTransmit(P11_LONG hCard, const P11_IO_REQUEST *pioSendPci,
                                  const unsigned char *pbSendBuffer, P11_DWORD cbSendLength,
                                  P11_IO_REQUEST *pioRecvPci, unsigned char *pbRecvBuffer,
                                  P11_DWORD *pcbRecvLength)
{
    typedef P11_LONG (*f_t)(P11_LONG, const P11_IO_REQUEST *, const unsigned char *, P11_DWORD,
                            P11_IO_REQUEST *, unsigned char *, P11_DWORD *);
    f_t real = SC_REAL(f_t, P11_SC_SCardTransmit);
    if (!real) return (P11_LONG)0x80100001L;
    struct p11_rec r;
    if (!p11_sc_begin(&r, P11_SC_SCardTransmit))
        return real(hCard, pioSendPci, pbSendBuffer, cbSendLength, pioRecvPci, pbRecvBuffer,
                    pcbRecvLength);
    P11_DWORD room = pcbRecvLength ? *pcbRecvLength : 0;
    p11_ulong(&r, 0, PH_IN, (CK_ULONG)hCard);
    if (pioSendPci) p11_ulong(&r, 1, PH_IN, pioSendPci->dwProtocol);
    if (!g_cfg.secrets && p11_apdu_has_pin(pbSendBuffer, cbSendLength) &&
        cbSendLength <= g_cfg.max_buffer)
        p11_apdu_masked(&r, 2, pbSendBuffer, cbSendLength);
    else
        p11_bytes_in(&r, 2, pbSendBuffer, cbSendLength);
    p11_ulong(&r, 3, PH_IN, cbSendLength);
    p11_rec_call_start(&r);
    P11_LONG rv = real(hCard, pioSendPci, pbSendBuffer, cbSendLength, pioRecvPci, pbRecvBuffer,
                       pcbRecvLength);
    p11_rec_call_end(&r);
    if (rv == 0 && pcbRecvLength) p11_ulong(&r, 6, PH_OUT, *pcbRecvLength);
    p11_sc_out(&r, 5, rv, pbRecvBuffer, pcbRecvLength, room);
    p11_sc_finish(&r, rv);
    return rv;
}

P11_EXPORT P11_LONG SCardControl(P11_LONG hCard, P11_DWORD dwControlCode, const void *pbSendBuffer,
                                 P11_DWORD cbSendLength, void *pbRecvBuffer,
                                 P11_DWORD cbRecvLength, P11_DWORD *lpBytesReturned)
{
    typedef P11_LONG (*f_t)(P11_LONG, P11_DWORD, const void *, P11_DWORD, void *, P11_DWORD,
                            P11_DWORD *);
    f_t real = SC_REAL(f_t, P11_SC_SCardControl);
    if (!real) return (P11_LONG)0x80100001L;
    struct p11_rec r;
    if (!p11_sc_begin(&r, P11_SC_SCardControl))
        return real(hCard, dwControlCode, pbSendBuffer, cbSendLength, pbRecvBuffer,
                    cbRecvLength, lpBytesReturned);
    p11_ulong(&r, 0, PH_IN, (CK_ULONG)hCard);
    p11_ulong(&r, 1, PH_IN, dwControlCode);
    if (!g_cfg.secrets && pbSendBuffer && p11_pin_control(dwControlCode)) {
        size_t at = p11_field_begin(&r, 2, PH_IN, K_MASKED, 0);
        p11_masked_payload(&r, pbSendBuffer, cbSendLength);
        p11_field_end(&r, at);
    } else {
        p11_bytes_in(&r, 2, pbSendBuffer, cbSendLength);
    }
    p11_ulong(&r, 3, PH_IN, cbSendLength);
    p11_ulong(&r, 5, PH_IN, cbRecvLength);
    p11_rec_call_start(&r);
    P11_LONG rv = real(hCard, dwControlCode, pbSendBuffer, cbSendLength, pbRecvBuffer,
                       cbRecvLength, lpBytesReturned);
    p11_rec_call_end(&r);
    if (rv == 0 && lpBytesReturned && pbRecvBuffer && *lpBytesReturned <= cbRecvLength) {
        p11_ulong(&r, 6, PH_OUT, *lpBytesReturned);
        p11_bytes_out(&r, 4, pbRecvBuffer, *lpBytesReturned);
        if (dwControlCode == P11_CM_IOCTL_GET_FEATURE_REQUEST)
            p11_learn_features(pbRecvBuffer, *lpBytesReturned);
    }
    p11_sc_finish(&r, rv);
    return rv;
}

P11_EXPORT P11_LONG SCardGetAttrib(P11_LONG hCard, P11_DWORD dwAttrId, unsigned char *pbAttr,
                                   P11_DWORD *pcbAttrLen)
{
    typedef P11_LONG (*f_t)(P11_LONG, P11_DWORD, unsigned char *, P11_DWORD *);
    f_t real = SC_REAL(f_t, P11_SC_SCardGetAttrib);
    if (!real) return (P11_LONG)0x80100001L;
    struct p11_rec r;
    if (!p11_sc_begin(&r, P11_SC_SCardGetAttrib)) return real(hCard, dwAttrId, pbAttr, pcbAttrLen);
    P11_DWORD room = pcbAttrLen ? *pcbAttrLen : 0;
    p11_ulong(&r, 0, PH_IN, (CK_ULONG)hCard);
    p11_ulong(&r, 1, PH_IN, dwAttrId);
    p11_rec_call_start(&r);
    P11_LONG rv = real(hCard, dwAttrId, pbAttr, pcbAttrLen);
    p11_rec_call_end(&r);
    if (rv == 0 && pcbAttrLen) p11_ulong(&r, 3, PH_OUT, *pcbAttrLen);
    p11_sc_out(&r, 2, rv, pbAttr, pcbAttrLen, room);
    p11_sc_finish(&r, rv);
    return rv;
}

static void *p11_sc_wrapper(int i)
{
    static void *const w[P11_SC_N] = {
        [P11_SC_SCardEstablishContext] = (void *)SCardEstablishContext,
        [P11_SC_SCardReleaseContext] = (void *)SCardReleaseContext,
        [P11_SC_SCardListReaders] = (void *)SCardListReaders,
        [P11_SC_SCardGetStatusChange] = (void *)SCardGetStatusChange,
        [P11_SC_SCardConnect] = (void *)SCardConnect,
        [P11_SC_SCardReconnect] = (void *)SCardReconnect,
        [P11_SC_SCardDisconnect] = (void *)SCardDisconnect,
        [P11_SC_SCardBeginTransaction] = (void *)SCardBeginTransaction,
        [P11_SC_SCardEndTransaction] = (void *)SCardEndTransaction,
        [P11_SC_SCardStatus] = (void *)SCardStatus,
        [P11_SC_SCardTransmit] = (void *)SCardTransmit,
        [P11_SC_SCardControl] = (void *)SCardControl,
        [P11_SC_SCardCancel] = (void *)SCardCancel,
        [P11_SC_SCardGetAttrib] = (void *)SCardGetAttrib,
    };
    return w[i];
}

/* Preload configuration: no module to name (every module loaded is wrapped, or those in
 * P11SPY_WRAP); the trace is opened by p11_trace_open when the first one shows up. */
static void p11_init(void)
{
    g_pid = getpid();
    dladdr((void *)p11_init, &g_self);
    p11_resolve_real_dlsym();
    const char *wrap = getenv("P11SPY_WRAP");
    snprintf(g_wrap, sizeof g_wrap, "%s", wrap ? wrap : "");
    g_cfg.module[0] = 0;
    if (g_run_over || !p11_load_options()) return;
    pthread_atfork(NULL, NULL, p11_preload_atfork_child);
    g_ready = 1;
}

/* At load, before the program's main(): the settings are read now, while the environment is
 * still the one run gave (a daemon may clear it before it loads a module), and run is told
 * the spy is in this program. */
__attribute__((constructor)) static void p11_preload_start(void)
{
    p11_resolve_real_exec();
    const char *status = secure_getenv("P11SPY_RUN_STATUS");
    if (status && *status && strlen(status) < sizeof g_status) {
        snprintf(g_status, sizeof g_status, "%s", status);
        g_complain_to = p11_status_complaint;
        ssize_t k = readlink("/proc/self/exe", g_exe, sizeof g_exe - 1);
        g_exe[k > 0 ? k : 0] = 0;
        p11_status("loaded", "");
    }
    p11_ready();
}

__attribute__((destructor)) static void p11_preload_end(void)
{
    if (!g_run_over) p11_status_env();
}
