"""Where the built shims are, and which one a real module needs.

Capture's one home for these paths: `p11spy lib`, `p11spy run` and the tests all ask here.
"""

from __future__ import annotations

import os
from pathlib import Path

from p11spy.errors import UserError

HERE = Path(__file__).resolve().parent
SHIM = HERE / "libp11spy.so"  # exports C_GetFunctionList, C_GetInterfaceList, C_GetInterface
SHIM_2 = HERE / "libp11spy-2.so"  # exports C_GetFunctionList only, for 2.x modules
PRELOAD = HERE / "libp11spy-preload.so"  # for LD_PRELOAD: wraps whatever modules load


def module_has_interfaces(module: str) -> bool:
    """Whether a PKCS#11 module exports C_GetInterface (PKCS#11 3.0 and later)."""
    import ctypes  # only `p11spy lib --module` asks; `p11spy run` starts without it

    try:
        lib = ctypes.CDLL(module, mode=os.RTLD_LOCAL | os.RTLD_LAZY)
    except OSError as exc:
        raise UserError(f"cannot load {module}: {exc}") from exc
    return hasattr(lib, "C_GetInterface")


def shim_path(module: str | None = None) -> Path:
    """The built shim for a real module: the 2.x build for a module without C_GetInterface,
    so that the client finds exactly the entry points the module has."""
    path = SHIM if module is None or module_has_interfaces(module) else SHIM_2
    if not path.is_file():
        raise UserError(f"the shim is not built ({path} is missing): run `make setup`")
    return path
