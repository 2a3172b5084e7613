"""The trace formats p11spy reads: each one's reader and masker, and detection.

Every format is a package of decoder/formats with a reader (sniff(head) -> bool,
read(f) -> events) and a masker (redact(fin, fout, opts, report)) side by side. Detection tries
them in the order of FORMATS. The names alone are in formats/__init__.py, so the command line
can offer them without importing a reader.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

from p11spy.decoder.events import Event
from p11spy.decoder.formats import NAMES
from p11spy.decoder.formats.opensc_debug import masker as opensc_debug_masker
from p11spy.decoder.formats.opensc_debug import reader as opensc_debug_reader
from p11spy.decoder.formats.p11spy import masker as p11spy_masker
from p11spy.decoder.formats.p11spy import reader as p11spy_reader
from p11spy.decoder.formats.pcsc_spy import masker as pcsc_spy_masker
from p11spy.decoder.formats.pcsc_spy import reader as pcsc_spy_reader
from p11spy.decoder.formats.pkcs11_spy import masker as pkcs11_spy_masker
from p11spy.decoder.formats.pkcs11_spy import reader as pkcs11_spy_reader
from p11spy.errors import UserError


class Format(NamedTuple):
    reader: ModuleType
    masker: ModuleType


FORMATS = {
    "p11spy": Format(p11spy_reader, p11spy_masker),
    "pkcs11-spy": Format(pkcs11_spy_reader, pkcs11_spy_masker),
    "opensc-debug": Format(opensc_debug_reader, opensc_debug_masker),
    "pcsc-spy": Format(pcsc_spy_reader, pcsc_spy_masker),
}
assert tuple(FORMATS) == NAMES


def formats() -> dict[str, ModuleType]:
    """Format name -> its reader, in detection order."""
    return {name: f.reader for name, f in FORMATS.items()}


def detect(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(4096)
    if not head:
        raise UserError(f"{path}: the file is empty")
    for name, fmt in FORMATS.items():
        if fmt.reader.sniff(head):
            return name
    raise UserError(f"{path}: not a trace format p11spy reads (use --format to say which)")


def open_events(path: Path, fmt: str | None = None) -> Iterator[Event]:
    """Events of one trace file, its format detected unless given."""
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory")
    name = fmt or detect(path)
    try:
        f = path.open("rb")
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror}") from exc
    with f:
        yield from FORMATS[name].reader.read(f)
