"""The event model every reader produces and every renderer, the TUI and diagnosis consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    type: str = "call"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "call", "seq": self.seq, "function": self.function, "rv": self.rv,
            "rv_name": self.rv_name, "pid": self.pid, "tid": self.tid, "time": self.time,
            "duration_us": self.duration_us, "args": self.args,
        }
        if self.length_query:
            out["length_query"] = True
        return out


@dataclass
class Process(Event):
    """A process started writing the trace (the header a tracer writes)."""

    pid: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    type: str = "process"

    def to_json(self) -> dict[str, Any]:
        return {"type": "process", "seq": self.seq, "pid": self.pid, **self.info}


@dataclass
class ModuleInfo(Event):
    pid: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    type: str = "module"

    def to_json(self) -> dict[str, Any]:
        return {"type": "module", "seq": self.seq, "pid": self.pid, **self.info}


@dataclass
class Warning_(Event):
    """Something the reader could not read; it says where and goes on."""

    message: str = ""
    type: str = "warning"

    def to_json(self) -> dict[str, Any]:
        return {"type": "warning", "seq": self.seq, "message": self.message}
