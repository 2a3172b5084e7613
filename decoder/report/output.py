"""Creating the report file: mode 0600, never through a link, over nothing unless asked.

Why not simply open(dest, "w"): the page is written to a temporary file (mkstemp: O_EXCL, mode
0600) in the destination's folder and only put in place once complete, so an error or an
interrupt leaves no half page and whatever was there before. Putting it in place is a hard
link, which fails when the name exists (no check-then-write race), or with force a rename,
which replaces a symbolic link itself instead of writing where it points.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from p11spy.decoder.redact import atomic_output
from p11spy.errors import UserError


def _check(dest: Path, src: Path, force: bool) -> None:
    if dest.is_dir():
        raise UserError(f"{dest}: is a directory")
    with contextlib.suppress(OSError):
        if dest.exists() and os.path.samefile(dest, src):
            raise UserError(f"{dest}: is the trace itself")
    if not force and (dest.exists() or dest.is_symlink()):
        raise UserError(f"{dest}: already exists (--force replaces it)")


@contextlib.contextmanager
def new_output(dest: Path, src: Path, force: bool = False) -> Iterator[TextIO]:
    """A text file that becomes dest when the block ends without error (redact's
    atomic_output, which without force puts it in place by a hard link)."""
    _check(dest, src, force)
    with atomic_output(dest, replace=force) as raw:
        f = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
        yield f
        f.flush()
        f.detach()  # raw is closed by atomic_output
