"""Generates the shim's C from the PKCS#11 fact tables.

Every wrapper is written from its function's parameter roles (facts/pkcs11/functions.py), so a
function added to the table is traced without touching C. The hand-written part
(shim_runtime.c) holds what does not depend on a particular function: the record encoders,
configuration, the trace file and the function-list plumbing.
"""

from __future__ import annotations

from pathlib import Path

from p11spy.facts import iso7816, logformat, pcsc
from p11spy.facts.pkcs11 import attributes, constants, functions, structs
from p11spy.facts.pkcs11.cdecl import ctype, function_list_struct
from p11spy.facts.pkcs11.model import Function, Param, Role

SPY = Path(__file__).resolve().parents[1] / "spy"  # the C sources of the shim
MAX_CTX = 16  # wrapped function lists per process (the C's P11_MAX_CTX)
MAX_MODULES = 8  # modules one process may load through the shim (the C's P11_MAX_MODULES)
DEFAULT_OUTPUT = "/tmp/p11spy-%u/%n-%p.p11"

# The three entry points the shim answers itself (they hand out our lists, not the module's).
_SPECIAL_CALLS = {
    "C_GetFunctionList": "p11_do_get_function_list(c->mod, {args})",
    "C_GetInterfaceList": "p11_do_get_interface_list(c->mod, &r, {args})",
    "C_GetInterface": "p11_do_get_interface(c->mod, &r, {args})",
}

# What the shim notes after a call returns: the module's CK_INFO once initialized, and whether
# the client still uses the module (it is unloaded with the shim only when finalized).
_AFTER_CALL = {
    "C_Initialize": "if (rv == CKR_OK_) p11_module_info(c);",
    "C_Finalize": "if (rv == CKR_OK_) __atomic_store_n(&c->mod->live, 0, __ATOMIC_RELEASE);",
}

SECURE_CONF = "/etc/p11spy.conf"  # the only setting a setuid/setgid program takes


def _decl(p: Param) -> str:
    t = ctype(p)
    return f"{t}{'' if t.endswith('*') else ' '}{p.name}"


def _index(fn: Function, name: str | None) -> int:
    assert name is not None
    return [p.name for p in fn.params].index(name)


def _in_capture(fn: Function, i: int, p: Param) -> list[str]:
    r = p.role
    n = p.name
    if r in (Role.HANDLE, Role.ULONG, Role.ENUM, Role.FLAGS, Role.LENGTH):
        return [f"p11_ulong(&r, {i}, PH_IN, (CK_ULONG){n});"]
    if r is Role.BOOL:
        return [f"p11_ulong(&r, {i}, PH_IN, (CK_ULONG){n});"]
    if r is Role.POINTER:
        return [f"p11_ulong(&r, {i}, PH_IN, (CK_ULONG)(uintptr_t){n});"]
    if r is Role.LENGTH_PTR:
        return [f"p11_len_ptr_in(&r, {i}, {n}, &saved_{n});"]
    if r in (Role.BYTES_IN, Role.BYTES_INOUT):
        return [f"p11_bytes_in(&r, {i}, {n}, {p.length});"]
    if r is Role.PIN:
        return [f"p11_pin(&r, {i}, {n}, {p.length});"]
    if r is Role.TEXT_FIXED:
        return [f"p11_text_fixed(&r, {i}, {n}, {p.size});"]
    if r is Role.CSTRING:
        return [f"p11_cstring(&r, {i}, (const char *){n});"]
    if r in (Role.BYTES_OUT, Role.ARRAY_OUT, Role.INTERFACE_LIST_OUT):
        return [f"p11_out_in(&r, {i}, {n});"]
    if r is Role.TEMPLATE_IN:
        hint = 1 if p.kind == "key" else 0
        return [f"p11_template_in(&r, {i}, {n}, {p.length}, {hint});"]
    if r is Role.TEMPLATE_INOUT:
        return [f"p11_template_inout_in(&r, {i}, {n}, {p.length}, &ts_{n});"]
    if r is Role.MECHANISM:
        return [f"p11_mechanism(&r, {i}, {n});"]
    if r is Role.STRUCT_IN:
        return [f"p11_struct(&r, {i}, PH_IN, {n}, sizeof({p.struct}));"]
    if r is Role.INIT_ARGS:
        return [f"p11_struct(&r, {i}, PH_IN, {n}, sizeof(CK_C_INITIALIZE_ARGS));"]
    if r in (Role.STRUCT_OUT, Role.HANDLE_OUT, Role.ULONG_OUT, Role.FUNCTION_LIST_OUT,
             Role.INTERFACE_OUT):
        return [f"p11_out_in(&r, {i}, {n});"]  # a NULL output pointer is worth seeing
    if r is Role.BYTES_OUT_FIXED:
        return []
    raise ValueError(f"{fn.name}.{n}: no capture for role {r}")


_REAL_GAV = "c->real[P11_FN_C_GetAttributeValue]"


def _out_capture(fn: Function, i: int, p: Param, gav: str = _REAL_GAV) -> list[str]:
    """What the shim records of a parameter after the call; gav is the C_GetAttributeValue
    asked for an object's class when a value may be key material."""
    r = p.role
    n = p.name
    if r is Role.LENGTH_PTR:
        return [f"p11_len_ptr_out(&r, {i}, rv, {n});"]
    if r is Role.BYTES_INOUT:
        return [f"p11_bytes_inout_out(&r, {i}, rv, {n}, {p.length});"]
    if r is Role.BYTES_OUT:
        return [f"p11_buf_out(&r, {i}, rv, {n}, {p.length}, saved_{p.length});"]
    if r is Role.BYTES_OUT_FIXED:
        return [f"p11_buf_out_fixed(&r, {i}, rv, {n}, {p.length});"]
    if r is Role.ARRAY_OUT:
        room = p.capacity if p.capacity else f"saved_{p.length}"
        return [f"p11_array_out(&r, {i}, rv, (const CK_ULONG *){n}, {p.length}, {room});"]
    if r is Role.TEMPLATE_INOUT:
        session = next(q.name for q in fn.params if q.kind == "session")
        obj = next(q.name for q in fn.params if q.role is Role.HANDLE and q.kind == "object")
        return [
            f"p11_template_inout_out(&r, {i}, rv, {session}, {obj}, {n}, {p.length}, &ts_{n}, "
            f"{gav});"
        ]
    if r is Role.STRUCT_OUT:
        return [f"p11_struct_out(&r, {i}, rv, {n}, sizeof({p.struct}));"]
    if r in (Role.HANDLE_OUT, Role.ULONG_OUT):
        return [f"p11_ulong_out(&r, {i}, rv, (const CK_ULONG *){n});"]
    if r is Role.FUNCTION_LIST_OUT:
        return [f"if ({n}) p11_struct_out(&r, {i}, rv, *{n}, sizeof(CK_VERSION));"]
    if r is Role.INTERFACE_LIST_OUT:
        return [f"p11_interfaces_out(&r, {i}, rv, {n}, {p.length}, saved_{p.length});"]
    if r is Role.INTERFACE_OUT:
        return [f"if ({n}) {{ CK_ULONG one = 1; p11_interfaces_out(&r, {i}, rv, *{n}, &one, 1); }}"]
    return []


def _record_in(fn: Function, module: str) -> list[str]:
    """A wrapper's locals for what it saves across the call, and its record of the inputs
    (the replay module's functions begin the same way)."""
    body: list[str] = []
    for p in fn.params:
        if p.role is Role.LENGTH_PTR:
            body.append(f"    CK_ULONG saved_{p.name} = 0;")
        if p.role is Role.TEMPLATE_INOUT:
            body.append(f"    struct p11_tmpl_saved ts_{p.name};")
    body.append(f"    p11_rec_begin(&r, P11_FN_{fn.name}, {module});")
    for i, p in enumerate(fn.params):
        body += [f"    {line}" for line in _in_capture(fn, i, p)]
    return body


def _impl(fn: Function) -> str:
    params = fn.params
    sig = ", ".join(["struct p11_ctx *c", *(_decl(p) for p in params)])
    args = ", ".join(p.name for p in params)
    proto = ", ".join(ctype(p) for p in params) or "void"
    body: list[str] = [f"static CK_RV impl_{fn.name}({sig})", "{"]
    if fn.name in _SPECIAL_CALLS:
        call = _SPECIAL_CALLS[fn.name].format(args=args)
    else:
        body.append(f"    typedef CK_RV (*fn_t)({proto});")
        body.append(f"    fn_t real = (fn_t)c->real[P11_FN_{fn.name}];")
        call = f"real({args})"
    body += ["    struct p11_rec r;", "    CK_RV rv;"]
    body += _record_in(fn, "(unsigned)c->mod->index")
    body += ["    p11_rec_call_start(&r);", f"    rv = {call};", "    p11_rec_call_end(&r);"]
    for i, p in enumerate(params):
        body += [f"    {line}" for line in _out_capture(fn, i, p)]
    if fn.name in _AFTER_CALL:
        body.append(f"    {_AFTER_CALL[fn.name]}")
    body += ["    p11_rec_finish(&r, rv);", "    return rv;", "}", ""]
    return "\n".join(body)


def _defines() -> str:
    fams = constants.FAMILIES
    counts = {v: len(functions.functions_in(v)) for v in ("2.40", "3.0", "3.2")}
    lines = [
        f'#define P11SPY_VERSION "{_version()}"',
        f'#define P11SPY_DEFAULT_OUTPUT "{DEFAULT_OUTPUT}"',
        f'#define P11SPY_SECURE_CONF "{SECURE_CONF}"',
        f"#define P11_NFUNCS {len(functions.FUNCTIONS)}",
        f"#define P11_N_2_40 {counts['2.40']}",
        f"#define P11_N_3_0 {counts['3.0']}",
        f"#define P11_N_3_2 {counts['3.2']}",
        f"#define P11_CKA_CLASS 0x{fams['CKA'].value_of('CKA_CLASS'):x}UL",
        f"#define P11_CKA_SENSITIVE 0x{fams['CKA'].value_of('CKA_SENSITIVE'):x}UL",
        "#define P11_CKF_ARRAY_ATTRIBUTE 0x40000000UL",
        f"#define P11_MAX_CTX {MAX_CTX}",
        f"#define P11_MAX_MODULES {MAX_MODULES}",
    ]
    lines += [f"#define {name}_ 0x{value:x}UL" for name, value in fams["CKR"].names.items()]
    lines += [f"#define P11_FN_{fn.name} {fn.index}" for fn in functions.FUNCTIONS]
    return logformat.c_defines() + pcsc.c_defines() + "\n".join(lines) + "\n"


def _attr_secret() -> str:
    """attributes.secrecy as a switch: every listed number, and its answer for the rest."""
    vendor = constants.FAMILIES["CKA"].value_of("CKA_VENDOR_DEFINED")
    lines = ["static int p11_attr_secret(CK_ATTRIBUTE_TYPE t)", "{", "    switch (t) {"]
    lines += [f"    case 0x{a.value:x}UL: return {attributes.secrecy(a.value)}; /* {a.name} */"
              for a in attributes.ATTRIBUTES.values()]
    lines += [f"    default: return t >= 0x{vendor:x}UL ? {attributes.secrecy(vendor | 1)} : "
              f"{attributes.secrecy(vendor - 1)};  /* numbers no table lists */",
              "    }", "}", ""]
    return "\n".join(lines)


def _keyless_class() -> str:
    cko = constants.FAMILIES["CKO"]
    lines = ["static int p11_keyless_class(CK_ULONG cls)", "{", "    switch (cls) {"]
    lines += [f"    case 0x{cko.value_of(n):x}UL: return 1; /* {n} */"
              for n in sorted(attributes.KEYLESS_CLASSES, key=cko.value_of)]
    lines += ["    default: return 0;", "    }", "}", ""]
    return "\n".join(lines)


def _mech_desc() -> str:
    """Mechanism parameter structs whose pointer fields the shim follows."""
    out: list[str] = []
    cases: list[str] = []
    ckm = constants.FAMILIES["CKM"]
    for s in structs.STRUCTS.values():
        if not s.mechanisms:
            continue
        fields = {f.name: f for f in s.fields}
        ptrs = [
            f for f in s.fields
            if f.role in (Role.BYTES_IN, Role.PIN) and f.length and f.size is None
            and fields[f.length].ctype in ("CK_ULONG",)
        ]
        entries = ", ".join(
            f"{{offsetof({s.name}, {f.name}), offsetof({s.name}, {f.length}), "
            f"{1 if f.role is Role.PIN else 0}}}"
            for f in ptrs[:6]
        )
        var = f"p11_desc_{s.name}"
        out.append(
            f"static const struct p11_mech_desc {var} = "
            f"{{sizeof({s.name}), {len(ptrs[:6])}, {{{entries}}}}};"
        )
        for m in s.mechanisms:
            cases.append(f"    case 0x{ckm.value_of(m):x}UL: return &{var}; /* {m} */")
    # A mechanism may be listed under two structs; the first one wins.
    seen: set[str] = set()
    unique = []
    for c in cases:
        key = c.split(":")[0]
        if key not in seen:
            seen.add(key)
            unique.append(c)
    body = [
        "static const struct p11_mech_desc *p11_mech_desc(CK_MECHANISM_TYPE t)",
        "{",
        "    switch (t) {",
        *unique,
        "    default: return NULL;",
        "    }",
        "}",
        "",
    ]
    return "\n".join(out) + "\n\n" + "\n".join(body)


def _wrappers() -> str:
    out: list[str] = []
    for ctx in range(MAX_CTX):
        for fn in functions.FUNCTIONS:
            sig = ", ".join(_decl(p) for p in fn.params) or "void"
            args = ", ".join([f"&g_ctx[{ctx}]", *(p.name for p in fn.params)])
            out.append(f"static CK_RV w{ctx}_{fn.name}({sig}) {{ return impl_{fn.name}({args}); }}")
    rows = []
    for ctx in range(MAX_CTX):
        rows.append("    {" + ", ".join(f"(void *)w{ctx}_{fn.name}" for fn in functions.FUNCTIONS)
                    + "},")
    out.append(f"static void *const p11_wrappers[{MAX_CTX}][P11_NFUNCS] = {{")
    out += rows
    out.append("};")
    out.append(_FILL_CTX)
    return "\n".join(out) + "\n"


_FILL_CTX = """
static void p11_fill_ctx(int i, void *real_list, CK_VERSION version, int nslots)
{
    struct p11_ctx *c = &g_ctx[i];
    size_t first = offsetof(P11_FUNCTION_LIST_3_2, C_Initialize);
    void **real = (void **)((char *)real_list + first);
    void **ours = (void **)((char *)&c->ours + first);
    c->real_list = real_list;
    c->ours.version = version;
    for (int k = 0; k < nslots && k < P11_NFUNCS; k++) {
        c->real[k] = real[k];
        ours[k] = real[k] ? p11_wrappers[i][k] : NULL;
    }
}
"""

_EXPORTS = """
/* In a setuid/setgid program (g_passthrough) calls go to the module untraced. */
P11_EXPORT CK_RV C_GetFunctionList(void **ppFunctionList)
{
    if (!p11_ready()) return CKR_GENERAL_ERROR_;
    if (g_passthrough) return p11_do_get_function_list(g_entry[0].mod, ppFunctionList);
    return impl_C_GetFunctionList(&g_entry[0], ppFunctionList);
}

/* The 2.x build (libp11spy-2.so) leaves these out, for modules that lack them: a client then
 * finds the same entry points through the shim as without it. */
#if P11SPY_EXPORT_INTERFACES
P11_EXPORT CK_RV C_GetInterfaceList(CK_INTERFACE *pInterfacesList, CK_ULONG *pulCount)
{
    if (!p11_ready()) return CKR_GENERAL_ERROR_;
    if (g_passthrough)
        return p11_do_get_interface_list(g_entry[0].mod, NULL, pInterfacesList, pulCount);
    return impl_C_GetInterfaceList(&g_entry[0], pInterfacesList, pulCount);
}

P11_EXPORT CK_RV C_GetInterface(CK_UTF8CHAR *pInterfaceName, CK_VERSION *pVersion,
                                CK_INTERFACE **ppInterface, CK_FLAGS flags)
{
    if (!p11_ready()) return CKR_GENERAL_ERROR_;
    if (g_passthrough)
        return p11_do_get_interface(g_entry[0].mod, NULL, pInterfaceName, pVersion, ppInterface,
                                    flags);
    return impl_C_GetInterface(&g_entry[0], pInterfaceName, pVersion, ppInterface, flags);
}
#endif
"""


def _version() -> str:
    """The package's own constant: the wheel's build runs where p11spy is not installed."""
    from p11spy import __version__

    return __version__


def _preload_entries() -> str:
    """Each module's three entry points, for the preloaded spy's dlsym to hand out."""
    entries = [("C_GetFunctionList", "void **pp", "pp"),
               ("C_GetInterfaceList", "CK_INTERFACE *l, CK_ULONG *n", "l, n"),
               ("C_GetInterface", "CK_UTF8CHAR *a, CK_VERSION *v, CK_INTERFACE **pp, CK_FLAGS f",
                "a, v, pp, f")]
    out = ["#if P11SPY_PRELOAD"]
    rows = []
    for k in range(MAX_MODULES):
        row = []
        for name, sig, args in entries:
            out.append(f"static CK_RV e{k}_{name}({sig}) {{ return impl_{name}(&g_entry[{k}], "
                       f"{args}); }}")
            row.append(f"(void *)e{k}_{name}")
        rows.append("{" + ", ".join(row) + "}")
    out.append("static void *p11_entry(int module, int which)\n{")
    out.append(f"    static void *const t[{MAX_MODULES}][3] = {{{', '.join(rows)}}};")
    out.append("    return t[module][which];\n}")
    out.append("#endif")
    return "\n".join(out) + "\n"


def generate() -> str:
    """The whole C source of the shim (and, with P11SPY_PRELOAD, of the preloaded spy)."""
    parts = [
        "/* Generated by shim_build/codegen.py from the PKCS#11 fact tables; do not edit. */",
        "#ifndef _GNU_SOURCE\n#define _GNU_SOURCE\n#endif",
        "#include <stddef.h>",
        "#include <stdint.h>",
        _defines(),
        structs.CDEF,
        function_list_struct(),
        (SPY / "shim_runtime.c").read_text(),
        _attr_secret(),
        _keyless_class(),
        iso7816.c_defines(),
        _mech_desc(),
        *(_impl(fn) for fn in functions.FUNCTIONS),
        _wrappers(),
        "#if P11SPY_PRELOAD",
        (SPY / "preload_report.c").read_text(),
        (SPY / "preload.c").read_text(),
        "#else",
        _EXPORTS,
        "#endif",
        _preload_entries(),
    ]
    return "\n".join(parts)
