"""Which index reads a file: p11spy's binary traces by record header, the rest by their reader.

Kept apart from the indexes so that the format registry (decoder/formats/registry.py) is the single
place that says which formats exist and how they are recognised.
"""

from __future__ import annotations

from pathlib import Path

from p11spy.errors import UserError
from p11spy.tui.trace_index import TraceIndex


def open_index(path: Path, fmt: str | None = None, follow: bool = False) -> TraceIndex:
    """An index (not yet scanned) for a trace file, its format detected unless given. An
    empty file followed is taken for a p11spy trace the shim has only just created."""
    from p11spy.decoder.formats.registry import detect, formats, seekable

    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory")
    if not seekable(path):
        raise UserError(f"{path}: the viewer needs a file it can seek in, not a stream; "
                        "save it to a file first (or use p11spy decode)")
    if fmt is None and follow and path.stat().st_size == 0:
        fmt = "p11spy"
    name = fmt or detect(path)
    if name not in formats():
        raise UserError(f"{path}: unknown format {name!r} (known: {', '.join(formats())})")
    if name == "p11spy":
        from p11spy.tui.p11_index import P11Index

        return P11Index(path)
    from p11spy.tui.event_index import EventIndex

    return EventIndex(path, name)
