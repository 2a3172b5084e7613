"""Small C clients for the shim tests (sources in tests/shim_c/), compiled on demand."""

from __future__ import annotations

import subprocess
from pathlib import Path

SOURCES = Path(__file__).resolve().parent / "shim_c"


def build(name: str, dest: Path, *defines: str, shared: bool = False) -> Path:
    """Compiles shim_c/NAME.c into dest (a program, or with shared=True a library), with
    -D definitions such as 'SHIM="/path"'."""
    out = dest / (f"{name}.so" if shared else name)
    cmd = ["gcc", "-O1", "-Wall", "-I/usr/include/p11-kit-1", "-o", str(out),
           str(SOURCES / f"{name}.c"), "-ldl", *(f"-D{d}" for d in defines)]
    if shared:
        cmd[1:1] = ["-shared", "-fPIC"]
    subprocess.run(cmd, check=True, capture_output=True)
    return out
