"""The trace formats p11spy reads: each one's reader and masker, and detection.

Every format is a package of decoder/formats with a reader (sniff(head) -> bool,
read(f) -> events, and optionally read_blocks(f), the same with logged lines as LogLines) and
a masker (redact(fin, fout, opts, report)) side by side. Detection tries them in the order of
FORMATS. The names alone are in formats/__init__.py, so the command line
can offer them without importing a reader.
"""

from __future__ import annotations

import importlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import BinaryIO, NamedTuple

from p11spy.decoder.events import TRUNCATED, Event, LogLines, TraceWarning
from p11spy.decoder.formats import NAMES
from p11spy.decoder.formats.opensc_debug import reader as opensc_debug_reader
from p11spy.decoder.formats.p11spy import reader as p11spy_reader
from p11spy.decoder.formats.pcsc_spy import reader as pcsc_spy_reader
from p11spy.decoder.formats.pkcs11_spy import reader as pkcs11_spy_reader
from p11spy.errors import UserError


class Format(NamedTuple):
    """A format's reader, and its masker imported when asked for: decode, diagnose and the
    viewer never mask, and the maskers' imports (the APDU decoders) were a third of decode's
    start."""

    reader: ModuleType
    package: str  # the masker is the module `masker` beside the reader
    lines: bool = True  # a text of lines, each ending with a newline when whole

    @property
    def masker(self) -> ModuleType:
        return importlib.import_module(f"{self.package}.masker")


FORMATS = {
    "p11spy": Format(p11spy_reader, "p11spy.decoder.formats.p11spy", lines=False),
    "pkcs11-spy": Format(pkcs11_spy_reader, "p11spy.decoder.formats.pkcs11_spy"),
    "opensc-debug": Format(opensc_debug_reader, "p11spy.decoder.formats.opensc_debug"),
    "pcsc-spy": Format(pcsc_spy_reader, "p11spy.decoder.formats.pcsc_spy"),
}
assert all(f.reader.__name__ == f"{f.package}.reader" for f in FORMATS.values())
assert tuple(FORMATS) == NAMES


def formats() -> dict[str, ModuleType]:
    """Format name -> its reader, in detection order."""
    return {name: f.reader for name, f in FORMATS.items()}


HEAD = 4096  # bytes a reader's sniff() sees
STDIN = "-"


class _Replay(io.RawIOBase):
    """A stream that gives back the bytes already read from it, then the rest: a pipe or a
    FIFO can be read only once, so the head that told its format must not be lost."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = memoryview(head)
        self._rest = rest
        self.last = head[-1:]  # the last byte given so far: a pipe cannot be looked at later

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def, override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read1(len(b)) if hasattr(self._rest, "read1") else \
            self._rest.read(len(b))
        b[:len(data)] = data
        if data:
            self.last = data[-1:]
        return len(data)

    def close(self) -> None:
        self._rest.close()
        super().close()


def open_file(path: Path) -> BinaryIO:
    """A trace (or `-`) opened for reading, or the one-line reason it cannot be."""
    if str(path) == STDIN:
        return sys.stdin.buffer
    try:
        if path.is_dir():
            raise UserError(f"{path}: is a directory")
        return path.open("rb")
    except FileNotFoundError as exc:
        raise UserError(f"{path}: no such file") from exc
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror}") from exc


def _sniff(path: Path, head: bytes) -> str:
    if not head:
        raise UserError(f"{path}: the file is empty")
    for name, fmt in FORMATS.items():
        if fmt.reader.sniff(head):
            return name
    raise UserError(f"{path}: not a trace format p11spy reads (use --format to say which)")


def seekable(path: Path) -> bool:
    """Whether the trace can be read more than once (a file, not a pipe, FIFO or stdin)."""
    return str(path) != STDIN and path.is_file()


def open_trace(path: Path, fmt: str | None = None) -> tuple[str, BinaryIO]:
    """The trace opened once, and its format (detected unless given). Works on files, pipes,
    FIFOs and `-` (standard input): what was read to detect the format is read again."""
    f = open_file(path)
    try:
        if seekable(path):
            name = fmt or _sniff(path, f.read(HEAD))
            f.seek(0)
            return name, f
        head = f.read(HEAD)
        name = fmt or _sniff(path, head)
        return name, io.BufferedReader(_Replay(head, f))
    except BaseException:
        f.close()
        raise


def detect(path: Path) -> str:
    """The format of a trace file (read once: for files, not pipes)."""
    name, f = open_trace(path)
    f.close()
    return name


def open_events(path: Path, fmt: str | None = None, blocks: bool = False) -> Iterator[Event]:
    """Events of one trace (a file, a pipe, a FIFO or `-`), its format detected unless given.
    With blocks, a reader that has `read_blocks` gives logged lines as LogLines (one event
    for many lines: for code that renders them, or skips them, without an object per line)."""
    name, f = open_trace(path, fmt)
    reader = FORMATS[name].reader
    read = getattr(reader, "read_blocks", reader.read) if blocks else reader.read
    with f:
        if not FORMATS[name].lines:  # the reader itself says where a record is cut
            yield from read(f)
            return
        e: Event | None = None
        for e in read(f):
            yield e
        if _cut_in_a_line(path, f):
            after = 0 if e is None else e.seq + (len(e.texts) if isinstance(e, LogLines) else 1)
            yield TraceWarning(seq=after, kind=TRUNCATED,
                               message="the file ends in the middle of a line: the trace was "
                                       "cut short, and what came after is missing")


def _cut_in_a_line(path: Path, f: BinaryIO) -> bool:
    """Whether a text trace ends without a newline: the tracers end every line, so it was cut
    (copied while written, a size limit, a crash inside a write). A file is looked at where it
    ends; a pipe, which the reader has read to its end, by the last byte it gave."""
    if not seekable(path):
        raw = getattr(f, "raw", None)
        return isinstance(raw, _Replay) and raw.last not in (b"", b"\n")
    try:
        if f.seek(0, io.SEEK_END) == 0:
            return False
        f.seek(-1, io.SEEK_END)
        return f.read(1) != b"\n"
    except OSError:
        return False
