"""Where the built shims are, and which one a real module needs.

Capture's one home for these paths: `p11spy lib`, `p11spy run`, `p11spy bundle` and the tests
all ask here. This machine's shims are beside their C sources; shims cross-built for another
architecture are in spy/<arch>/ (`python -m shim_build.build --arch s390x`), named as
`uname -m` names the machine they are for.
"""

from __future__ import annotations

import os
from pathlib import Path

from p11spy.errors import UserError

HERE = Path(__file__).resolve().parent
SHIM = HERE / "libp11spy.so"  # exports C_GetFunctionList, C_GetInterfaceList, C_GetInterface
SHIM_2 = HERE / "libp11spy-2.so"  # exports C_GetFunctionList only, for 2.x modules
PRELOAD = HERE / "libp11spy-preload.so"  # for LD_PRELOAD: wraps whatever modules load
NAMES = (SHIM.name, SHIM_2.name, PRELOAD.name)
NATIVE = {"amd64": "x86_64", "arm64": "aarch64"}.get(os.uname().machine.lower(),
                                                     os.uname().machine.lower())


def built_arches() -> list[str]:
    """The architectures whose three shims are built, this machine's first."""
    native = [NATIVE] if all((HERE / n).is_file() for n in NAMES) else []
    return native + sorted(d.name for d in HERE.iterdir()
                           if d.is_dir() and all((d / n).is_file() for n in NAMES))


def shim_dir(arch: str = NATIVE) -> Path:
    """The folder of one architecture's shims; a UserError naming those built if it is not."""
    built = built_arches()
    if arch not in built:
        have = ", ".join(built) or "none: run `make setup`"
        raise UserError(f"no shims built for {arch} (built: {have}; others: "
                        f"`python -m shim_build.build --arch {arch}` in a checkout)")
    return HERE if arch == NATIVE else HERE / arch


def module_has_interfaces(module: str) -> bool:
    """Whether a PKCS#11 module exports C_GetInterface (PKCS#11 3.0 and later)."""
    import ctypes  # only `p11spy lib --module` asks; `p11spy run` starts without it

    try:
        lib = ctypes.CDLL(module, mode=os.RTLD_LOCAL | os.RTLD_LAZY)
    except OSError as exc:
        raise UserError(f"cannot load {module}: {exc}") from exc
    return hasattr(lib, "C_GetInterface")


def shim_path(module: str | None = None, arch: str = NATIVE) -> Path:
    """The built shim for a real module: the 2.x build for a module without C_GetInterface,
    so that the client finds exactly the entry points the module has. Which one a module of
    another architecture needs cannot be asked by loading it: there the caller chooses."""
    if arch != NATIVE:
        if module is not None:
            raise UserError(f"a module is checked by loading it, which works only for this "
                            f"machine's architecture ({NATIVE}); for {arch}, {SHIM.name} "
                            f"works over any module, {SHIM_2.name} over one without "
                            f"C_GetInterface (`grep -c C_GetInterface MODULE` prints 0)")
        return shim_dir(arch) / SHIM.name
    path = SHIM if module is None or module_has_interfaces(module) else SHIM_2
    if not path.is_file():
        raise UserError(f"the shim is not built ({path} is missing): run `make setup`")
    return path


REPLAY = HERE / "libp11spy-replay.so"  # `p11spy replay --lib`: answers from a recorded trace
REPLAY_2 = HERE / "libp11spy-replay-2.so"  # the same, exporting no PKCS#11 3.0 interfaces


def replay_module(interfaces: bool = True) -> Path:
    """The built replay module (the 2.x build when the recorded client found no interfaces);
    a UserError if it is not built."""
    path = REPLAY if interfaces else REPLAY_2
    if not path.is_file():
        raise UserError(f"the replay module is not built ({path} is missing): run `make setup`")
    return path
