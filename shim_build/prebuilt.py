"""Writes cffi's out-of-line ABI modules: a C declaration parsed at build time, not at start-up.

`cffi.FFI().cdef(text)` parses C with pycparser each time a process starts: for the PKCS#11
structs and the compiled decoder's interface that was a third of the start-up of `p11spy decode
--json`. The modules written here hold the parsed declarations (cffi lays the structs out when
they load, as it does after cdef); each carries the SHA-256 of the text it was made from, and
its user parses the text itself when they differ (a checkout whose build is older than an
edit), so a stale module is never used.

Run by shim_build/build.py for the machine's own build (the modules are the same on every
architecture).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cffi

ROOT = Path(__file__).resolve().parents[1]


def write(text: str, module: str, dest: Path) -> Path:
    """dest: the module `module` (its dotted name) with `text` parsed, and SOURCE its hash."""
    ffi = cffi.FFI()
    ffi.cdef(text)
    ffi.set_source(module, None)
    tmp = dest.with_suffix(".py.tmp")
    ffi.emit_python_code(str(tmp))
    with tmp.open("a") as f:
        f.write(f"\nSOURCE = {hashlib.sha256(text.encode()).hexdigest()!r}\n")
    tmp.replace(dest)
    return dest


def main() -> list[Path]:
    from p11spy.facts.pkcs11 import structs

    header = ROOT / "decoder" / "formats" / "p11spy" / "p11json.h"
    return [
        write(structs.CDEF, "p11spy.facts.pkcs11._layout",
              ROOT / "facts" / "pkcs11" / "_layout.py"),
        write(header.read_text(), "p11spy.decoder.formats.p11spy._p11json_ffi",
              header.with_name("_p11json_ffi.py")),
    ]
