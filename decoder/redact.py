"""Redacting files: each format's masker run on a file, into a file written whole.

Why so careful with files: the input is often the only copy of a trace that took a day to
catch. It is never written unless asked, the output never lands on it, and every output is
written to a temporary file (mode 0600: it may still hold what --strict would mask) in the
same directory and renamed over the target only once complete, so an error or an interrupt
leaves what was there before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from p11spy.decoder.formats.registry import FORMATS, open_file
from p11spy.decoder.masking import Finding, Options, Report
from p11spy.errors import UserError

DEFAULT = Options()


def redact(fmt: str, fin: BinaryIO, fout: BinaryIO | None, opts: Options = DEFAULT,
           report: Report | None = None) -> list[Finding]:
    """Copy fin to fout (or nowhere) with secrets masked; the places masked, in order. With
    report given, findings go there instead of the list (memory stays flat on huge files)."""
    found: list[Finding] = []
    FORMATS[fmt].masker.redact(fin, fout, opts, report or found.append)
    return found


def check(fmt: str, fin: BinaryIO, opts: Options = DEFAULT) -> list[Finding]:
    """Where a secret appears to remain: what redaction would change."""
    return redact(fmt, fin, None, opts)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def in_place_owner(path: Path) -> tuple[int, int]:
    """The owner a trace redacted in place keeps; refuses a name that is not the file's only one.

    Replacing a symbolic link or one of several hard links would leave the unredacted trace
    under the other name, so those are refused with the name to use instead.
    """
    try:
        st = path.lstat()
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror}") from exc
    if path.is_symlink():
        raise UserError(f"{path}: is a symbolic link to {os.path.realpath(path)}; redact that "
                        "file itself (replacing the link would leave it unredacted)")
    if st.st_nlink > 1:
        raise UserError(f"{path}: has {st.st_nlink} hard links; the other names would keep the "
                        "unredacted trace: redact into a new file with -o and remove them")
    return st.st_uid, st.st_gid


@contextlib.contextmanager
def atomic_output(target: Path, owner: tuple[int, int] | None = None,
                  replace: bool = True) -> Iterator[BinaryIO]:
    """A file (mode 0600) that becomes target only when the block ends without error; given
    owner (uid, gid), it keeps that owner where we may set it (root redacting a user's trace
    in place must not take it from them). With replace false, target must not exist: the file
    is put there by a hard link, which fails when the name exists (no check-then-write race)
    and never writes where a symbolic link points."""
    folder = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise UserError(f"{target}: cannot write there ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            if owner is not None and os.geteuid() == 0:
                os.fchown(f.fileno(), *owner)
        os.chmod(tmp, 0o600)
        try:
            if replace:
                os.replace(tmp, target)
            else:
                _link(tmp, target)
        except FileExistsError as exc:
            raise UserError(f"{target}: already exists (--force replaces it)") from exc
        except OSError as exc:
            raise UserError(f"{target}: cannot {'replace' if replace else 'create'} it "
                            f"({exc.strerror})") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _link(tmp: str, dest: Path) -> None:
    """tmp under the name dest, which must not exist; where the file system has no hard
    links, a rename after a last look."""
    try:
        os.link(tmp, dest)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK) or \
                dest.exists() or dest.is_symlink():
            raise
        os.rename(tmp, dest)
        return
    os.unlink(tmp)


def redact_file(src: Path, dest: Path, fmt: str, opts: Options) -> list[Finding]:
    """Redacts src into dest (atomically); the places masked. For the viewer's export too."""
    return redact_stream(open_file(src), src, dest, fmt, opts)


def redact_stream(fin: BinaryIO, src: Path, dest: Path, fmt: str, opts: Options
                  ) -> list[Finding]:
    """Redacts an opened trace (closed after) into dest (atomically); the places masked."""
    with fin:
        if _same_file(src, dest):
            raise UserError(f"{dest}: is the input; use --in-place to replace it")
        with atomic_output(dest) as fout:
            return redact(fmt, fin, fout, opts)
