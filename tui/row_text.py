"""One line of the call list, as (text, role) parts the widget colours by role.

Why separate from the widget: the columns (which fit at 80 columns, which appear when the
terminal is wider) and the key-argument summary are plain text decisions, tested without a
terminal. Roles: num, time, thread, func, args, ok, error, warning, more, apdu, dim, dur.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from p11spy.decoder.apdu import ins_name, pin_field, sw_meaning
from p11spy.decoder.events import Apdu, Call, Event, LogLine, ModuleInfo, PcscCall, Process
from p11spy.tui.explain import sw_class
from p11spy.tui.trace_index import TraceIndex, session_text

Part = tuple[str, str]

_OBJECTS = ("hObject", "hKey", "hBaseKey", "hWrappingKey", "hUnwrappingKey", "hPublicKey",
            "hPrivateKey")
_OUT_OBJECTS = ("phObject", "phKey", "phPublicKey", "phPrivateKey")


def fmt_duration(us: float | None) -> str:
    if us is None:
        return ""
    if us < 10:
        return f"{us:.1f}µs"
    if us < 1000:
        return f"{us:.0f}µs"
    if us < 1_000_000:
        return f"{us / 1000:.1f}ms"
    return f"{us / 1e6:.2f}s"


def fmt_time(t: float | None, digits: int = 3) -> str:
    if t is None:
        return ""
    s = _dt.datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")
    return s[:9 + digits] if digits else s[:8]


def _out(v: Any) -> Any:
    if isinstance(v, dict) and set(v) <= {"in", "out"}:
        return v.get("out", v.get("in"))
    return v


def _label(template: Any) -> str | None:
    if isinstance(template, dict):
        template = template.get("in") or template.get("out")
    if not isinstance(template, list):
        return None
    for a in template:
        if isinstance(a, dict) and a.get("type") == "CKA_LABEL" and isinstance(a.get("value"),
                                                                              str):
            return a["value"]
    return None


def key_args(c: Call) -> str:
    """The arguments that tell calls apart: slot, session, object, mechanism, label, user."""
    a = c.args
    parts: list[str] = []
    if "slotID" in a:
        parts.append(f"slot {a['slotID']}")
    if isinstance(a.get("hSession"), int):
        parts.append(f"s{session_text(a['hSession'])}")
    ph = _out(a.get("phSession"))
    if isinstance(ph, int):
        parts.append(f"-> s{session_text(ph)}")
    if "userType" in a:
        parts.append(str(a["userType"]))
    for name in _OBJECTS:
        if name in a and isinstance(a[name], int):
            parts.append(f"obj {a[name]}")
    mech = a.get("pMechanism")
    if isinstance(mech, dict) and "mechanism" in mech:
        parts.append(str(mech["mechanism"]))
    for name in ("pTemplate", "pPublicKeyTemplate"):
        label = _label(a.get(name))
        if label is not None:
            parts.append(f"'{label}'")
            break
    if isinstance(a.get("pLabel"), str):
        parts.append(f"'{a['pLabel'].strip()}'")
    for name in _OUT_OBJECTS:
        v = _out(a.get(name))
        if isinstance(v, int):
            parts.append(f"-> obj {v}")
        elif isinstance(v, list) and v and all(isinstance(x, int) for x in v):
            shown = ",".join(map(str, v[:4])) + ("…" if len(v) > 4 else "")
            parts.append(f"-> {shown}")
    if c.length_query:
        parts.append("(length?)")
    return " ".join(parts)


def _fit(text: str, width: int, right: bool = False) -> str:
    if width <= 0:
        return ""
    if len(text) > width:
        text = text[:max(0, width - 1)] + "…" if width > 1 else text[:width]
    return text.rjust(width) if right else text.ljust(width)


class Columns:
    """Column widths for a terminal width: what fits at 80 columns, more when wider."""

    def __init__(self, width: int, index: TraceIndex) -> None:
        self.width = width
        self.num = max(4, len(str(max(len(index.kinds) - 1, 0))))
        self.time = 15 if width >= 130 else (12 if width >= 100 else 0)
        self.thread = max(3, max((len(index.thread_label(i))
                                  for i in range(min(len(index.thread_keys), 50))), default=3))
        self.func = 21 if width >= 90 else 19
        self.rv = 28 if width >= 110 else 22
        self.dur = 7
        fixed = self.num + self.thread + self.func + self.rv + self.dur + 5
        if self.time:
            fixed += self.time + 1
        self.args = max(0, width - fixed)


# The mark a row gets when a diagnose finding points at it, by the finding's severity.
MARK_ROLES = {"error": "error", "warning": "warning", "info": "more"}


def call_parts(index: TraceIndex, rec: int, e: Event, cols: Columns) -> list[Part]:
    """A top-level row: a call, a process or module header, a warning or a log line."""
    mark = index.marks.get(rec)
    num = str(index.seq_of(rec)).rjust(cols.num)
    parts: list[Part] = [(num + " ", "num")] if not mark else [(num, "num"),
                                                                ("●", MARK_ROLES[mark])]
    if cols.time:
        parts.append((_fit(fmt_time(getattr(e, "time", None), 6 if cols.time > 12 else 3),
                           cols.time) + " ", "time"))
    parts.append((_fit(index.thread_label(index.threads[rec]), cols.thread) + " ", "thread"))
    if isinstance(e, Call):
        parts.append((_fit(e.function, cols.func) + " ", "func"))
        parts.append((_fit(key_args(e), cols.args) + " ", "args"))
        kids = len(index.apdu_kids(rec))
        rv = "(no result)" if e.rv is None else (e.rv_name or f"0x{e.rv:x}")
        role = "dim" if e.rv is None else ("ok" if e.rv == 0 else "error")
        if e.never_returned:
            rv, role = "never returned", "error"
        if kids:
            mark = f"⇅{kids} "
            parts[-1] = (_fit(key_args(e), cols.args - len(mark)) + " ", "args")
            parts.append((mark, "apdu"))
        parts.append((_fit(rv, cols.rv) + " ", role))
        parts.append((_fit(fmt_duration(e.duration_us), cols.dur, right=True), "dur"))
        return parts
    rest = cols.width - sum(len(t) for t, _ in parts)
    text, role = header_text(e)
    parts.append((_fit(text, rest), role))
    return parts


def header_text(e: Event) -> tuple[str, str]:
    """Text of a row that is not a call."""
    if isinstance(e, Process):
        i = e.info
        if i.get("unreadable_header"):
            return "== process header (unreadable)", "dim"
        secrets = "SHOWN" if i.get("secrets") else "masked"
        pid = "" if e.pid is None else f" {e.pid}"
        host = "" if e.host is None else f" on {e.host}"
        exe = i.get("exe") or "(program not named in the trace)"
        return f"== process{pid}{host}: {exe} (secrets {secrets})", "dim"
    if isinstance(e, ModuleInfo):
        i = e.info
        if "loaded" in i:
            return f"== module {i.get('index')}: {i['loaded']}", "dim"
        return (f"== module: {i.get('manufacturerID', '?')} {i.get('libraryDescription', '')} "
                f"{i.get('libraryVersion', '')}", "dim")
    if isinstance(e, LogLine):
        return e.text, "dim"
    if isinstance(e, Apdu | PcscCall):
        return kid_text(e)
    return f"!! {getattr(e, 'message', '')}", "warning"


def kid_text(e: Event) -> tuple[str, str]:
    if isinstance(e, Apdu):
        name = _ins_name(e.command)
        sw = e.sw
        answer = f"-> {sw}" if sw else f"-> {e.error or 'no response'}"
        return f"{name + ' ' if name else ''}{masked_hex(e.command, 12)} {answer}", "apdu"
    if isinstance(e, PcscCall):
        return f"{e.function} -> {e.rv_name}", "apdu"
    return str(getattr(e, "text", e)), "dim"


def masked_hex(command: bytes, limit: int = 64) -> str:
    """A command as hex with its PIN bytes (VERIFY, CHANGE, ...) shown as **, as the APDU
    decoder masks them, whatever the trace recorded."""
    span = pin_field(command)
    cells = [f"{b:02X}" for b in command[:limit]]
    if span is not None:
        start, length = span
        for i in range(start, min(start + length, len(cells))):
            cells[i] = "**"
    return " ".join(cells) + (f" … ({len(command)} bytes)" if len(command) > limit else "")


def _ins_name(command: bytes) -> str | None:
    if len(command) < 2:
        return None
    return ins_name(command[0], command[1])


def kid_parts(index: TraceIndex, kid: int, e: Event, cols: Columns) -> list[Part]:
    """A row under a call: one APDU (command, instruction, status word) or PC/SC call."""
    parts: list[Part] = [(str(index.seq_of(kid)).rjust(cols.num) + " ", "num")]
    if cols.time:
        parts.append((" " * (cols.time + 1), "time"))
    parts.append(("    ↳ ", "apdu"))
    used = sum(len(t) for t, _ in parts)
    if isinstance(e, Apdu):
        name = _ins_name(e.command)
        head = (f"{name} " if name else "") + masked_hex(e.command, 16)
        sw = e.sw
        tail = f" {sw} {_sw_meaning(sw)}" if sw else f" {e.error or 'no response'}"
        role = {"ok": "ok", "more": "more", "warning": "warning"}.get(sw_class(sw), "error")
        room = cols.width - used - cols.dur
        tail = _fit(tail, max(0, min(len(tail), room - min(len(head), room // 2))))
        parts.append((_fit(head, room - len(tail)), "apdu"))
        parts.append((tail, role))
        parts.append((_fit(fmt_duration(e.duration_us), cols.dur, right=True), "dur"))
        return parts
    text, role = kid_text(e)
    parts.append((_fit(text, cols.width - used), role))
    return parts


def _sw_meaning(sw: str | None) -> str:
    if not sw:
        return ""
    return sw_meaning(int(sw, 16))
