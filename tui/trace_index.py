"""What the viewer knows about every record of a trace, at a small fixed cost per record.

Why: a 1 GB trace holds about nine million records; keeping each one decoded would take
gigabytes. The index keeps, per record, a handful of numbers in `array`s (offset, kind and
error flag, function, thread, session, return value: 20 bytes) and decodes only what is on
screen, through a small LRU cache. Filters, "next error" and statistics read the arrays.

Subclasses fill the arrays from a background thread (`scan`); the UI thread only reads them.
Every array is appended in an order that keeps a record complete before its number is
published in `rows`, so a reader never sees half a record.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from p11spy.decoder.events import Event
from p11spy.decoder.summary import Summary

# Record kinds (low nibble of `kinds`); the high bits are flags.
CALL, APDU, PCSC, PROCESS, MODULE, WARNING, LOG = range(1, 8)
KIND_MASK = 0x0F
ERROR = 0x10  # a call (or PC/SC call) that did not succeed
KIND_NAMES = {CALL: "call", APDU: "apdu", PCSC: "pcsc", PROCESS: "process", MODULE: "module",
              WARNING: "warning", LOG: "log"}

SLOWEST = 20  # slowest calls kept for the statistics screen
NO_ID = 0  # thread/session id of a record that has none


class LRU:
    """A small thread-safe LRU cache (the UI and a search worker both decode records)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class TraceIndex:
    """The records of one trace file: compact per-record arrays plus decode on demand."""

    format_name = "?"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offsets = array("Q")  # where the record starts (byte offset, or line number)
        self.kinds = array("B")  # kind | ERROR
        self.funcs = array("H")  # id in func_names
        self.threads = array("H")  # id in thread_keys (NO_ID: none)
        self.sessions = array("I")  # id in session_keys (NO_ID: none)
        self.rvs = array("H")  # id in rv_values
        self.rows = array("I")  # records shown as rows of the list (not children), in order
        self.errors = array("I")  # records of failed calls, in order: "next error" bisects it
        self.func_names: list[str] = []
        self.func_ids: dict[str, int] = {}
        self.thread_keys: list[tuple[int | None, int | None]] = [(None, None)]
        self.thread_ids: dict[tuple[int | None, int | None], int] = {(None, None): NO_ID}
        self.session_keys: list[tuple[int | None, int | None]] = [(None, None)]
        self.session_ids: dict[tuple[int | None, int | None], int] = {(None, None): NO_ID}
        self.rv_values: list[int | None] = []
        self.rv_ids: dict[int | None, int] = {}
        self._stats = Summary(top=SLOWEST)
        self.size = 0  # bytes of the file seen so far
        self.done_bytes = 0  # bytes indexed so far
        self.complete = False  # the scan reached the end (and is not following)
        self.failure: str | None = None  # why the scan stopped early
        self._events = LRU(4096)
        # record -> the worst severity of the diagnose findings that point at it (the call
        # list marks those rows); filled by the findings panel
        self.marks: dict[int, str] = {}
        self.findings_at: dict[int, list[Any]] = {}  # row -> the findings citing it (Finding)
        self.modules: set[str] = set()  # the modules that answered calls (where the trace says)

    # -- ids ---------------------------------------------------------------------------------

    def func_id(self, name: str) -> int:
        fid = self.func_ids.get(name)
        if fid is None:
            fid = self.func_ids[name] = len(self.func_names)
            self.func_names.append(name)
        return fid

    def thread_id(self, pid: int | None, tid: int | None) -> int:
        key = (pid, tid)
        i = self.thread_ids.get(key)
        if i is None:
            if len(self.thread_keys) >= 0xFFFF:
                return 0xFFFF
            i = self.thread_ids[key] = len(self.thread_keys)
            self.thread_keys.append(key)
        return i

    def session_id(self, pid: int | None, handle: int | None) -> int:
        if handle is None:
            return NO_ID
        key = (pid, handle)
        i = self.session_ids.get(key)
        if i is None:
            i = self.session_ids[key] = len(self.session_keys)
            self.session_keys.append(key)
        return i

    def rv_id(self, rv: int | None) -> int:
        i = self.rv_ids.get(rv)
        if i is None:
            i = self.rv_ids[rv] = len(self.rv_values)
            self.rv_values.append(rv)
        return i

    # -- what subclasses provide ---------------------------------------------------------------

    def scan(self, cancelled: Callable[[], bool], follow: bool = False) -> None:
        """Index the file (in a worker thread); with follow, keep polling it for growth."""
        raise NotImplementedError

    def _decode(self, rec: int) -> Event:
        raise NotImplementedError

    def kids(self, rec: int) -> Sequence[int]:
        """Records that belong to a call (its APDUs, PC/SC calls, log lines), in order."""
        return ()

    def call_of(self, rec: int) -> int:
        """The row a record shows under: itself for a call or a header, else its call."""
        parent = getattr(self.event(rec), "parent", None)  # a seq, which is a record here
        return parent if isinstance(parent, int) and 0 <= parent < len(self.kinds) else rec

    def record_of_seq(self, seq: int) -> int | None:
        """The record of the event the decoder numbers seq (diagnose cites seqs). Text formats
        keep one record per event in the reader's order, so the two are the same."""
        return seq if 0 <= seq < len(self.kinds) else None

    def apdu_kids(self, rec: int) -> Sequence[int]:
        """The children shown under a call in the list: APDUs and PC/SC calls."""
        kinds = self.kinds
        return [k for k in self.kids(rec) if kinds[k] & KIND_MASK in (APDU, PCSC)]

    def raw(self, rec: int) -> list[str]:
        """The record as it is in the file: a hex dump or the original lines."""
        raise NotImplementedError

    def time_of(self, rec: int) -> float | None:
        """Start time of a record (epoch seconds), cheaply."""
        return getattr(self.event(rec), "time", None)

    def raw_find(self, needle: bytes, start_rec: int,
                 cancelled: Callable[[], bool]) -> int | None:
        """First record at or after start_rec whose bytes contain needle; None when the
        format cannot tell (search then decodes records one by one)."""
        return None

    # -- shared ------------------------------------------------------------------------------

    @property
    def stats(self) -> Summary:
        """Counts for the statistics screen and the status line."""
        return self._stats

    def inside(self, older_than_s: float) -> list[tuple[str, int | None, float]]:
        """Calls entered and not yet returned, for longer than older_than_s: (function,
        thread id, seconds inside). Only formats with entry records know (p11spy)."""
        return []

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def progress(self) -> float:
        if self.complete:
            return 1.0
        return self.done_bytes / self.size if self.size else 0.0

    def event(self, rec: int) -> Event:
        """The decoded event of a record (cached)."""
        e = self._events.get(rec)
        if e is None:
            e = self._decode(rec)
            self._events.put(rec, e)
        return e

    def kind(self, rec: int) -> int:
        return self.kinds[rec] & KIND_MASK

    def failed(self, rec: int) -> bool:
        return bool(self.kinds[rec] & ERROR)

    def function(self, rec: int) -> str:
        return self.func_names[self.funcs[rec]]

    def next_error(self, rec: int, backwards: bool = False) -> int | None:
        """The failed call after (or before) a record, from the sorted error list."""
        errs = self.errors
        i = bisect_left(errs, rec)
        if backwards:
            return errs[i - 1] if i > 0 else None
        if i < len(errs) and errs[i] == rec:
            i += 1
        return errs[i] if i < len(errs) else None

    def thread_label(self, thread: int) -> str:
        return "-" if thread == NO_ID else f"T{thread}"

    def describe_thread(self, thread: int) -> str:
        pid, tid = self.thread_keys[thread] if thread < len(self.thread_keys) else (None, None)
        return f"T{thread}: pid {pid} tid {tid}"

    def session_label(self, session: int) -> str:
        pid, handle = self.session_keys[session]
        return "-" if handle is None else session_text(handle)


def session_text(handle: int) -> str:
    """A session handle: decimal when small (SoftHSM), hex when it is a pointer (OpenSC)."""
    return str(handle) if handle <= 0xFFFFF else f"{handle:#x}"
