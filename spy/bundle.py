"""`p11spy bundle`: the shims of every architecture built, with the server's README, in one
tar.gz for a server that has no Python (issue 12).

The server where a client fails is often one we may not install on: the bundle is unpacked in
any folder and read with `tar` and `sha256sum`, nothing else. Its README (SERVER.md beside
this file) says which variables to set and how each kind of client is pointed at the shim;
SHA256SUMS lets the copy be checked there. What each architecture's shims need of the server
(the oldest glibc, anything beyond glibc) is read from the shims themselves (elf.py) and
stated in the README, so that a shim that cannot load there is known before the copy. The
tarball is written beside its destination and renamed into place, so an interrupted run
leaves no half bundle under the name asked for.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from p11spy import __version__
from p11spy.errors import UserError
from p11spy.spy import elf
from p11spy.spy.shims import HERE, NAMES, built_arches, shim_dir

README = HERE / "SERVER.md"


def default_name() -> str:
    return f"p11spy-shim-{__version__}.tar.gz"


class Needs(NamedTuple):
    """What one architecture's shims need of the server."""

    arch: str
    glibc: str  # the oldest glibc that loads them
    beyond: list[str]  # what else: libraries, a RUNPATH, other symbol versions

    def line(self) -> str:
        also = f"; also {', '.join(self.beyond)}" if self.beyond else ", nothing else"
        return f"- `{self.arch}/`: glibc {self.glibc} or later{also}"


def needs(arch: str, folder: Path) -> Needs:
    found = [elf.needs(folder / n) for n in NAMES]
    glibc = max(elf.oldest_glibc(n) for n in found)
    beyond = list(dict.fromkeys(x for n in found for x in elf.foreign(n)))
    return Needs(arch, ".".join(map(str, glibc)), beyond)


def readme(all_needs: list[Needs]) -> str:
    return (README.read_text().replace("@VERSION@", __version__)
            .replace("@ARCHES@", ", ".join(f"`{n.arch}/`" for n in all_needs))
            .replace("@NEEDS@", "\n".join(n.line() for n in all_needs)))


def _member(name: str, size: int, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int, mtime: int) -> None:
    tar.addfile(_member(name, len(data), mode, mtime), io.BytesIO(data))


def write_bundle(dest: Path, only: list[str] | None = None) -> list[Needs]:
    """Writes the bundle of the architectures asked for (default: every one built) to dest;
    returns what each architecture's shims need of a server."""
    arches = list(dict.fromkeys(only)) if only else built_arches()
    if not arches:
        raise UserError("no shims are built: run `make setup` (or install the wheel)")
    folders = {arch: shim_dir(arch) for arch in arches}  # a UserError for one not built
    if dest.is_dir():
        raise UserError(f"{dest} is a directory: name the file, e.g. {dest / default_name()}")
    if not dest.parent.is_dir():
        raise UserError(f"folder {dest.parent} does not exist")
    top = f"p11spy-shim-{__version__}"
    now = int(time.time())
    all_needs = [needs(arch, folder) for arch, folder in folders.items()]
    files: list[tuple[str, bytes, int]] = []
    for arch, folder in folders.items():
        files += [(f"{arch}/{n}", (folder / n).read_bytes(), 0o755) for n in NAMES]
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data, _ in files)
    files += [("README.md", readme(all_needs).encode(), 0o644),
              ("SHA256SUMS", sums.encode(), 0o644)]
    try:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    except OSError as exc:
        raise UserError(f"cannot write in {dest.parent}: {exc.strerror}") from exc
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o644 & ~umask)  # a bundle is for copying around, unlike a trace
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for folder in [top, *(f"{top}/{a}" for a in arches)]:
                info = _member(folder, 0, 0o755, now)
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            for name, data, mode in files:
                _add(tar, f"{top}/{name}", data, mode, now)
        os.replace(tmp, dest)  # replaces a link at dest, never writes through it
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UserError(f"cannot write {dest}: {exc.strerror or exc}") from exc
        raise
    return all_needs
