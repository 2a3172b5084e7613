"""Events flattened to rows of one stable schema: what `export --format parquet` writes and
`p11spy query` reads, and what any other flat view of a trace (a table in a report) can use.

A row carries where the event came from (host, trace file, format, process, program, module) so
that the rows of many traces from many servers can sit in one table. A PIN never reaches a row:
a PIN argument becomes its length and character class, and the data field of an APDU that
carries one (VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER) is left out. Other values are
as the trace has them (`p11spy redact` a trace first to leave out more).

The schema is versioned (SCHEMA_VERSION): columns are only ever added, never renamed or retyped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from p11spy.decoder.events import (
    Apdu,
    Call,
    Event,
    LogLine,
    ModuleInfo,
    PcscCall,
    Process,
    TraceWarning,
)
from p11spy.facts.pkcs11.functions import BY_NAME
from p11spy.facts.pkcs11.model import Role

SCHEMA_VERSION = 1

# (column, DuckDB type, what it holds): the documented schema, in column order.
SCHEMA: tuple[tuple[str, str, str], ...] = (
    ("schema_version", "INTEGER", "version of this schema (1)"),
    ("host", "VARCHAR", "the machine: --host, else the host a p11spy trace names"),
    ("trace_file", "VARCHAR", "the trace file as named to the exporter"),
    ("format", "VARCHAR", "the trace's format: p11spy, pkcs11-spy, opensc-debug, pcsc-spy"),
    ("pid", "BIGINT", "process id, where the trace says"),
    ("tid", "BIGINT", "thread id, where the trace says"),
    ("exe", "VARCHAR", "the program of the process, where the trace says"),
    ("module", "VARCHAR", "the PKCS#11 module that answered, where the trace says"),
    ("seq", "BIGINT", "the event's position in its trace, from 0"),
    ("type", "VARCHAR", "call, apdu, pcsc, log, process, module or warning"),
    ("parent", "BIGINT", "for apdu, pcsc and log rows: seq of the call they happened under"),
    ("function", "VARCHAR", "PKCS#11 or PC/SC function; for an APDU its instruction's name"),
    ("rv", "UBIGINT", "the return value as a number (CK_RV or PC/SC code)"),
    ("rv_name", "VARCHAR", "the return value's name (CKR_..., SCARD_...)"),
    ("failed", "BOOLEAN", "the call returned something other than OK (NULL: not recorded)"),
    ("time", "DOUBLE", "start, in seconds since 1970 (UTC)"),
    ("duration_us", "DOUBLE", "how long it took, in microseconds"),
    ("length_query", "BOOLEAN", "a call asking only for a size (NULL buffer)"),
    ("args", "VARCHAR", "the decoded arguments as JSON (PINs as length and class)"),
    ("sw", "VARCHAR", "an APDU's status word (4 hex digits)"),
    ("command", "VARCHAR", "an APDU's command in hex (a PIN's data field left out)"),
    ("response", "VARCHAR", "an APDU's response in hex"),
    ("text", "VARCHAR", "a log line's or a warning's text"),
)
COLUMNS = tuple(c for c, _t, _d in SCHEMA)
_EMPTY = dict.fromkeys(COLUMNS)  # a row's dict in column order: filled, then read in order


def pin_summary(value: Any) -> Any:
    """What a PIN argument may show anywhere: its length and character class."""
    from p11spy.decoder.diagnose.rules.pins import pin_facts  # late: the rule table is big

    if value is None:
        return None
    length, cls, extras = pin_facts(value)
    out: dict[str, Any] = {"length": length, "class": cls or "not recorded"}
    if extras:
        out["extras"] = extras
    return out


_PIN_PARAMS = {f.name: frozenset(p.name for p in f.params if p.role is Role.PIN)
               for f in BY_NAME.values()}


def public_args(c: Call) -> dict[str, Any]:
    """A call's arguments with every PIN replaced by its length and class."""
    pins = _PIN_PARAMS.get(c.function, frozenset())
    if not pins & c.args.keys():
        return c.args
    return {k: pin_summary(v) if k in pins else v for k, v in c.args.items()}


def public_command(a: Apdu) -> str:
    """An APDU's command in hex, without the data field of one that carries a PIN."""
    from p11spy.decoder.apdu import pin_field

    span = pin_field(a.command)
    if a.masked or span is not None:
        start = span[0] if span else 5
        return a.command[:start].hex()
    return a.command.hex()


@dataclass
class Origin:
    """Where rows come from; the process's host, program and module are learnt as the trace
    goes. host, when given (--host), names the machine of every row instead."""

    trace_file: str
    format: str
    host: str | None = None
    exe: dict[int | None, str] = field(default_factory=dict)
    module: dict[int | None, str] = field(default_factory=dict)
    hosts: dict[int | None, str] = field(default_factory=dict)
    last_host: str | None = None  # for rows of no known process (a warning between records)

    def learn(self, e: Event) -> None:
        if isinstance(e, Process):
            if e.host is not None:
                self.hosts[e.pid] = self.last_host = e.host
            if e.info.get("exe"):
                self.exe[e.pid] = str(e.info["exe"])
            if e.info.get("module"):
                self.module[e.pid] = str(e.info["module"])
        elif isinstance(e, ModuleInfo) and e.info.get("loaded"):
            self.module[e.pid] = str(e.info["loaded"])


def _failed(rv: int | None) -> bool | None:
    return None if rv is None else rv != 0


def ins_label(a: Apdu) -> str | None:
    from p11spy.decoder.apdu import ins_name

    if len(a.command) < 2:
        return None
    return ins_name(a.command[0], a.command[1]) or f"INS {a.command[1]:02X}"


def _json(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, default=str)


def row(e: Event, o: Origin) -> tuple[Any, ...]:
    """One event as a tuple in COLUMNS order."""
    pid = getattr(e, "pid", None)
    base = dict(_EMPTY)
    host = o.host if o.host is not None else o.hosts.get(pid, o.last_host)
    base.update(schema_version=SCHEMA_VERSION, host=host, trace_file=o.trace_file,
                format=o.format, pid=pid, tid=getattr(e, "tid", None), exe=o.exe.get(pid),
                module=o.module.get(pid), seq=e.seq, type=e.type,
                parent=getattr(e, "parent", None), time=getattr(e, "time", None),
                duration_us=getattr(e, "duration_us", None))
    if isinstance(e, Call):
        base.update(function=e.function, rv=e.rv, rv_name=e.rv_name, failed=_failed(e.rv),
                    length_query=e.length_query, args=_json(public_args(e)),
                    module=e.module or base["module"])
    elif isinstance(e, PcscCall):
        base.update(function=e.function, rv=e.rv, rv_name=e.rv_name, failed=_failed(e.rv),
                    args=_json(e.args))
    elif isinstance(e, Apdu):
        base.update(function=ins_label(e), sw=e.sw, command=public_command(e),
                    response=None if e.response is None else e.response.hex(),
                    failed=None if e.error is None else True, text=e.error)
    elif isinstance(e, LogLine):
        base.update(text=e.text)
    elif isinstance(e, TraceWarning):
        base.update(text=e.message)
    elif isinstance(e, (Process, ModuleInfo)):
        base.update(args=_json(e.info))
    return tuple(base.values())


def rows(events: Iterable[Event], origin: Origin) -> Iterator[tuple[Any, ...]]:
    for e in events:
        origin.learn(e)
        yield row(e, origin)
