"""Index of a text trace (pkcs11-spy, OpenSC debug, ...) built by running its reader.

Why the difference from p11_index: a text format's calls cannot be decoded from an arbitrary
offset (a call spans lines that depend on what came before, and OpenSC interleaves threads), so
the scan runs the format's reader from the start in a worker thread and keeps the events it
yields. Text logs are far smaller than binary traces for the same calls, and the same compact
arrays back filters and statistics. The raw view re-reads the original lines through a sparse
table of line checkpoints (one per chunk read), not a copy of the text.
"""

from __future__ import annotations

import re
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from p11spy.decoder.events import Apdu, Call, Event, LogLine, ModuleInfo, PcscCall, Process
from p11spy.decoder.lines import LongLine, blocks
from p11spy.tui.trace_index import (
    APDU,
    CALL,
    ERROR,
    LOG,
    MODULE,
    NO_ID,
    PCSC,
    PROCESS,
    WARNING,
    TraceIndex,
)

POLL = 0.25
RAW_LINES = 400  # lines of one call shown in the raw view
_LINE = re.compile(r"line (\d+)")


class LineFile:
    """A read-only file wrapper that hands a reader whole lines only, records where chunks
    start (line number, byte offset) and, when following, waits at the end for more."""

    def __init__(self, path: Path, cancelled: Callable[[], bool], follow: bool) -> None:
        self.f = path.open("rb")
        self.cancelled = cancelled
        self.follow = follow
        self.line = 1  # line number of the next byte handed out
        self.pos = 0  # file offset of the next byte handed out
        self.checkpoints_line = array("Q", [1])
        self.checkpoints_pos = array("Q", [0])
        self._buf = b""

    def fileno(self) -> int:
        return self.f.fileno()

    def close(self) -> None:
        self.f.close()

    def _fill(self, want: int) -> bool:
        """More bytes into the buffer; False at the end (or when cancelled)."""
        while True:
            more = self.f.read(max(want, 1 << 16))
            if more:
                self._buf += more
                return True
            if not self.follow or self.cancelled():
                return False
            time.sleep(POLL)

    def _hand_out(self, n: int) -> bytes:
        out, self._buf = self._buf[:n], self._buf[n:]
        if self.pos and out:
            self.checkpoints_line.append(self.line)
            self.checkpoints_pos.append(self.pos)
        self.line += out.count(b"\n")
        self.pos += len(out)
        return out

    def read(self, n: int = -1) -> bytes:
        size = n if n and n > 0 else 1 << 20
        while True:
            cut = self._buf.rfind(b"\n", 0, size) + 1
            if cut:
                return self._hand_out(cut)
            if len(self._buf) >= size:
                return self._hand_out(size)  # a line longer than asked for
            if not self._fill(size):
                return self._hand_out(len(self._buf))

    def readline(self, limit: int = -1) -> bytes:
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0 and (limit < 0 or nl < limit):
                return self._hand_out(nl + 1)
            if 0 <= limit <= len(self._buf):
                return self._hand_out(limit)
            if not self._fill(1 << 16):
                return self._hand_out(len(self._buf))


class EventIndex(TraceIndex):
    def __init__(self, path: Path, fmt: str) -> None:
        super().__init__(path)
        self.format_name = fmt
        self.events: list[Event] = []
        self._kids: dict[int, list[int]] = {}
        self._by_seq: dict[int, int] = {}  # seq of calls -> record
        self._names = {k: self.func_id(n) for k, n in (
            (PROCESS, "(process)"), (MODULE, "(module)"), (WARNING, "(warning)"),
            (LOG, "(log)"))}
        self._file: LineFile | None = None
        self.size = path.stat().st_size

    def scan(self, cancelled: Callable[[], bool], follow: bool = False) -> None:
        from p11spy.decoder.formats.registry import formats

        reader = formats()[self.format_name]
        lf = LineFile(self.path, cancelled, follow)
        self._file = lf
        try:
            for e in reader.read(lf):
                self._add(e)
                self.done_bytes = lf.pos
                if lf.pos > self.size:
                    self.size = lf.pos
                if cancelled():
                    return
            self.complete = not cancelled()
        finally:
            lf.close()

    def _add(self, e: Event) -> None:
        rec = len(self.events)
        self.events.append(e)
        pid = getattr(e, "pid", None)
        thread = self.thread_id(pid, getattr(e, "tid", None))
        parent = getattr(e, "parent", None)
        owner = self._by_seq.get(parent) if parent is not None else None
        session = NO_ID
        if isinstance(e, Call):
            kind = CALL
            fid = self.func_id(e.function or "?")
            handle = e.args.get("hSession")
            if handle is None and e.function == "C_OpenSession":
                handle = e.args.get("phSession")
            if isinstance(handle, dict):
                handle = handle.get("out", handle.get("in"))
            session = self.session_id(pid, handle if isinstance(handle, int) else None)
            failed = bool(e.rv)
            self._by_seq[e.seq] = rec
            if e.module:
                self.modules.add(e.module)
        elif isinstance(e, Apdu):
            kind, fid, failed = APDU, self.func_id("APDU"), bool(e.error)
        elif isinstance(e, PcscCall):
            kind, fid, failed = PCSC, self.func_id(e.function or "?"), bool(e.rv)
        elif isinstance(e, LogLine):
            kind, fid, failed = LOG, self._names[LOG], False
        elif isinstance(e, Process):
            kind, fid, failed = PROCESS, self._names[PROCESS], False
        elif isinstance(e, ModuleInfo):
            kind, fid, failed = MODULE, self._names[MODULE], False
        else:
            kind, fid, failed = WARNING, self._names[WARNING], False
        source = getattr(e, "source", None) or ""
        m = _LINE.match(source)
        self.offsets.append(int(m.group(1)) if m else 0)  # the first line (0: not known)
        self.kinds.append(kind | ERROR if failed else kind)
        self.funcs.append(fid)
        self.threads.append(thread)
        self.sessions.append(session)
        self.rvs.append(self.rv_id(getattr(e, "rv", None)))
        self._stats.add(e)  # decode --summary's counts: rec is the seq here
        if owner is not None:
            self._kids.setdefault(owner, []).append(rec)
            return
        if failed and kind in (CALL, PCSC, APDU):  # a PC/SC call of its own counts too
            self.errors.append(rec)
        self.rows.append(rec)

    def _decode(self, rec: int) -> Event:
        return self.events[rec]

    def event(self, rec: int) -> Event:
        return self.events[rec]

    def kids(self, rec: int) -> Sequence[int]:
        return self._kids.get(rec, ())

    def time_of(self, rec: int) -> float | None:
        return getattr(self.events[rec], "time", None)

    def raw(self, rec: int) -> list[str]:
        first = self.offsets[rec]
        if not first:
            e = self.events[rec]
            return [f"({type(e).__name__} without a source line)", str(e.to_json())]
        last = first
        for k in self.kids(rec):
            last = max(last, self.offsets[k])
        if last == first:
            last = self._next_line(rec, first) - 1
        last = min(last, first + RAW_LINES - 1)
        return self.read_lines(first, last)

    def _next_line(self, rec: int, first: int) -> int:
        """The first line of a later record (calls of one thread do not overlap)."""
        for r in range(rec + 1, min(rec + 64, len(self.offsets))):
            line = self.offsets[r]
            if line > first:
                return line
        return first + 1

    def read_lines(self, first: int, last: int) -> list[str]:
        """Lines first..last (1-based) of the file, found from the nearest checkpoint."""
        lf = self._file
        if lf is None:
            return []
        i = bisect_right(lf.checkpoints_line, first) - 1
        line, pos = lf.checkpoints_line[i], lf.checkpoints_pos[i]
        out: list[str] = []
        with self.path.open("rb") as f:
            f.seek(pos)
            for raw in _lines(f):
                if line > last:
                    break
                if line >= first:
                    out.append(f"{line:>7}  " + raw.decode("utf-8", "replace").rstrip("\r\n"))
                line += 1
        return out


def _lines(f: BinaryIO) -> Iterator[bytes]:
    """The lines from f's position on, without their newline; one longer than 64 KiB cut
    there."""
    for block in blocks(f, 1 << 16):
        if isinstance(block, LongLine):
            yield block.head
        else:
            lines = block.split(b"\n")
            if block[-1:] == b"\n":
                lines.pop()
            yield from lines


