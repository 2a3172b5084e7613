"""Builds the shim library (spy/libp11spy.so) with cffi from the generated C.

cffi compiles the generated C and links it as an embeddable library. No Python runs inside
the client on the per-call path: configuration, capture and the trace writer are C, so a
client pays no interpreter start-up and no GIL, and a host that embeds another Python is left
alone. Run as `python -m shim_build.build` from the repository; `make setup` does.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import cffi

from shim_build.codegen import generate

SPY = Path(__file__).resolve().parents[1] / "spy"  # the shims go beside their C sources
SHIM = SPY / "libp11spy.so"  # exports C_GetFunctionList, C_GetInterfaceList, C_GetInterface
SHIM_2 = SPY / "libp11spy-2.so"  # exports C_GetFunctionList only, for 2.x modules
PRELOAD = SPY / "libp11spy-preload.so"  # for LD_PRELOAD: wraps whatever modules load


def build(target: Path = SHIM, *, interfaces: bool = True, preload: bool = False,
          verbose: bool = False) -> Path:
    ffi = cffi.FFI()
    ffi.cdef("")
    ffi.embedding_api("")
    ffi.set_source(
        "_p11spy_shim",
        generate(),
        extra_compile_args=["-O2", "-fvisibility=hidden", "-Wall", "-Wno-unused-function",
                            "-Wno-unused-variable", "-Wno-unused-parameter"],
        libraries=["dl", "pthread"],
        define_macros=[("P11SPY_EXPORT_INTERFACES", "1" if interfaces else "0"),
                       ("P11SPY_PRELOAD", "1" if preload else "0")],
    )
    with tempfile.TemporaryDirectory(prefix="p11spy-build-") as tmp:
        built = ffi.compile(tmpdir=tmp, target=target.name, verbose=verbose)
        tmp_target = target.with_suffix(".so.tmp")
        shutil.copyfile(built, tmp_target)
        tmp_target.replace(target)  # atomic: a running client keeps its old mapping
    return target


def main() -> int:
    verbose = "-v" in sys.argv
    for path in (build(SHIM, verbose=verbose), build(SHIM_2, interfaces=False, verbose=verbose),
                 build(PRELOAD, preload=True, verbose=verbose)):
        print(f"built {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
