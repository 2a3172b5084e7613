"""What a built shim needs from the machine that loads it, read from its ELF dynamic section:
the libraries (DT_NEEDED), a RUNPATH/RPATH, and the symbol versions it asks of each library
(.gnu.version_r). The wheel's build names the wheel from this (setup.py): manylinux2014 only
when every shim needs nothing beyond what that policy allows. Pure Python, so it needs no
binutils; 64-bit ELF of either byte order (x86_64, aarch64, s390x, ppc64le).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import NamedTuple

SHT_DYNAMIC = 6
SHT_GNU_VERNEED = 0x6FFFFFFE
DT_NEEDED, DT_RPATH, DT_RUNPATH = 1, 15, 29

# manylinux2014 (PEP 599): the libraries a wheel may link without carrying them, of glibc's
# that the shims could use, and the newest glibc symbol version.
MANYLINUX2014_LIBS = {"libc.so.6", "libdl.so.2", "libpthread.so.0", "libm.so.6", "librt.so.1"}
MANYLINUX2014_GLIBC = (2, 17)


class Needs(NamedTuple):
    libraries: tuple[str, ...]
    versions: tuple[str, ...]  # e.g. GLIBC_2.17
    runpath: str | None


def needs(path: Path) -> Needs:
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError(f"{path}: not a 64-bit ELF file")
    end = "<" if data[5] == 1 else ">"
    shoff, = struct.unpack_from(end + "Q", data, 0x28)
    shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
    sections = [struct.unpack_from(end + "IIQQQQIIQQ", data, shoff + i * shentsize)
                for i in range(shnum)]

    def string(strtab: int, offset: int) -> str:
        start = sections[strtab][4] + offset
        return data[start:data.index(b"\0", start)].decode()

    libraries, versions, runpath = [], [], None
    for _, kind, _, _, offset, size, link, info, _, _ in sections:
        if kind == SHT_DYNAMIC:
            for pos in range(offset, offset + size, 16):
                tag, value = struct.unpack_from(end + "qQ", data, pos)
                if tag == DT_NEEDED:
                    libraries.append(string(link, value))
                elif tag in (DT_RPATH, DT_RUNPATH):
                    runpath = string(link, value)
        elif kind == SHT_GNU_VERNEED:
            pos = offset
            for _ in range(info):  # Elf64_Verneed, each with vn_cnt Elf64_Vernaux
                _, count, _, aux, nxt = struct.unpack_from(end + "HHIII", data, pos)
                apos = pos + aux
                for _ in range(count):
                    _, _, _, name, anext = struct.unpack_from(end + "IHHII", data, apos)
                    versions.append(string(link, name))
                    apos += anext
                pos += nxt
    return Needs(tuple(libraries), tuple(versions), runpath)


def manylinux2014(n: Needs) -> bool:
    """Whether a library with these needs loads on any manylinux2014 system."""
    def glibc_ok(v: str) -> bool:
        m = re.fullmatch(r"GLIBC_(\d+)\.(\d+)(?:\.\d+)?", v)
        return m is not None and (int(m[1]), int(m[2])) <= MANYLINUX2014_GLIBC

    loader = re.compile(r"ld-linux[-\w.]*\.so\.\d|ld64\.so\.\d")
    return (n.runpath is None
            and all(lib in MANYLINUX2014_LIBS or loader.fullmatch(lib) for lib in n.libraries)
            and all(glibc_ok(v) for v in n.versions))
