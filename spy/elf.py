"""What a built shim needs from the machine that loads it, read from its ELF dynamic section:
the libraries (DT_NEEDED), a RUNPATH/RPATH, and the symbol versions it asks of each library
(.gnu.version_r). `p11spy bundle` writes it into the server's README, and the wheel's build
names the wheel from it (setup.py): manylinux2014 only when every shim needs nothing beyond
what that policy allows. Pure Python, so it needs no binutils; 64-bit ELF of either byte order
(x86_64, aarch64, s390x, ppc64le).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import NamedTuple

SHT_DYNAMIC = 6
SHT_GNU_VERNEED = 0x6FFFFFFE
DT_NEEDED, DT_RPATH, DT_RUNPATH = 1, 15, 29

# glibc's libraries the shims may link; every manylinux2014 system (PEP 599) has them, and
# glibc symbol versions up to 2.17.
GLIBC_LIBS = {"libc.so.6", "libdl.so.2", "libpthread.so.0", "libm.so.6", "librt.so.1"}
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


def glibc(version: str) -> tuple[int, ...] | None:
    """GLIBC_2.3.4 -> (2, 3, 4); None for another library's version (GCC_3.0, GLIBC_PRIVATE)."""
    m = re.fullmatch(r"GLIBC_(\d+(?:\.\d+)+)", version)
    return tuple(int(x) for x in m[1].split(".")) if m else None


def oldest_glibc(n: Needs) -> tuple[int, ...]:
    """The oldest glibc that has every glibc symbol version these needs ask for."""
    return max((v for v in map(glibc, n.versions) if v), default=(2, 0))


LOADER = re.compile(r"ld-linux[-\w.]*\.so\.\d|ld64\.so\.\d")


def foreign(n: Needs) -> list[str]:
    """What these needs ask of a machine beyond glibc itself: other libraries, a RUNPATH, a
    symbol version that is not glibc's."""
    return list(dict.fromkeys(
        [lib for lib in n.libraries if lib not in GLIBC_LIBS and not LOADER.fullmatch(lib)]
        + ([f"RUNPATH {n.runpath}"] if n.runpath else [])
        + [v for v in n.versions if glibc(v) is None]))


def manylinux2014(n: Needs) -> bool:
    """Whether a library with these needs loads on any manylinux2014 system."""
    return not foreign(n) and all((glibc(v) or ()) <= MANYLINUX2014_GLIBC for v in n.versions)
