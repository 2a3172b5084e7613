"""Generates the replay module's C from the PKCS#11 fact tables (`p11spy replay`).

The replay module answers a client from a recorded trace. Each function's body is written from
its parameter roles, as the shim's wrappers are (codegen.py), and reuses the shim's own pieces:
the incoming call is encoded by the very in-field encoders the shim records with (so it can
be compared field by field with the recording, and the replay's trace reads like any other),
and what the replay gives back is recorded by the shim's out-field encoders. What is new here
is, per role, how an incoming parameter is compared with the recording (MATCH) and how the
recorded output is written back (_apply).
"""

from __future__ import annotations

from p11spy.facts.pkcs11 import attributes, functions, structs
from p11spy.facts.pkcs11.cdecl import function_list_struct
from p11spy.facts.pkcs11.model import Function, Param, Role, ValueType
from shim_build import codegen

MAX_PARAMS = 12  # the C's RP_MAXPARAMS: more than any function has
# Answered by the replay itself with its own function list (spy/replay_runtime.c).
ENTRY_POINTS = ("C_GetFunctionList", "C_GetInterfaceList", "C_GetInterface")

# How an incoming parameter is compared with the recorded one (replay_runtime.c's RP_*):
# STRICT the same bytes; DATA may differ (data to sign holding a time, random input: the call
# is "tolerated"); ROOM only whether it is NULL (the room a client offers, garbage in an
# unset count); PTR only whether it is NULL (an address); MECH the same mechanism, its parameter
# may differ (an IV); TYPES the same attribute types asked, with or without room;
# INITARGS the same flags; TEMPLATE the same attributes and values but for dates (DATE-typed
# attributes: a client may set today's); PIN the same length and character class as a masked
# recorded PIN, the same length as one recorded in clear or redacted.
CLASSES = ("RP_STRICT", "RP_DATA", "RP_ROOM", "RP_PTR", "RP_MECH", "RP_TYPES", "RP_INITARGS",
           "RP_PIN", "RP_TEMPLATE")
MATCH = {
    Role.BYTES_IN: "RP_DATA", Role.BYTES_INOUT: "RP_DATA", Role.LENGTH_PTR: "RP_ROOM",
    Role.POINTER: "RP_PTR", Role.MECHANISM: "RP_MECH", Role.TEMPLATE_INOUT: "RP_TYPES",
    Role.INIT_ARGS: "RP_INITARGS", Role.PIN: "RP_PIN", Role.TEMPLATE_IN: "RP_TEMPLATE",
}
# A LENGTH takes the class of what it measures: the length of data may differ with the data,
# the capacity of an output array is room.
_LENGTH_OF = {Role.BYTES_IN: "RP_DATA", Role.BYTES_INOUT: "RP_DATA", Role.ARRAY_OUT: "RP_ROOM"}


# Queries that change nothing on the token: one the client asks more often than recorded (a
# poll on a timer) gets the latest recorded answer again, and one it asks less often is
# passed over without putting the calls after it "out of order".
REPEATABLE = ("C_GetInfo", "C_GetSlotList", "C_GetSlotInfo", "C_GetTokenInfo",
              "C_GetMechanismList", "C_GetMechanismInfo", "C_GetSessionInfo")


def match_class(fn: Function, p: Param) -> str:
    if p.role is Role.LENGTH:
        for q in fn.params:
            if q.length == p.name or q.capacity == p.name:
                return _LENGTH_OF.get(q.role, "RP_STRICT")
    return MATCH.get(p.role, "RP_STRICT")


def _apply(fn: Function, i: int, p: Param) -> list[str]:
    """How the recorded output of parameter i is written into the client's memory; `small` is
    set when the client offered less room than the recorded output needs."""
    n, r = p.name, p.role
    if r in (Role.LENGTH_PTR, Role.HANDLE_OUT, Role.ULONG_OUT):
        return [f"rp_ulong_out(m, {i}, (CK_ULONG *){n});"]
    if r is Role.BYTES_OUT:
        return [f"small |= rp_buf_out(m, {i}, {n}, saved_{p.length});"]
    if r in (Role.BYTES_OUT_FIXED, Role.BYTES_INOUT):
        return [f"if ({n}) rp_fixed_out(m, {i}, {n}, {p.length});"]
    if r is Role.ARRAY_OUT:
        room = p.capacity if p.capacity else f"saved_{p.length}"
        return [f"small |= rp_array_out(m, {i}, (CK_ULONG *){n}, {room});"]
    if r is Role.STRUCT_OUT:
        return [f"rp_struct_out(m, {i}, {n}, sizeof({p.struct}));"]
    if r is Role.TEMPLATE_INOUT:
        return [f"small |= rp_template_out(m, {i}, {n}, {p.length}, &ts_{n});"]
    return []


def _impl(fn: Function) -> str:
    params = fn.params
    sig = ", ".join(codegen._decl(p) for p in params) or "void"
    body = [f"static CK_RV rimpl_{fn.name}({sig})", "{",
            "    if (!p11_ready()) return CKR_GENERAL_ERROR_;",
            "    struct p11_rec r;", "    CK_RV rv;", "    int small = 0;"]
    body += codegen._record_in(fn, "0")
    body += ["    p11_rec_call_start(&r);",
             f"    struct rp_call *m = rp_match(&r, P11_FN_{fn.name});",
             "    if (!m) {", "        rv = RP_DIVERGED;", "    } else {", "        rv = m->rv;"]
    for i, p in enumerate(params):
        body += [f"        {line}" for line in _apply(fn, i, p)]
    body += ["        if (small) {", "            rv = CKR_BUFFER_TOO_SMALL_;",
             "            rp_release(m);",
             '            rp_unrecorded(&r, "less room than the recorded output: '
             'CKR_BUFFER_TOO_SMALL, the call stays for the next try");',
             "        } else {", "            rp_answered(&r, m);", "        }", "    }",
             "    (void)small;", "    p11_rec_call_end(&r);"]
    for i, p in enumerate(params):
        body += [f"    {line}" for line in codegen._out_capture(fn, i, p, gav="NULL")]
    body += ["    p11_rec_finish(&r, rv);", "    return rv;", "}", ""]
    return "\n".join(body)


def _tables() -> str:
    fns = functions.FUNCTIONS
    out = [f"#define RP_MAXPARAMS {MAX_PARAMS}",
           "enum { " + ", ".join(CLASSES) + " };",
           "#define RP_DIVERGED CKR_FUNCTION_FAILED_",
           "static const char *const rp_fn_names[P11_NFUNCS] = {",
           *(f'    "{fn.name}",' for fn in fns), "};",
           "static const unsigned char rp_nparams[P11_NFUNCS] = {",
           "    " + ", ".join(str(len(fn.params)) for fn in fns), "};",
           "static const unsigned char rp_match_class[P11_NFUNCS][RP_MAXPARAMS] = {"]
    for fn in fns:
        assert len(fn.params) <= MAX_PARAMS, fn.name
        out.append("    {" + ", ".join(match_class(fn, p) for p in fn.params) + "},")
    out += ["};", "static const char *const rp_param_names[P11_NFUNCS][RP_MAXPARAMS] = {"]
    for fn in fns:
        out.append("    {" + ", ".join(f'"{p.name}"' for p in fn.params) + "},")
    out.append("};")
    out += ["static const unsigned char rp_repeatable[P11_NFUNCS] = {",
            "    " + ", ".join("1" if fn.name in REPEATABLE else "0" for fn in fns), "};"]
    dated = [a for a in attributes.ATTRIBUTES.values() if a.type is ValueType.DATE]
    out += ["static int rp_attr_dated(CK_ULONG t)", "{", "    switch (t) {",
            *(f"    case 0x{a.value:x}UL: return 1; /* {a.name} */" for a in dated),
            "    default: return 0;", "    }", "}"]
    return "\n".join(out) + "\n"


def _fill_list() -> str:
    lines = ["static void rp_fill_list(P11_FUNCTION_LIST_3_2 *l)", "{"]
    for fn in functions.FUNCTIONS:
        target = fn.name if fn.name in ENTRY_POINTS else f"rimpl_{fn.name}"
        lines.append(f"    l->{fn.name} = {target};")
    lines += ["}", ""]
    return "\n".join(lines)


def generate() -> str:
    """The whole C source of the replay module."""
    replayed = [fn for fn in functions.FUNCTIONS if fn.name not in ENTRY_POINTS]
    return "\n".join([
        "/* Generated by shim_build/replay_codegen.py from the PKCS#11 fact tables; do not edit."
        " */",
        "#ifndef _GNU_SOURCE\n#define _GNU_SOURCE\n#endif",
        "#define P11SPY_PRELOAD 0",
        "#define P11SPY_REPLAY 1",
        "#include <stddef.h>",
        "#include <stdint.h>",
        codegen._defines(),
        structs.CDEF,
        function_list_struct(),
        (codegen.SPY / "shim_runtime.c").read_text(),
        codegen._attr_secret(),
        codegen._keyless_class(),
        codegen._mech_desc(),
        _tables(),
        (codegen.SPY / "replay_runtime.c").read_text(),
        *(_impl(fn) for fn in replayed),
        _fill_list(),
    ])
