"""The function table as C declarations: the types of each parameter in the function list, and
the list itself, for the shim's generated C and for clients written with cffi."""

from __future__ import annotations

from .functions import FUNCTIONS
from .model import Param, Role
from .structs import CDEF

# Types for parameters whose C declaration involves the function-list structs, which are ours.
_CTYPE_OVERRIDES = {
    Role.FUNCTION_LIST_OUT: "void **",
    Role.INTERFACE_LIST_OUT: "CK_INTERFACE *",
    Role.INTERFACE_OUT: "CK_INTERFACE **",
}


def ctype(p: Param) -> str:
    return _CTYPE_OVERRIDES.get(p.role, p.ctype)


def function_list_struct() -> str:
    lines = ["typedef struct {", "    CK_VERSION version;"]
    for fn in FUNCTIONS:
        proto = ", ".join(ctype(p) for p in fn.params) or "void"
        lines.append(f"    CK_RV (*{fn.name})({proto});")
    lines.append("} P11_FUNCTION_LIST_3_2;")
    return "\n".join(lines) + "\n"


def function_list_cdef() -> str:
    """The PKCS#11 types and our full function list, for cffi clients (tests, benchmarks)."""
    return CDEF + "\n" + function_list_struct()
