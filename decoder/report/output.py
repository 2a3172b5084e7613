"""Creating the report file: mode 0600, never through a link, over nothing unless asked.

Why not simply open(dest, "w"): the page is written to a temporary file (mkstemp: O_EXCL, mode
0600) in the destination's folder and only put in place once complete, so an error or an
interrupt leaves no half page and whatever was there before. Putting it in place is a hard
link, which fails when the name exists (no check-then-write race), or with force a rename,
which replaces a symbolic link itself instead of writing where it points.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from p11spy.errors import UserError


def _check(dest: Path, src: Path, force: bool) -> None:
    if dest.is_dir():
        raise UserError(f"{dest}: is a directory")
    with contextlib.suppress(OSError):
        if dest.exists() and os.path.samefile(dest, src):
            raise UserError(f"{dest}: is the trace itself")
    if not force and (dest.exists() or dest.is_symlink()):
        raise UserError(f"{dest}: already exists (--force replaces it)")


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


@contextlib.contextmanager
def new_output(dest: Path, src: Path, force: bool = False) -> Iterator[TextIO]:
    """A text file that becomes dest when the block ends without error."""
    _check(dest, src, force)
    folder = dest.parent if str(dest.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise UserError(f"{dest}: cannot write there ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            yield f
        try:
            if force:
                os.replace(tmp, dest)
            else:
                _link(tmp, dest)
        except FileExistsError as exc:
            raise UserError(f"{dest}: already exists (--force replaces it)") from exc
        except OSError as exc:
            raise UserError(f"{dest}: cannot create it ({exc.strerror})") from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
