"""Builds the three shims as plain C shared objects from the generated C.

The shims need nothing but libc (and, on a glibc older than 2.34, libdl and libpthread): no
Python is loaded into a client, and a host without Python can load them. With zig's C compiler
(the `ziglang` package) they are built against glibc 2.17, so they load on any Linux of the
last ten years, and for other architectures (`--arch s390x`). cffi's one role here is to
check that every target's compiler lays out the PKCS#11 structs as the decoder reads them.

Run as `python -m shim_build.build [--arch ARCH ...] [--cc]` from the repository; `make setup`
does. The native architecture's shims go to spy/, the others' to spy/<arch>/.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from p11spy.facts import logformat
from p11spy.facts.pkcs11 import structs
from shim_build import prebuilt, replay_codegen
from shim_build.codegen import generate

ROOT = Path(__file__).resolve().parents[1]
SPY = ROOT / "spy"  # the shims go beside their C sources
WORK = ROOT / "build" / "shim"  # the generated C, kept for reading and debugging
GLIBC = "2.17"  # the oldest glibc the shims load on (manylinux2014)
# zig has no glibc 2.17 stubs for ppc64le, whose glibc starts at 2.17: 2.19's give the same
# symbol versions (GLIBC_2.17 for everything the shim calls), which the tests check.
GLIBC_STUBS = {"ppc64le": "2.19"}

# Our name of an architecture -> zig's.
ARCHES = {"x86_64": "x86_64", "aarch64": "aarch64", "s390x": "s390x", "ppc64le": "powerpc64le"}
# What an architecture's old machines need: zig tunes s390x for a recent CPU, and the shim
# needs no new instructions (IBM z196 is older than any supported distribution's baseline);
# zig's ppc64le headers default to IEEE 128-bit long double, whose printf (__snprintfieee128)
# came with glibc 2.32, so the shim keeps the IBM long double that older glibc has.
TARGET_FLAGS = {"s390x": ["-mcpu=z196"], "ppc64le": ["-mabi=ibmlongdouble"]}
NATIVE = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(),
                                                     platform.machine().lower())


@dataclass(frozen=True)
class Shim:
    name: str
    interfaces: bool  # exports C_GetInterfaceList and C_GetInterface (PKCS#11 3.x)
    preload: bool  # the LD_PRELOAD spy of `p11spy run`


SHIMS = (
    Shim("libp11spy.so", interfaces=True, preload=False),
    Shim("libp11spy-2.so", interfaces=False, preload=False),  # for 2.x modules
    Shim("libp11spy-preload.so", interfaces=True, preload=True),
)

FLAGS = ["-shared", "-fPIC", "-O2", "-std=gnu11", "-fvisibility=hidden", "-fno-strict-aliasing",
         "-Wall", "-Wno-unused-function", "-Wno-unused-variable",
         "-Wno-unused-parameter"]
# --as-needed drops libdl/libpthread where libc has them; -z defs refuses an unresolved symbol.
LINK = ["-Wl,--as-needed", "-Wl,-z,defs", "-Wl,-z,relro", "-Wl,-z,now", "-ldl", "-lpthread"]


def have_zig() -> bool:
    return importlib.util.find_spec("ziglang") is not None


def compiler(arch: str, *, system_cc: bool = False) -> list[str]:
    """The C compiler command for an architecture: zig against glibc 2.17, or the system's."""
    if system_cc:
        if arch != NATIVE:
            raise SystemExit(f"the system compiler builds only for {NATIVE}, not {arch}")
        return [os.environ.get("CC", "cc")]
    if not have_zig():
        raise SystemExit("zig's C compiler is missing: pip install ziglang (or use --cc)")
    # zig builds with the UB sanitizer in trap mode unless told otherwise.
    target = f"{ARCHES[arch]}-linux-gnu.{GLIBC_STUBS.get(arch, GLIBC)}"
    return [sys.executable, "-m", "ziglang", "cc", "-target", target, *TARGET_FLAGS.get(arch, []),
            "-fno-sanitize=undefined"]


def layout_checks() -> str:
    """Static assertions that this compiler lays out every PKCS#11 struct as cffi (and so the
    decoder, which reads captured struct bytes with cffi) expects."""
    ffi = structs.ffi_for_layout()
    lines = ["/* Layout checks from cffi (shim_build/build.py): the decoder reads these bytes. */"]
    for s in structs.STRUCTS.values():
        lines.append(f"_Static_assert(sizeof({s.name}) == {ffi.sizeof(s.name)}, "
                     f'"{s.name}: size differs from the decoder\'s");')
        for f in s.fields:
            lines.append(f"_Static_assert(offsetof({s.name}, {f.name}) == "
                         f'{ffi.offsetof(s.name, f.name)}, "{s.name}.{f.name}: offset differs");')
    return "\n".join(lines) + "\n"


def out_dir(arch: str) -> Path:
    return SPY if arch == NATIVE else SPY / arch


# The module `p11spy replay` answers a client with; the 2.x build exports no interfaces, for
# recordings of a client that found none.
REPLAYS = (("libp11spy-replay.so", 1), ("libp11spy-replay-2.so", 0))
# A client that unloads the replay module and loads it again (a plug-in host) goes on where it
# was in the recording: the module stays in memory, with its place, until the process ends.
REPLAY_LINK = ["-Wl,-z,nodelete"]


# The compiled decoder of p11spy's binary traces (`decode --json`), for the machine p11spy runs
# on: its C beside its Python loader, the format's numbers prepended from the fact table.
DECODER_DIR = ROOT / "decoder" / "formats" / "p11spy"
DECODER = DECODER_DIR / "libp11json.so"


def decoder_text() -> str:
    """p11json.c with what it is compiled with ahead of it: the format's numbers, the headers
    its interface needs, the interface."""
    return (logformat.c_defines() + "#define _GNU_SOURCE\n#include <stdint.h>\n"
            "#include <stddef.h>\n" + (DECODER_DIR / "p11json.h").read_text() +
            (DECODER_DIR / "p11json.c").read_text())


def source(arch: str, name: str = "p11spy-shim.c", text=generate, checks: bool = True) -> Path:
    """Writes the generated C for one architecture, with the layout checks where it holds the
    PKCS#11 structs (the shims and the replay module; not the decoder)."""
    work = WORK / arch
    work.mkdir(parents=True, exist_ok=True)
    src = work / name
    src.write_text(text() + "\n" + (layout_checks() if checks else ""))
    return src


def _compile(cmd: list[str], target: Path, verbose: bool) -> Path:
    """Runs one compile into target.tmp and moves it into place."""
    tmp = target.with_suffix(".so.tmp")
    if verbose:
        print(" ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(done.stdout + done.stderr)  # warnings too: compilers differ in them
    if done.returncode != 0:
        raise SystemExit(f"building {target} failed")
    tmp.replace(target)  # atomic: a running client keeps its old mapping
    return target


def build(arch: str = NATIVE, *, system_cc: bool = False, verbose: bool = False) -> list[Path]:
    """Compiles the three shims for one architecture; returns their paths."""
    cc = compiler(arch, system_cc=system_cc)
    src = source(arch)
    dest = out_dir(arch)
    dest.mkdir(exist_ok=True)
    built = []
    for shim in SHIMS:
        target = dest / shim.name
        tmp = target.with_suffix(".so.tmp")
        built.append(_compile([*cc, *FLAGS, f"-DP11SPY_EXPORT_INTERFACES={int(shim.interfaces)}",
                               f"-DP11SPY_PRELOAD={int(shim.preload)}", "-o", str(tmp),
                               str(src), *LINK], target, verbose))
    if arch == NATIVE:  # the replay runs where the support engineer works
        rsrc = source(arch, "p11spy-replay.c", replay_codegen.generate)
        for name, interfaces in REPLAYS:
            target = dest / name
            built.append(_compile([*cc, *FLAGS, f"-DP11SPY_EXPORT_INTERFACES={interfaces}",
                                   "-o", str(target.with_suffix(".so.tmp")), str(rsrc), *LINK,
                                   *REPLAY_LINK], target, verbose))
        built += prebuilt.main()  # the cffi declarations, parsed ahead
        dsrc = source(arch, "p11json.c", decoder_text, checks=False)
        built.append(_compile([*cc, *FLAGS, "-O3", "-o", str(DECODER.with_suffix(".so.tmp")),
                               str(dsrc), "-Wl,-z,defs", "-Wl,-z,relro", "-Wl,-z,now"],
                              DECODER, verbose))
    return built


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shim_build.build", description=__doc__)
    ap.add_argument("--arch", action="append", choices=sorted(ARCHES),
                    help=f"architecture to build for (repeatable; default {NATIVE})")
    ap.add_argument("--cc", action="store_true",
                    help="use the system C compiler ($CC or cc) instead of zig: the shims then "
                         "need this machine's glibc version or newer")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    for arch in args.arch or [NATIVE]:
        for path in build(arch, system_cc=args.cc, verbose=args.verbose):
            print(f"built {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
