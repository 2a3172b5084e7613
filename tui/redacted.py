"""The viewer's redacted view (`r`) and export (`x`): the trace as `p11spy redact` writes it.

Why a redacted copy rather than masking on screen: what the user sees must be exactly what
they would share, decoded by the same index. So the view opens a redacted copy, written to a
private temporary directory (removed at exit), and the export writes `<name>.redacted<ext>`
next to the trace with the command's own code (atomic, mode 0600, never over the input).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from p11spy.decoder.formats.registry import detect
from p11spy.decoder.masking import Options
from p11spy.decoder.redact import redact_file

_TMP: Path | None = None


def _tmpdir() -> Path:
    global _TMP
    if _TMP is None:
        _TMP = Path(tempfile.mkdtemp(prefix="p11spy-redacted-"))  # mode 0700
        atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
    return _TMP


def export_path(path: Path) -> Path:
    """Where the export of a trace goes: next to it, `.redacted` before the extension."""
    return path.with_name(f"{path.stem}.redacted{path.suffix}")


def fmt_of(path: Path, fmt: str | None = None) -> str:
    return fmt or detect(path)


def redacted_copy(path: Path, fmt: str | None = None) -> tuple[Path, int]:
    """A redacted copy of the trace for the view, and how many places were masked."""
    name = fmt_of(path, fmt)
    folder = Path(tempfile.mkdtemp(dir=_tmpdir()))
    dest = folder / export_path(path).name
    return dest, len(redact_file(path, dest, name, Options()))


def export(path: Path, fmt: str | None = None) -> tuple[Path, int]:
    """Writes the redacted trace next to the original; its path and the places masked."""
    dest = export_path(path)
    return dest, len(redact_file(path, dest, fmt_of(path, fmt), Options()))
