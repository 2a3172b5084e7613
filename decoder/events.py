"""The event model every reader produces and every renderer, the TUI and diagnosis consume."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


class Undated(float):
    """Epoch seconds of a trace that writes the time of day without a date (OpenSC's debug
    log): the date is the reader's guess from the file's modification time, so it is shown as
    guessed (JSON: date_guessed) or left out (text), never as a fact."""


def _time(t: float | None) -> dict[str, Any]:
    # a plain float in the row: orjson refuses float subclasses, and the json module it then
    # falls back on costs ten times as much
    return {"time": float(t), "date_guessed": True} if isinstance(t, Undated) else {"time": t}


@dataclass
class Event:
    seq: int  # order in the input, from 0
    type: str = "event"

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class Call(Event):
    """One PKCS#11 call. rv is None where the trace does not say."""

    function: str = ""
    rv: int | None = None
    rv_name: str | None = None
    pid: int | None = None
    tid: int | None = None
    time: float | None = None  # epoch seconds at entry
    duration_us: float | None = None
    args: dict[str, Any] = field(default_factory=dict)
    length_query: bool = False
    call_number: int | None = None  # the tracer's own per-process counter
    source: str | None = None  # where in the input (e.g. "offset 1234" or "line 12")
    module: str | None = None  # path of the module that answered, where the trace says
    # The trace holds the call's entry and no return: the process crashed, was killed or hung
    # inside it (p11spy's ENTRY records; rv is then None).
    never_returned: bool = False
    type: str = "call"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "call", "seq": self.seq, "function": self.function, "rv": self.rv,
            "rv_name": self.rv_name, "pid": self.pid, "tid": self.tid, **_time(self.time),
            "duration_us": self.duration_us, "args": self.args,
        }
        if self.length_query:
            out["length_query"] = True
        if self.module:
            out["module"] = self.module
        if self.never_returned:
            out["never_returned"] = True
        return out


@dataclass
class Apdu(Event):
    """One command/response exchange with the card. parent is the seq of the PKCS#11 call
    that caused it, or None when the trace does not tie it to a call."""

    parent: int | None = None
    command: bytes = b""
    response: bytes | None = None  # None when the trace shows no response
    pid: int | None = None
    tid: int | None = None
    time: float | None = None
    duration_us: float | None = None
    masked: bool = False  # the command's data was masked (a PIN)
    error: str | None = None  # the PC/SC error when the exchange failed (no response)
    source: str | None = None
    type: str = "apdu"

    @property
    def sw(self) -> str | None:
        r = self.response
        return r[-2:].hex().upper() if r is not None and len(r) >= 2 else None

    def to_json(self) -> dict[str, Any]:
        from p11spy.decoder.apdu import ins_name  # late: only needed when rendering

        ins = self.command[1] if len(self.command) >= 2 else None
        return {
            "type": "apdu", "seq": self.seq, "parent": self.parent,
            "command": self.command.hex(), "response": None if self.response is None
            else self.response.hex(), "sw": self.sw,
            "ins": None if ins is None else f"{ins:02X}",
            "ins_name": None if ins is None else ins_name(self.command[0], ins),
            "pid": self.pid, "tid": self.tid, **_time(self.time),
            "duration_us": self.duration_us, **({"masked": True} if self.masked else {}),
            **({"error": self.error} if self.error else {}),
        }


@dataclass
class PcscCall(Event):
    """A PC/SC call other than an APDU exchange (connect, status, transactions, ...)."""

    parent: int | None = None
    function: str = ""
    rv: int | None = None
    rv_name: str | None = None
    pid: int | None = None
    tid: int | None = None
    time: float | None = None
    duration_us: float | None = None
    args: dict[str, Any] = field(default_factory=dict)
    type: str = "pcsc"

    def to_json(self) -> dict[str, Any]:
        return {"type": "pcsc", "seq": self.seq, "parent": self.parent,
                "function": self.function, "rv": self.rv, "rv_name": self.rv_name,
                "pid": self.pid, "tid": self.tid, **_time(self.time),
                "duration_us": self.duration_us, "args": self.args}


@dataclass
class LogLine(Event):
    """A line a library logged (OpenSC's debug output), kept under what it belongs to."""

    parent: int | None = None
    text: str = ""
    pid: int | None = None
    tid: int | None = None
    time: float | None = None
    level: str | None = None
    type: str = "log"

    def to_json(self) -> dict[str, Any]:
        return {"type": "log", "seq": self.seq, "parent": self.parent, "text": self.text,
                "pid": self.pid, "tid": self.tid, **_time(self.time)}


@dataclass
class LogLines(Event):
    """Consecutive lines one thread logged under one parent, as one event: an OpenSC debug log
    has a line for nearly everything, and an object per line cost more than reading the file
    did. Line i has seq `seq + i`. `lines()` gives each as a LogLine for code that wants them
    one by one (events.log_lines does it for a whole stream); the renderers read the lists."""

    parent: int | None = None
    texts: list[str] = field(default_factory=list)
    times: list[float | None] = field(default_factory=list)
    pid: int | None = None
    tid: int | None = None
    type: str = "logs"

    def lines(self) -> Iterator[LogLine]:
        seq, parent, pid, tid = self.seq, self.parent, self.pid, self.tid
        for i, (text, t) in enumerate(zip(self.texts, self.times, strict=True)):
            yield LogLine(seq + i, "log", parent, text, pid, tid, t)

    def to_json(self) -> dict[str, Any]:
        raise TypeError("LogLines is one JSON row per line: render each of lines()")


def log_lines(events: Iterable[Event]) -> Iterator[Event]:
    """The events with every LogLines taken apart into its LogLines."""
    for e in events:
        if type(e) is LogLines:
            yield from e.lines()
        else:
            yield e


@dataclass
class Process(Event):
    """A process started writing the trace (the header a tracer writes)."""

    pid: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    type: str = "process"

    def to_json(self) -> dict[str, Any]:
        return {"type": "process", "seq": self.seq, "pid": self.pid, **self.info}

    @property
    def host(self) -> str | None:
        """The machine the process ran on, where the header names it (p11spy traces record
        uname's nodename since the host key was added; older traces and other tools do not)."""
        host = self.info.get("host")
        return host if isinstance(host, str) and host else None


@dataclass
class ModuleInfo(Event):
    pid: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    type: str = "module"

    def to_json(self) -> dict[str, Any]:
        return {"type": "module", "seq": self.seq, "pid": self.pid, **self.info}


@dataclass
class TraceWarning(Event):
    """Something the reader could not read; it says where and goes on. kind marks the two that
    make a trace incomplete, so that nothing is concluded from what is missing: TRUNCATED (the
    file ends inside a record or a line) and DROPPED (the tracer could not write records)."""

    message: str = ""
    kind: str | None = None
    type: str = "warning"

    def to_json(self) -> dict[str, Any]:
        return {"type": "warning", "seq": self.seq, "message": self.message,
                **({"kind": self.kind} if self.kind else {})}


TRUNCATED = "truncated"
DROPPED = "dropped"
