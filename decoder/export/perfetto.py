"""Events as Chrome trace-event JSON, which ui.perfetto.dev and chrome://tracing open.

Each PKCS#11 call is a complete slice ("ph": "X") on its process and thread; the APDUs and
PC/SC calls it made are slices on the same thread inside it, so the viewers nest them under it.
Arguments, return values and status words are the slices' args (a PIN as its length and class,
rows.public_args). Written as a stream, one event a line: memory holds only the call in progress
on each thread and its children.

Times: trace-event timestamps are microseconds. Viewers nest slices by time alone, so a tracer's
coarse clock (OpenSC's debug log counts milliseconds) would put an APDU beside its call, or one
APDU inside another. Slices are therefore laid out in order on each thread: an event that would
start before the one before it ended starts when that one ended, and a call lasts at least as long
as what it made. A precise trace (p11spy's) is written as recorded. An event with no time at all
gets the time of the one before it. Thread ids too large for the viewers (pthread ids of
pcsc-spy) become small numbers, with the real id in the thread's name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from p11spy.decoder.events import Apdu, Call, Event, PcscCall, Process
from p11spy.decoder.export.rows import ins_label, public_args, public_command

TICK = 1.0  # microseconds: the least a slice takes (epoch times in doubles are no finer)
MAX_TID = (1 << 31) - 1
MAPPED_TID = 1 << 30  # first number given to a thread id too large for the viewers


@dataclass
class _Pending:
    """A call whose children may still come, and them."""

    call: Call
    children: list[Apdu | PcscCall] = field(default_factory=list)


class _Clock:
    """Timestamps in microseconds, made up where the trace has none."""

    def __init__(self) -> None:
        self.last = 0.0

    def at(self, t: float | None) -> float:
        self.last = t * 1e6 if t is not None else self.last + 1
        return self.last


def _apdu_args(a: Apdu) -> dict[str, Any]:
    out: dict[str, Any] = {"command": public_command(a), "sw": a.sw}
    if a.response is not None:
        out["response"] = a.response.hex()
    if a.error:
        out["error"] = a.error
    return out


class Writer:
    """Trace events to a text stream: begin, add each trace's events, end."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.begun = False
        self.first = True
        self.slices = 0
        self.named: set[int] = set()
        self.tids: dict[tuple[int, int], int] = {}
        self.start_trace("")

    def start_trace(self, name: str) -> None:
        self.trace = name
        self.clock = _Clock()
        self.pending: dict[tuple[int, int], _Pending] = {}
        self.cursor: dict[tuple[int, int], float] = {}

    def _begin(self) -> None:
        """The file's head, written with its first event: a trace that cannot be opened leaves
        nothing half-written on standard output."""
        self.out.write('{"displayTimeUnit": "ms", "traceEvents": [\n')
        self.begun = True

    def _emit(self, ev: dict[str, Any]) -> None:
        if not self.begun:
            self._begin()
        if not self.first:
            self.out.write(",\n")
        self.first = False
        self.out.write(json.dumps(ev, ensure_ascii=False, default=str))

    def _ids(self, e: Any) -> tuple[int, int]:
        pid = e.pid if e.pid is not None else 0
        tid = e.tid if e.tid is not None else pid
        if not 0 <= tid <= MAX_TID:
            key = (pid, tid)
            if key not in self.tids:
                self.tids[key] = MAPPED_TID + len(self.tids)
                self._emit({"ph": "M", "name": "thread_name", "pid": pid,
                            "tid": self.tids[key], "args": {"name": f"thread {tid:#x}"}})
            tid = self.tids[key]
        return pid, tid

    def _process(self, e: Process) -> None:
        pid = e.pid if e.pid is not None else 0
        if pid in self.named:
            return
        self.named.add(pid)
        exe = e.info.get("exe") or e.info.get("module") or self.trace
        self._emit({"ph": "M", "name": "process_name", "pid": pid,
                    "args": {"name": f"{os.path.basename(str(exe))} ({self.trace})"}})

    def _slice(self, e: Call | Apdu | PcscCall, ids: tuple[int, int], ts: float,
               dur: float) -> None:
        if isinstance(e, Call):
            name, cat = e.function, "pkcs11"
            args: dict[str, Any] = {"seq": e.seq, "rv": e.rv_name, **public_args(e)}
            if e.length_query:
                args["length_query"] = True
        elif isinstance(e, Apdu):
            name = f"APDU {ins_label(e) or '?'} {e.sw or e.error or ''}".rstrip()
            cat, args = "apdu", {"seq": e.seq, "parent": e.parent, **_apdu_args(e)}
        else:
            name, cat = e.function, "pcsc"
            args = {"seq": e.seq, "parent": e.parent, "rv": e.rv_name, **e.args}
        self._emit({"ph": "X", "name": name, "cat": cat, "ts": round(ts, 3),
                    "dur": round(dur, 3), "pid": ids[0], "tid": ids[1], "args": args})
        self.slices += 1

    def _place(self, ids: tuple[int, int], t: float | None) -> float:
        return max(self.clock.at(t), self.cursor.get(ids, 0.0))

    def _flush(self, ids: tuple[int, int]) -> None:
        p = self.pending.pop(ids, None)
        if p is None:
            return
        start = self._place(ids, p.call.time)
        at, laid = start, []
        for c in p.children:
            ts = max(self.clock.at(c.time), at)
            dur = c.duration_us or 0.0
            laid.append((c, ts, dur))
            at = ts + max(dur, TICK)
        end = max(start + (p.call.duration_us or 0.0), at if laid else start)
        self._slice(p.call, ids, start, end - start)
        for c, ts, dur in laid:
            self._slice(c, ids, ts, min(dur, end - ts))
        self.cursor[ids] = end if end > start else start + TICK

    def _alone(self, e: Apdu | PcscCall, ids: tuple[int, int]) -> None:
        ts = self._place(ids, e.time)
        dur = e.duration_us or 0.0
        self._slice(e, ids, ts, dur)
        self.cursor[ids] = ts + max(dur, TICK)

    def add(self, e: Event) -> None:
        if isinstance(e, Process):
            self._process(e)
        elif isinstance(e, Call):
            ids = self._ids(e)
            self._flush(ids)
            self.pending[ids] = _Pending(e)
        elif isinstance(e, (Apdu, PcscCall)):
            ids = self._ids(e)
            p = self.pending.get(ids)
            if p is not None and e.parent is not None and p.call.seq == e.parent:
                p.children.append(e)
            else:
                self._flush(ids)
                self._alone(e, ids)

    def end_trace(self) -> None:
        for ids in list(self.pending):
            self._flush(ids)

    def end(self) -> None:
        if not self.begun:
            self._begin()
        self.out.write("\n]}\n")


def write(traces: Iterable[tuple[str, Iterable[Event]]], out: TextIO) -> int:
    """The events of each (name, events) as one trace-event file; returns the slices written.
    Several traces go into one file, each process under its own name."""
    w = Writer(out)
    for name, events in traces:
        w.start_trace(name)
        for e in events:
            w.add(e)
        w.end_trace()
    w.end()
    return w.slices
