"""The rows the list shows: all records, or a filtered subset, with APDUs opened under calls.

Why an array of numbers: a filter over nine million calls must not build nine million
objects. A view is either the index's own `rows` (nothing filtered or opened: no copy at all)
or an `array('Q')` of entries `record << 16 | k`, where k = 0 is the record's own row and
k = i + 1 its i-th APDU. Entries stay sorted, so finding a record's row is a bisection, and
opening a call is one slice assignment.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from p11spy.tui.trace_index import ERROR, KIND_MASK, LRU, WARNING, TraceIndex

SHIFT = 16
LOW = (1 << SHIFT) - 1
MAX_KIDS = LOW - 1  # APDUs listed under one call (the detail pane shows them all)


@dataclass(frozen=True)
class Filter:
    """What the list keeps: failed calls only, some functions, threads or sessions."""

    errors: bool = False
    functions: frozenset[int] = field(default_factory=frozenset)
    threads: frozenset[int] = field(default_factory=frozenset)
    sessions: frozenset[int] = field(default_factory=frozenset)

    @property
    def active(self) -> bool:
        return bool(self.errors or self.functions or self.threads or self.sessions)

    def describe(self, index: TraceIndex) -> str:
        parts = []
        if self.errors:
            parts.append("errors")
        if self.functions:
            parts.append(",".join(sorted(index.func_names[f] for f in self.functions)))
        if self.threads:
            parts.append(",".join(index.thread_label(t) for t in sorted(self.threads)))
        if self.sessions:
            parts.append("session " + ",".join(index.session_label(s)
                                               for s in sorted(self.sessions)))
        return " ".join(parts)

    def select(self, index: TraceIndex, recs: Sequence[int]) -> Sequence[int]:
        kinds, funcs = index.kinds, index.funcs
        out: Sequence[int] = recs
        if self.errors:
            out = [r for r in out if kinds[r] & ERROR or kinds[r] & KIND_MASK == WARNING]
        if self.functions:
            fs = self.functions
            out = [r for r in out if funcs[r] in fs]
        if self.threads:
            ts, threads = self.threads, index.threads
            out = [r for r in out if threads[r] in ts]
        if self.sessions:
            ss, sessions = self.sessions, index.sessions
            out = [r for r in out if sessions[r] in ss]
        return out


class View:
    def __init__(self, index: TraceIndex, flt: Filter | None = None,
                 expand_all: bool = False, expanded: set[int] | None = None) -> None:
        self.index = index
        self.filter = flt or Filter()
        self.expand_all = expand_all
        self.expanded: set[int] = expanded or set()
        self.entries: array | None = None  # None: the index's rows, unfiltered
        self.upto = 0  # index rows considered so far (materialized views)
        self._lock = threading.RLock()
        self._kids = LRU(256)
        if self.filter.active or expand_all or self.expanded:
            self.entries = array("Q")

    # -- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.index.rows) if self.entries is None else len(self.entries)

    @property
    def caught_up(self) -> bool:
        return self.entries is None or self.upto >= len(self.index.rows)

    def entry(self, pos: int) -> int:
        if self.entries is None:
            return self.index.rows[pos] << SHIFT
        return self.entries[pos]

    def record(self, pos: int) -> tuple[int, int | None]:
        """(call or top record, child record or None) of the row at pos."""
        e = self.entry(pos)
        rec, k = e >> SHIFT, e & LOW
        if not k:
            return rec, None
        kids = self.shown_kids(rec)
        return rec, kids[k - 1] if k - 1 < len(kids) else None

    def shown_kids(self, rec: int) -> Sequence[int]:
        """The children listed under a call: its APDUs and PC/SC calls (not log lines)."""
        got = self._kids.get(rec)
        if got is None:
            got = list(self.index.apdu_kids(rec))[:MAX_KIDS]
            self._kids.put(rec, got)
        return got

    def nearest(self, rec: int) -> int:
        """The position of a record's row, or of the first row after it."""
        if self.entries is None:
            return bisect_left(self.index.rows, rec)
        return bisect_left(self.entries, rec << SHIFT)

    def pos_of(self, rec: int) -> int | None:
        pos = self.nearest(rec)
        if pos < len(self) and self.entry(pos) == rec << SHIFT:
            return pos
        return None

    def is_open(self, rec: int) -> bool:
        return self.expand_all or rec in self.expanded

    # -- changing ------------------------------------------------------------------------------

    def extend(self, limit: int = 1 << 30, cancelled: Callable[[], bool] | None = None) -> int:
        """Consider up to limit more of the index's rows; returns how many rows were added."""
        if self.entries is None:
            return 0
        added = 0
        rows = self.index.rows
        step = 1 << 16
        while limit > 0 and self.upto < len(rows):
            if cancelled is not None and cancelled():
                break
            with self._lock:
                a = self.upto
                b = min(len(rows), a + min(step, limit))
                chosen = self.filter.select(self.index, rows[a:b])
                before = len(self.entries)
                if self.expand_all or self.expanded:
                    for r in chosen:
                        self.entries.append(r << SHIFT)
                        if self.is_open(r):
                            self.entries.extend(self._kid_entries(r))
                else:
                    self.entries.extend([r << SHIFT for r in chosen])
                self.upto = b
                added += len(self.entries) - before
                limit -= b - a
        return added

    def _kid_entries(self, rec: int) -> list[int]:
        base = rec << SHIFT
        return [base | (i + 1) for i in range(len(self.shown_kids(rec)))]

    def toggle(self, rec: int) -> bool:
        """Open or close the APDUs under a call; False when it has none."""
        if not self.shown_kids(rec):
            return False
        with self._lock:
            if self.entries is None:
                self.entries = array("Q", [r << SHIFT for r in self.index.rows])
                self.upto = len(self.index.rows)
            pos = self.pos_of(rec)
            if self.is_open(rec):
                self.expanded.discard(rec)
                if self.expand_all:  # closing one under "open all": keep the others open
                    self.expand_all = False
                    self.expanded = {r >> SHIFT for r in self.entries if r & LOW}
                    self.expanded.discard(rec)
                if pos is not None:
                    end = pos + 1
                    while end < len(self.entries) and self.entries[end] >> SHIFT == rec:
                        end += 1
                    del self.entries[pos + 1:end]
            else:
                self.expanded.add(rec)
                if pos is not None:
                    self.entries[pos + 1:pos + 1] = array("Q", self._kid_entries(rec))
        return True
