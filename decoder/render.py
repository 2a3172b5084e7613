"""Text and JSON Lines renderings of events."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from functools import lru_cache
from itertools import count
from typing import Any, BinaryIO, TextIO

from p11spy.decoder.events import (
    Apdu,
    Call,
    Event,
    LogLines,
    ModuleInfo,
    PcscCall,
    Process,
    TraceWarning,
    Undated,
)
from p11spy.decoder.values import format_time

TEXT_BYTES = 48  # hex characters of a long value shown in text before it is cut


def _short(v: Any) -> str:
    if isinstance(v, str):
        if len(v) > TEXT_BYTES * 2 and all(c in "0123456789abcdef" for c in v):
            return f"{v[:TEXT_BYTES * 2]}... ({len(v) // 2} bytes)"
        return v
    if isinstance(v, dict) and v.get("masked"):
        said = [f"{v['length']} bytes", v.get("class"), *v.get("extras", []),
                "by p11spy redact" if v.get("redacted") else None]
        return f"<masked: {', '.join(filter(None, said))}>"
    if v is None:
        return "NULL"
    return json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else str(v)


def _arg_lines(name: str, v: Any, indent: str) -> list[str]:
    if isinstance(v, list) and v and isinstance(v[0], dict) and "type" in v[0]:
        lines = [f"{indent}{name}[{len(v)}]:"]
        for a in v:
            val = f" = {_short(a['value'])}" if "value" in a else ""
            lines.append(f"{indent}    {a['type']} (len {a['len']}){val}")
        return lines
    if isinstance(v, dict) and set(v) <= {"in", "out"} and v:
        lines = []
        for phase in ("in", "out"):
            if phase in v:
                lines += _arg_lines(f"{name} [{phase}]", v[phase], indent)
        return lines
    if isinstance(v, dict) and "mechanism" in v:
        par = v.get("parameter")
        return [f"{indent}{name} = {v['mechanism']}" + (f" {_short(par)}" if par else "")]
    return [f"{indent}{name} = {_short(v)}"]


@lru_cache(maxsize=4096)  # a trace has few threads, and a call each time
def _where(pid: int | None, tid: int | None) -> str:
    """'  pid P tid T', leaving out what the trace did not record."""
    parts = [f"{k} {v}" for k, v in (("pid", pid), ("tid", tid)) if v is not None]
    return "  " + " ".join(parts) if parts else ""


def call_text(c: Call, module: bool = False) -> list[str]:
    """The call as text; with module, the head names the module that answered it (wanted
    where a trace holds calls to several modules)."""
    dur = "" if c.duration_us is None else (
        f"{c.duration_us:.1f} us" if c.duration_us < 10 else f"{c.duration_us:.0f} us")
    head = f"#{c.seq} {c.function}{_where(c.pid, c.tid)}  {format_time(c.time)}  {dur}"
    if module and c.module:
        head = f"{head.rstrip()}  module {os.path.basename(c.module)}"
    lines = [head.rstrip()]
    for name, v in c.args.items():
        lines += _arg_lines(name, v, "    ")
    if c.length_query:
        lines.append("    (length query: NULL buffer)")
    rv = "(not recorded)" if c.rv is None else f"{c.rv_name} (0x{c.rv:x})"
    if c.never_returned:
        rv = f"never returned ({thread_of(c)}): crashed, killed or hung inside the module"
    lines.append(f"  -> {rv}")
    return lines


def thread_of(c: Call) -> str:
    """'thread T of process P', as far as the trace says."""
    parts = [f"{k} {v}" for k, v in (("thread", c.tid), ("process", c.pid)) if v is not None]
    return " of ".join(parts) or "thread not recorded"


def _hex(b: bytes, limit: int = TEXT_BYTES) -> str:
    h = b[:limit].hex(" ").upper()
    return h + (f" ... ({len(b)} bytes)" if len(b) > limit else "")


def _redacted_pin(command: bytes) -> bool:
    """A PIN field that `p11spy redact` overwrote: its mark, then only padding (FF)."""
    from p11spy.decoder.apdu import pin_field
    from p11spy.decoder.masking import MARK

    span = pin_field(command)
    if span is None:
        return False
    data = command[span[0]:span[0] + span[1]].rstrip(b"\xff")
    return bool(data) and data.count(MARK) == len(data)


def apdu_text(a: Apdu) -> list[str]:
    from p11spy.decoder.apdu import ins_name

    pad = "    " if a.parent is not None else ""
    name = ins_name(a.command[0], a.command[1]) if len(a.command) >= 2 else None
    head = f"{pad}>> {_hex(a.command)}" + (f"  [{name}]" if name else "")
    if a.masked:
        head += "  (PIN masked)"
    elif _redacted_pin(a.command):
        head += "  (PIN masked by p11spy redact)"
    lines = [head]
    if a.response is not None and a.sw is None:  # fewer than 2 bytes: the reader's fault
        lines.append(f"{pad}<< {_hex(a.response) or '(empty)'}  no status word")
    elif a.response is not None:
        lines.append(f"{pad}<< {_hex(a.response)}  SW {a.sw}")
    else:
        lines.append(f"{pad}<< no response: {a.error or 'not recorded'}")
    return lines


def pcsc_text(p: PcscCall) -> str:
    pad = "    " if p.parent is not None else ""
    args = ", ".join(f"{k}={_short(v)}" for k, v in p.args.items())
    return f"{pad}{p.function}({args}) -> {p.rv_name}"


def numbered(lines: list[str], seq: int) -> list[str]:
    """An APDU's or PC/SC call's lines with its #seq, the number diagnose and --summary cite,
    after the indent of the first line; the lines after it indented to match."""
    first = lines[0]
    pad = first[:len(first) - len(first.lstrip(" "))]
    mark = f"#{seq} "
    return [pad + mark + first[len(pad):],
            *(line[:len(pad)] + " " * len(mark) + line[len(pad):] for line in lines[1:])]


def text(events: Iterable[Event], out: TextIO) -> None:
    modules: set[str] = set()  # the modules seen so far: once several, each call names its own
    for e in events:
        if type(e) is LogLines:  # most events of a debug log; the text shows no logged line
            continue
        if isinstance(e, Call):
            if e.module:
                modules.add(e.module)
            out.write("\n".join(call_text(e, module=len(modules) > 1)) + "\n")
        elif isinstance(e, Apdu):
            out.write("\n".join(numbered(apdu_text(e), e.seq)) + "\n")
        elif isinstance(e, PcscCall):
            out.write(numbered([pcsc_text(e)], e.seq)[0] + "\n")
        elif isinstance(e, Process):
            info = e.info
            secrets = "SHOWN" if info.get("secrets") else "masked"
            module = info.get("module") or "every module it loads"
            pid = "" if e.pid is None else f" {e.pid}"
            host = "" if e.host is None else f" on {e.host}"
            exe = info.get("exe") or "(program not named in the trace)"
            out.write(f"== process{pid}{host}: {exe} (module {module}, secrets {secrets})\n")
        elif isinstance(e, ModuleInfo) and "loaded" in e.info:
            modules.add(e.info["loaded"])
            out.write(f"== module {e.info.get('index')}: {e.info['loaded']}\n")
        elif isinstance(e, ModuleInfo):
            i = e.info
            out.write(f"== module: {i.get('manufacturerID', '?')} "
                      f"{i.get('libraryDescription', '')} {i.get('libraryVersion', '')} "
                      f"(Cryptoki {i.get('cryptokiVersion', '?')})\n")
        elif isinstance(e, TraceWarning):
            out.write(f"!! {e.message}\n")


JSONL_BATCH = 1 << 20  # bytes of rows written at a time


def jsonl(events: Iterable[Event], out: TextIO) -> None:
    """One compact JSON object per line, each row as its event's to_json() (a LogLines gives
    a row per line, as a LogLine would). orjson writes them: with the json module, dumps
    took most of `decode --json`'s time. Each row is added to one buffer at once (a list of
    orjson's results costs more than writing them), written to the bytes under `out` when it
    has them."""
    import orjson  # here, not at the top: only JSON output needs it (start-up stays light)

    dumps = orjson.dumps
    nl = orjson.OPT_APPEND_NEWLINE
    raw = getattr(out, "buffer", None)
    if raw is not None:
        out.flush()  # what was written as text goes first
    buf = bytearray()
    for e in events:
        start = len(buf)
        try:
            if type(e) is LogLines:
                _log_rows(e, buf, dumps)
            else:
                buf += dumps(e.to_json(), option=nl)
        except TypeError:  # what orjson cannot write (an integer over 64 bits)
            del buf[start:]  # the rows of a LogLines written before it refused
            buf += _json_rows(e)
        if len(buf) >= JSONL_BATCH:
            _write(buf, out, raw)
    _write(buf, out, raw)


def dumps(value: Any) -> bytes:
    """A value as JSON, as the rows hold it (orjson, compact)."""
    import orjson

    return orjson.dumps(value)


def row(e: Event) -> bytes:
    """One event's row (not a LogLines'), byte for byte as jsonl writes it."""
    import orjson

    try:
        return orjson.dumps(e.to_json(), option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return _json_rows(e)


def _log_rows(e: LogLines, buf: bytearray, dumps: Callable[[Any], bytes]) -> None:
    """The rows of a LogLines, byte for byte as its LogLines' to_json() by orjson, from the
    parts they share: most of a log's rows are these, and a dict each cost a third of the
    time of `decode --json`. Lines logged at one time (one time object) differ only in seq
    and text: a row is one formatting of their row with those two."""
    parent = b',"parent":%b,"text":' % dumps(e.parent)
    ids = b',"pid":%b,"tid":%b,"time":' % (dumps(e.pid), dumps(e.tid))
    last: Any = buf  # no time is this
    row = b""
    for seq, text, t in zip(count(e.seq), e.texts, e.times):
        if t is not last:  # a guessed date says so, as LogLine.to_json does
            last = t
            row = b'{"type":"log","seq":%d' + parent + b"%b" + ids + (
                dumps(float(t)) + b',"date_guessed":true}\n' if type(t) is Undated
                else dumps(t) + b"}\n")
        buf += row % (seq, dumps(text))


def _json_rows(e: Event) -> bytes:
    """An event orjson refused, by the json module in the same compact form (escaped to
    ASCII, so that a lone surrogate cannot fail to encode)."""
    rows = [line.to_json() for line in e.lines()] if type(e) is LogLines else [e.to_json()]
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode()


def _write(buf: bytearray, out: TextIO, raw: BinaryIO | None) -> None:
    if raw is not None:
        raw.write(buf)
    else:
        out.write(buf.decode())
    buf.clear()
