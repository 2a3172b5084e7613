"""One pass over a trace's events into the compact tables the HTML report embeds.

Why columns and a string table: a 100 MB trace holds hundreds of thousands of calls. The page
gets every call as a row of numbers (function, return value, thread, time, duration, and the
index of its decoded text), packed as little-endian typed arrays that the browser reads without
parsing, and the decoded texts once each in a table (a repeated call costs one number). The
page draws only the rows in view. Two limits keep a huge trace's page usable: past
`max_calls` only failed calls are kept (the page says how many were left out), and past
`detail_budget` characters of decoded text only failures get theirs (the others show their
function, code and timing).
"""

from __future__ import annotations

import array
import base64
import sys
from dataclasses import dataclass, field
from typing import Any

from p11spy.decoder import codes, explain
from p11spy.decoder.apdu import decode_command, decode_response, sw_meaning, sw_status
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
from p11spy.decoder.render import call_text, pcsc_text

MAX_CALLS = 1_000_000
DETAIL_BUDGET = 32 << 20  # characters of decoded text for calls and APDUs that did not fail
APDU_CACHE = 20_000  # distinct exchanges whose decoded text is kept for reuse
MAX_WARNINGS = 50  # reader warnings listed (the count says the rest)
MAX_LOG_LINES = 300  # log lines kept under one call (OpenSC at level 9 logs thousands)
NO_DETAIL = -1
NAN = float("nan")
APDU, PCSC = 0, 1  # kinds of the events under a call


class Strings:
    """A table of distinct strings: each one stored once, referred to by its index."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.items: list[str] = []
        self.chars = 0

    def add(self, s: str) -> int:
        i = self.index.get(s)
        if i is None:
            i = self.index[s] = len(self.items)
            self.items.append(s)
            self.chars += len(s)
        return i


@dataclass
class Columns:
    """Typed columns of one table: each one an array('x') of the same length."""

    spec: dict[str, str]
    cols: dict[str, array.array] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cols = {name: array.array(code) for name, code in self.spec.items()}

    def append(self, **values: Any) -> None:
        for name, col in self.cols.items():
            col.append(values[name])

    def __len__(self) -> int:
        return len(next(iter(self.cols.values())))

    def encoded(self) -> dict[str, dict[str, str]]:
        """Each column as {"type": array code, "b64": little-endian bytes in base64}."""
        out = {}
        for name, col in self.cols.items():
            if sys.byteorder != "little":
                col = array.array(col.typecode, col)
                col.byteswap()
            out[name] = {"type": col.typecode, "b64": base64.b64encode(col.tobytes()).decode()}
        return out


# seq: as `p11spy decode` numbers events; fn/label: index into `names`; rv/code: index into the
# code table (-1: none recorded); th: thread; t: epoch seconds (NaN unknown); d: microseconds
# (NaN unknown); det: index into `strings` (-1: not embedded); log: the lines a library logged
# under the call (OpenSC's debug log), one text in `strings`; parent: index of the call
CALL_COLUMNS = {"seq": "i", "fn": "i", "rv": "i", "th": "i", "t": "d", "d": "f", "det": "i",
                "log": "i"}
KID_COLUMNS = {"seq": "i", "parent": "i", "kind": "b", "label": "i", "code": "i", "fail": "b",
               "th": "i", "t": "d", "d": "f", "det": "i"}


@dataclass
class CodeRef:
    """A code the trace shows: how the page names it, whether it is a failure, explain's text."""

    key: str
    fail: bool
    text: str
    short: str


def _code_text(code: codes.Code | None, fallback: str) -> str:
    return "\n".join(explain.code_lines(code)) if code is not None else fallback


class Collector:
    """Takes events one by one (see add) and holds the report's tables."""

    def __init__(self, max_calls: int = MAX_CALLS, detail_budget: int = DETAIL_BUDGET) -> None:
        self.max_calls = max_calls
        self.detail_budget = detail_budget
        self.calls = Columns(CALL_COLUMNS)
        self.kids = Columns(KID_COLUMNS)
        self.strings = Strings()  # decoded texts
        self.names = Strings()  # function names, APDU instruction names
        self.codes: list[CodeRef] = []
        self._code_index: dict[tuple[str, int | None, str | None], int] = {}
        self.threads: list[tuple[int | None, int | None]] = []
        self._thread_index: dict[tuple[int | None, int | None], int] = {}
        self._call_at: dict[int, int] = {}  # seq of a kept call -> its row
        self.processes: list[dict[str, Any]] = []
        self.modules: list[str] = []
        self.warnings: list[str] = []
        self.warning_count = 0
        self.calls_left_out = 0
        self.kids_left_out = 0
        self.details_left_out = 0
        self.log_lines = 0
        self.failed_calls = 0
        self._apdu_cache: dict[tuple[bytes, bytes | None, bool, str | None], str] = {}
        self._logs: dict[int, list[str]] = {}  # row -> lines logged under it, not yet stored
        self._logs_more: dict[int, int] = {}  # row -> lines past MAX_LOG_LINES
        self._last_row: dict[int, int] = {}  # thread -> its latest call's row

    # --- tables ---------------------------------------------------------------------------

    def _thread(self, pid: int | None, tid: int | None) -> int:
        key = (pid, tid)
        i = self._thread_index.get(key)
        if i is None:
            i = self._thread_index[key] = len(self.threads)
            self.threads.append(key)
        return i

    def _code(self, system: str, value: int | None, name: str | None) -> int:
        if value is None:
            return -1
        key = (system, value, name)
        i = self._code_index.get(key)
        if i is None:
            i = self._code_index[key] = len(self.codes)
            self.codes.append(_make_code(system, value, name))
        return i

    def _detail(self, text: str, failed: bool) -> int:
        if text in self.strings.index or failed or self.strings.chars < self.detail_budget:
            return self.strings.add(text)
        self.details_left_out += 1
        return NO_DETAIL

    # --- events -----------------------------------------------------------------------------

    def add(self, e: Event) -> None:
        if isinstance(e, Call):
            self._add_call(e)
        elif isinstance(e, (Apdu, PcscCall)):
            self._add_kid(e)
        elif isinstance(e, LogLine):
            self.log_lines += 1
            row = None if e.parent is None else self._call_at.get(e.parent)
            if row is not None:
                lines = self._logs.setdefault(row, [])
                if len(lines) < MAX_LOG_LINES:
                    lines.append(e.text)
                else:
                    self._logs_more[row] = self._logs_more.get(row, 0) + 1
        elif isinstance(e, Process):
            self.processes.append({"pid": e.pid, **e.info})
        elif isinstance(e, ModuleInfo) and "loaded" in e.info:
            self.modules.append(str(e.info["loaded"]))
        elif isinstance(e, TraceWarning):
            self.warning_count += 1
            if len(self.warnings) < MAX_WARNINGS:
                self.warnings.append(e.message)

    def _add_call(self, c: Call) -> None:
        failed = bool(c.rv)
        if len(self.calls) >= self.max_calls and not failed:
            self.calls_left_out += 1
            return
        self.failed_calls += failed
        th = self._thread(c.pid, c.tid)
        if th in self._last_row:  # what its thread's call before it logged is complete
            self._store_logs(self._last_row[th])
        self._last_row[th] = self._call_at[c.seq] = len(self.calls)
        body = call_text(c)[1:-1]  # the arguments; the head and the code are columns
        self.calls.append(
            seq=c.seq, fn=self.names.add(c.function), rv=self._code("CKR", c.rv, c.rv_name),
            th=th, t=_num(c.time), d=_num(c.duration_us),
            det=self._detail("\n".join(body), failed), log=NO_DETAIL)

    def _add_kid(self, e: Apdu | PcscCall) -> None:
        parent = NO_DETAIL if e.parent is None else self._call_at.get(e.parent)
        if parent is None:  # under a call left out
            self.kids_left_out += 1
            return
        if isinstance(e, Apdu):
            sw = None if e.sw is None else int(e.sw, 16)
            code = self._code("SW", sw, None)
            fail = (sw is None and e.response is None) or sw_status(sw) in ("error", "warning")
            label = _ins_label(e)
            kind, text = APDU, self._apdu_text(e)
        else:
            code = self._code("PC/SC", e.rv, e.rv_name)
            fail = bool(e.rv)
            label, kind, text = e.function, PCSC, pcsc_text(e).strip()
        self.kids.append(seq=e.seq, parent=parent, kind=kind, label=self.names.add(label),
                         code=code, fail=int(fail), th=self._thread(e.pid, e.tid),
                         t=_num(e.time), d=_num(e.duration_us),
                         det=self._detail(text, fail))

    def _apdu_text(self, a: Apdu) -> str:
        """apdu_lines as one text; the same exchange (a SELECT, a GET DATA sent again) is
        decoded once: decoding is most of the cost of a card trace's report."""
        key = (a.command, a.response, a.masked, a.error)
        text = self._apdu_cache.get(key)
        if text is None:
            if len(self._apdu_cache) >= APDU_CACHE:
                self._apdu_cache.clear()
            text = self._apdu_cache[key] = "\n".join(apdu_lines(a))
        return text

    def _store_logs(self, row: int) -> None:
        lines = self._logs.pop(row, None)
        if lines:
            more = self._logs_more.pop(row, 0)
            text = "\n".join(lines) + (f"\n... and {more} more" if more else "")
            failed = self.codes[self.calls.cols["rv"][row]].fail \
                if self.calls.cols["rv"][row] >= 0 else False
            self.calls.cols["log"][row] = self._detail(text, failed)

    def finish(self) -> None:
        """Stores what is still pending (the log lines of each thread's last call)."""
        for row in list(self._logs):
            self._store_logs(row)

    def call_row(self, seq: int) -> int | None:
        return self._call_at.get(seq)

    def kid_parent(self, seq: int) -> int | None:
        """The row of the call an APDU or PC/SC call (by seq) is under, when it is kept."""
        cols = self.kids.cols
        seqs = cols["seq"]
        lo, hi = 0, len(seqs)
        while lo < hi:
            mid = (lo + hi) // 2
            if seqs[mid] < seq:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(seqs) and seqs[lo] == seq and cols["parent"][lo] >= 0:
            return cols["parent"][lo]
        return None


def _num(v: float | None) -> float:
    return NAN if v is None else float(v)


def _ins_label(a: Apdu) -> str:
    from p11spy.decoder.apdu import ins_name

    if len(a.command) < 2:
        return "APDU"
    return ins_name(a.command[0], a.command[1]) or f"INS {a.command[1]:02X}"


def _make_code(system: str, value: int, name: str | None) -> CodeRef:
    """The code table's entry: explain's text for the code, as `p11spy explain` prints it."""
    if system == "SW":
        key = f"SW {value:04X}"
        found = codes.explain_sw(value)
        short = found.meaning if found else sw_meaning(value)
        fail = sw_status(value) in ("error", "warning")
        return CodeRef(key, fail, _code_text(found, f"{key}: {short}"), short)
    if system == "PC/SC":
        found = codes.explain_pcsc(value)
    else:
        found = codes.explain_rv(value)
    key = name or (found.name if found else f"0x{value:08X}")
    short = found.meaning if found else "(not in p11spy's tables)"
    return CodeRef(key, value != 0, _code_text(found, f"{key}: {short}"), short)


def apdu_lines(a: Apdu) -> list[str]:
    """One exchange as text: hex both ways, the decoded command, the status word and its
    meaning, the decoded response (what the viewer's detail pane shows)."""
    lines = [f"> {a.command.hex(' ').upper()}" + ("  (PIN masked)" if a.masked else "")]
    cmd = decode_command(a.command)  # never raises: what does not parse is kept as hex
    try:
        lines += ["    " + ln for ln in cmd.describe()]
    except Exception:  # noqa: BLE001 - a decoder bug must not hide the hex
        pass
    if a.response is None:
        lines.append(f"< no response: {a.error or 'not recorded'}")
        return lines
    lines.append(f"< {a.response.hex(' ').upper()}" if a.response else "< (empty)")
    if a.sw is not None:
        sw = int(a.sw, 16)
        found = codes.explain_sw(sw)
        lines.append(f"  SW {a.sw}: {found.meaning if found else sw_meaning(sw)}")
    try:
        lines += ["    " + ln for ln in decode_response(a.response, cmd).describe()[1:]]
    except Exception:  # noqa: BLE001
        pass
    return lines
