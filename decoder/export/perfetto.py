"""Events as Chrome trace-event JSON, which ui.perfetto.dev and chrome://tracing open.

Each PKCS#11 call is a complete slice ("ph": "X") on its process and thread; the APDUs and
PC/SC calls it made are slices on the same thread inside it, so the viewers nest them under it.
Arguments, return values and status words are the slices' args (a PIN as its length and class,
rows.public_args). Written as a stream, one event a line: memory stays flat on any trace.

Times: trace-event timestamps are microseconds. A trace that records no time for an event
(pkcs11-spy logs from old versions) gets the time of the event before it, one microsecond on,
so the order still shows; a child is kept inside its call's span where clocks of coarser
resolution would put it just outside (the viewers would otherwise not nest it).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, TextIO

from p11spy.decoder.events import Apdu, Call, Event, PcscCall, Process
from p11spy.decoder.export.rows import ins_label, public_args, public_command

RECENT = 4096  # calls whose span is remembered for the children that follow them


class _Clock:
    """Timestamps in microseconds, made up where the trace has none."""

    def __init__(self) -> None:
        self.last = 0.0

    def at(self, t: float | None) -> float:
        self.last = t * 1e6 if t is not None else self.last + 1
        return self.last


def _ids(e: Any) -> tuple[int, int]:
    pid = e.pid if e.pid is not None else 0
    return pid, e.tid if e.tid is not None else pid


def _apdu_args(a: Apdu) -> dict[str, Any]:
    out: dict[str, Any] = {"command": public_command(a), "sw": a.sw}
    if a.response is not None:
        out["response"] = a.response.hex()
    if a.error:
        out["error"] = a.error
    return out


class Writer:
    """Trace events to a text stream: begin, add events, end."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.clock = _Clock()
        self.spans: OrderedDict[int, tuple[float, float]] = OrderedDict()
        self.named: set[int] = set()
        self.first = True
        self.slices = 0

    def begin(self) -> None:
        self.out.write('{"displayTimeUnit": "ms", "traceEvents": [\n')

    def _emit(self, ev: dict[str, Any]) -> None:
        if not self.first:
            self.out.write(",\n")
        self.first = False
        self.out.write(json.dumps(ev, ensure_ascii=False, default=str))

    def _process(self, e: Process, trace: str) -> None:
        pid = e.pid if e.pid is not None else 0
        if pid in self.named:
            return
        self.named.add(pid)
        exe = e.info.get("exe") or e.info.get("module") or trace
        self._emit({"ph": "M", "name": "process_name", "pid": pid,
                    "args": {"name": f"{os.path.basename(str(exe))} ({trace})"}})

    def _slice(self, name: str, cat: str, ts: float, dur: float | None, e: Any,
               args: dict[str, Any]) -> None:
        pid, tid = _ids(e)
        self._emit({"ph": "X", "name": name, "cat": cat, "ts": round(ts, 3),
                    "dur": round(dur or 0.0, 3), "pid": pid, "tid": tid, "args": args})
        self.slices += 1

    def _child(self, e: Apdu | PcscCall) -> tuple[float, float | None]:
        ts = self.clock.at(e.time)
        dur = e.duration_us or 0.0
        span = self.spans.get(e.parent) if e.parent is not None else None
        if span is not None:  # keep it inside its call
            start, end = span
            ts = min(max(ts, start), end)
            dur = min(dur, end - ts)
        return ts, dur

    def add(self, e: Event, trace: str) -> None:
        if isinstance(e, Process):
            self._process(e, trace)
        elif isinstance(e, Call):
            ts = self.clock.at(e.time)
            args = {"seq": e.seq, "rv": e.rv_name, **public_args(e)}
            if e.length_query:
                args["length_query"] = True
            self._slice(e.function, "pkcs11", ts, e.duration_us, e, args)
            self.spans[e.seq] = (ts, ts + (e.duration_us or 0.0))
            if len(self.spans) > RECENT:
                self.spans.popitem(last=False)
        elif isinstance(e, Apdu):
            ts, dur = self._child(e)
            self._slice(f"APDU {ins_label(e) or '?'} {e.sw or e.error or ''}".rstrip(), "apdu", ts,
                        dur, e, {"seq": e.seq, "parent": e.parent, **_apdu_args(e)})
        elif isinstance(e, PcscCall):
            ts, dur = self._child(e)
            self._slice(e.function, "pcsc", ts, dur, e,
                        {"seq": e.seq, "parent": e.parent, "rv": e.rv_name, **e.args})

    def end(self) -> None:
        self.out.write("\n]}\n")


def write(traces: Iterable[tuple[str, Iterable[Event]]], out: TextIO) -> int:
    """The events of each (name, events) as one trace-event file; returns the slices written.
    Several traces go into one file, each process under its own name."""
    w = Writer(out)
    w.begin()
    for name, events in traces:
        w.spans.clear()
        for e in events:
            w.add(e, name)
    w.end()
    return w.slices
