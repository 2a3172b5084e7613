"""Reads OpenSC debug logs (OPENSC_DEBUG=N, or `debug = N;` in opensc.conf) into events.

Users already have these logs: they are the only place OpenSC shows the APDUs under its PKCS#11
module. Versions 0.16 to 0.27 on Linux, macOS and Windows are read, and the older
`Outgoing APDU data [ N bytes] ====` dumps; the format and its quirks (prefix variants,
`T:0x<decimal>`, frame-less lines, continuation lines, hex dumps, 4 KiB truncation, ANSI
colours) are described in the project's reference notes.

What becomes what:

* A PKCS#11 call is rebuilt per (pid, thread) from the lines OpenSC's own `C_*` functions log:
  their `file:line:func:` location names the function; frame-less (MSVC) lines are recognised
  by their text. An entry line (`C_Login(0x.., 1)`, `C_Finalize()`) starts a call. A result
  line (`C_GetSlotInfo(0x0) = CKR_OK`, `C_GetTokenInfo(0) returns CKR_OK`, `fLogin() rv 160`)
  ends it with its CK_RV; an end line without one (`returned 1 slots`) ends it with rv None.
  A call that logs no end stays open until the next call or a new OpenSC context starts on its
  thread (rv None).
* Functions that log nothing on entry (C_Initialize, C_Sign, C_GetAttributeValue, ...) first
  appear with their result, after the work they did. OpenSC logs on a thread only inside a
  PKCS#11 call, so the lines logged on that thread since the previous call ended (or since the
  context banner, for C_Initialize) are taken as that call's start and children; its time
  and duration count from the first of them. Lines no call takes are LogLines with parent None.
* Every other line is a LogLine under the call open on its thread; a multi-line message is one
  LogLine. `Outgoing APDU` / `Incoming APDU` dumps become Apdu events (command, and the
  response of the next Incoming dump on the same thread); their dump lines are not repeated as
  LogLines. Bytes are kept as logged: a VERIFY logged at level 9 carries the PIN in clear.
* read_blocks() gives each run of lines one thread logged under one parent as one LogLines
  (no object per line: what decode reads); read() takes them apart into LogLines.

seq: events are numbered in the order they are emitted. A call's rv is known only at its end,
so a call is emitted when it ends, followed at once by its children in file order; lines no
call takes are emitted when it is clear none will (a call starts with its entry line, a new
context starts, the end of the file, or more than PENDING_MAX of them wait). seq thus follows
the file except that a call and its children come together where the call ended, after what
other threads logged meanwhile.

Time: OpenSC logs local time with milliseconds. Windows lines carry a date; Unix lines only
the time of day, and the date is taken from the file's modification time (the end of the log),
stepping back a day when the log starts later in the day than it ended and forward at each
midnight crossing. Both are read in the decoding machine's time zone (set TZ to the zone of
the machine that wrote the log); a dateless log spanning more than a day cannot be placed.
"""

from __future__ import annotations

import io
import os
import re
import time as _time
from collections.abc import Iterator
from dataclasses import fields
from typing import Any, BinaryIO, NamedTuple

from p11spy.decoder.events import (
    Apdu,
    Call,
    Event,
    LogLines,
    TraceWarning,
    Undated,
    log_lines,
)
from p11spy.decoder.lines import LongLine, blocks
from p11spy.decoder.values import rv_name, scalar
from p11spy.facts.pkcs11 import constants
from p11spy.facts.pkcs11.functions import BY_NAME
from p11spy.facts.pkcs11.model import Function, Role

MAX_LINE = 1 << 16  # bytes of a line kept (and read at a time); the rest dropped with a warning
MAX_TEXT = 1 << 16  # characters of one multi-line message kept
PENDING_MAX = 20000  # lines kept per thread for a call that may still claim them
# Bounds that only a damaged or hostile log reaches, so that memory stays flat whatever the
# input: lines under one call before it is emitted without its end (OpenSC's own calls log a
# few thousand at most), threads followed at once, and the bytes of one APDU dump.
CALL_LINES_MAX = 100_000
THREADS_MAX = 4096
APDU_MAX = 1 << 17

# The prefix of a log line; cheap checks on the first characters choose the expression.
# Groups: thread key (pid and thread as printed), date, time, application.
_TAIL = r"([0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]+)(?: |$)(?:\[([^\]]*)\] ?)?"
_DATE = r"([0-9]{4}-[0-9]{2}-[0-9]{2})"
_RX_PID = re.compile(r"(P:[0-9]+; T:[^ ]+) (?:" + _DATE + " )?" + _TAIL)  # 0.18+ Windows, 0.20+
_RX_HEX = re.compile(r"(0x[0-9a-fA-F]+) (?:" + _DATE + " )?" + _TAIL)  # Unix up to 0.19
_RX_DATE = re.compile(r"()" + _DATE + " " + _TAIL)  # Windows before 0.18
_RX_TIME = re.compile(r"[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]+$")
_RX_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_RX_APDU_HEAD = re.compile(r"(Outgoing|Incoming) APDU( data)? *[\[(] *([0-9]+) bytes?")
_RX_NAME = re.compile(r"C_\w+")
_RX_RESULT = re.compile(r"(C_\w+)(?:\(.*\))?\s*(?:==?|returns)\s*(\S+)\s*$")
_RX_INT = re.compile(r"-?(?:0x[0-9a-fA-F]+|[0-9]+)")

# Functions that log a line when called (OpenSC 0.16-0.27). The others show up first with
# their result, and take the lines logged on their thread before it (see the docstring).
ENTRY_LOGGED = frozenset({
    "C_Finalize", "C_GetInfo", "C_GetSlotList", "C_GetSlotInfo", "C_GetTokenInfo",
    "C_InitToken", "C_InitPIN", "C_SetPIN", "C_OpenSession", "C_CloseSession",
    "C_CloseAllSessions", "C_GetSessionInfo", "C_Login", "C_Logout", "C_WaitForSlotEvent",
    "C_DestroyObject", "C_FindObjectsInit", "C_DigestInit", "C_Digest", "C_Decrypt",
    "C_DecryptUpdate", "C_DecryptFinal", "C_GetInterfaceList", "C_GetInterface",
})
# Functions whose result OpenSC logs: open at the end of the file means the log was cut.
EXIT_LOGGED = frozenset({
    "C_Initialize", "C_GetSlotInfo", "C_GetTokenInfo", "C_InitToken", "C_InitPIN",
    "C_OpenSession", "C_GetSessionInfo", "C_Login", "C_WaitForSlotEvent", "C_GetAttributeValue",
    "C_DigestInit", "C_Digest", "C_DigestUpdate", "C_DigestFinal", "C_EncryptInit", "C_Encrypt",
    "C_EncryptUpdate", "C_EncryptFinal", "C_DecryptInit", "C_SignInit", "C_Sign",
    "C_SignUpdate", "C_SignFinal", "C_VerifyInit", "C_VerifyUpdate", "C_VerifyFinal",
    "C_Verify", "C_GenerateRandom",
})
# Entry lines that do not start with the function's name.
_ENTRY_TEXT = {"C_SetPIN": "Changing PIN ("}
# Lines of the form C_X(...) that OpenSC logs in the middle of a call, not at its entry.
_NOT_ENTRY = ("C_GetSessionInfo(slot:",)
# Result lines other than `C_X(...) = <rv>` / `C_X(...) returns <rv>`: prefix -> function.
_RESULT_PREFIX = {"fLogin() rv ": "C_Login", "C_InitPIN() init-pin result ": "C_InitPIN"}
_RESULT_FIXED = {"C_Initialize(): Cryptoki already initialized": 0x191}
# Last lines of functions that log no CK_RV: (prefix, suffix) that ends the call, rv unknown.
_END_LINES = {
    "C_GetSlotList": (("returned ", " slots"), ("was only a size inquiry", ""),
                      ("buffer was too small", "")),
    "C_FindObjectsInit": (("", " matching objects"),),
    "C_GetInterfaceList": (("returned ", " interfaces"),),
}
# Frame-less lines that belong to a function without naming it.
_FRAMELESS_FN = {"fLogin() rv ": "C_Login"}
# Argument names OpenSC prints that differ from the specification's.
_ARG_ALIAS = {"token": "tokenPresent"}
# Functions that print a handle in hex without 0x (`C_GetTokenInfo(%lx)`).
_BARE_HEX = frozenset({"C_GetTokenInfo"})
# Words in an entry line that say an output buffer was NULL (a length query).
_LENGTH_QUERY_WORDS = frozenset({"plug-n-play"})
# Lines inside a call that report an output: function -> ((message prefix, parameter), ...).
_OUT_LINES = {
    "C_OpenSession": (("C_OpenSession handle: ", "phSession"),),
    "C_GetSlotList": (("returned ", "pulCount"), ("was only a size inquiry (", "pulCount"),
                      ("buffer was too small (needed ", "pulCount")),
}
_LENGTH_QUERY_OUT = ("was only a size inquiry",)
_SCALAR_ROLES = frozenset({Role.HANDLE, Role.ENUM, Role.FLAGS, Role.BOOL, Role.ULONG,
                           Role.LENGTH})
_TEXT_ROLES = frozenset({Role.TEXT_FIXED, Role.CSTRING})
_CKR = constants.FAMILIES["CKR"]
_HEX_DIGITS = "0123456789abcdefABCDEF"

# LogLines and Call are built positionally (three times faster than by keyword); should the
# event model's field order change, build by keyword rather than misassign.
if [f.name for f in fields(LogLines)][:7] == ["seq", "type", "parent", "texts", "times", "pid",
                                              "tid"]:
    _loglines = LogLines
else:  # pragma: no cover - only if events.py changes
    def _loglines(seq, _type, parent, texts, times, pid, tid):  # type: ignore[no-redef]
        return LogLines(seq=seq, parent=parent, texts=texts, times=times, pid=pid, tid=tid)
_CALL_FIELDS = ["seq", "type", "function", "rv", "rv_name", "pid", "tid", "time", "duration_us",
                "args", "length_query", "call_number", "source"]
if [f.name for f in fields(Call)][:13] == _CALL_FIELDS:
    _call = Call
else:  # pragma: no cover - only if events.py changes
    def _call(*values):  # type: ignore[no-redef]
        return Call(**{k: v for k, v in zip(_CALL_FIELDS, values, strict=True) if k != "type"})
_RV_NAMES: dict[int | None, str | None] = {None: None}


def _rv_name(rv: int | None) -> str | None:
    name = _RV_NAMES.get(rv)
    if name is None and rv is not None:
        name = _RV_NAMES[rv] = rv_name(rv)
    return name


def sniff(head: bytes) -> bool:
    """Whether a file's first bytes are an OpenSC debug log (a prefixed line with `[app]`)."""
    text = head.decode("utf-8", "replace")
    if "\x1b" in text:
        text = _RX_ANSI.sub("", text)
    if "OpenSC PKCS#11 spy" in text:  # pkcs11-spy output shares the P:/T: prefix
        return False
    for line in text.splitlines()[:64]:
        line = line.lstrip("\ufeff")
        rx = _prefix_rx(line)
        if rx is not None:
            m = rx.match(line)
            if m is not None and m.group(4) is not None:
                return True
    return False


def _prefix_rx(line: str) -> re.Pattern[str] | None:
    """The expression for a line's prefix, by its first characters; None: no prefix."""
    c = line[:2]
    if c == "P:":
        return _RX_PID
    if c == "0x":
        return _RX_HEX
    if c[:1].isdigit() and line[4:5] == "-":
        return _RX_DATE
    return None


class _OpenCall:
    """A call whose end has not been read yet, with what it logged so far."""

    __slots__ = ("function", "start", "end", "entry", "rv", "rv_seen", "line", "args",
                 "length_query", "children", "lines")

    def __init__(self, function: str, start: float | None, line: int, entry: bool) -> None:
        self.function = function
        self.start = start
        self.end: float | None = None  # time of its result or end line
        self.entry = entry  # its start is in the log (entry line, or lines it took)
        self.rv: int | None = None
        self.rv_seen = False
        self.line = line
        self.args: dict[str, Any] = {}
        self.length_query = False
        self.children: list[Event] = []
        self.lines = 0  # lines in children, but for those of the LogLines still growing


class _Thread:
    """What one (pid, thread) is doing: its open call, or the lines logged since its last
    call ended, and the Outgoing APDU waiting for its response."""

    __slots__ = ("pid", "tid", "call", "pending", "pending_line", "pending_n", "marker_at",
                 "block", "last_out", "last_out_line", "ended")

    def __init__(self, key: str) -> None:
        self.pid, self.tid = _ids(key)
        self.call: _OpenCall | None = None
        self.pending: list[Event] = []
        self.pending_line = 0  # line of pending[0]
        self.pending_n = 0  # lines and events in pending
        self.marker_at = -1  # pending_n just after a context-creation line
        # the LogLines last in the call's children (or in pending) that the next plain line
        # joins; None when anything else came after it
        self.block: LogLines | None = None
        self.last_out: Apdu | None = None
        self.last_out_line = 0
        # (function, seq) of the call an end line without rv just closed: OpenSC may log a
        # line or two of it after that line (`VSS Returning a new slot list`)
        self.ended: tuple[str, int] | None = None


def _ids(key: str) -> tuple[int | None, int | None]:
    """pid and thread id from `P:<pid>; T:<tid>` or `0x<hex>`. The digits after `T:0x` are
    decimal (OpenSC prints them with %lu); those of the old `0x<tid>` prefix are hex."""
    try:
        if key.startswith("P:"):
            pid_s, _, tid_s = key[2:].partition("; T:")
            if tid_s.startswith("0x"):
                tid_s = tid_s[2:]
            tid = int(tid_s) if tid_s.isdigit() else int(tid_s, 16)
            return int(pid_s), tid
        if key.startswith("0x"):
            return None, int(key, 16)
    except ValueError:
        pass
    return None, None


def _rv_value(token: str) -> int | None:
    """A CK_RV as OpenSC prints it: a name, 0x%08lX, or decimal."""
    token = token.rstrip(".,;")
    if token.startswith("CKR_"):
        try:
            return _CKR.value_of(token)
        except KeyError:
            return None
    try:
        v = int(token, 16) if token[:2] in ("0x", "0X") else int(token)
    except ValueError:
        return None
    return v & 0xFFFFFFFFFFFFFFFF


def _result(fn: str, msg: str) -> tuple[bool, int | None]:
    """(whether msg is fn's result line, its CK_RV)."""
    fixed = _RESULT_FIXED.get(msg)
    if fixed is not None:
        return True, fixed
    for prefix, owner in _RESULT_PREFIX.items():
        if owner == fn and msg.startswith(prefix):
            return True, _rv_value(msg[len(prefix):].strip())
    if msg.startswith(fn) and ("=" in msg or " returns " in msg):
        m = _RX_RESULT.match(msg)
        if m is not None and m.group(1) == fn:
            return True, _rv_value(m.group(2))
    return False, None


def _is_end(fn: str, msg: str) -> bool:
    """Whether msg is the last line fn logs when it logs no CK_RV."""
    return any(msg.startswith(p) and msg.endswith(s) for p, s in _END_LINES.get(fn, ()))


def _is_entry(fn: str, msg: str) -> bool:
    """Whether msg is the line fn logs first: `C_X(args)` alone or followed by ` called`."""
    special = _ENTRY_TEXT.get(fn)
    if special is not None:
        return msg.startswith(special)
    if not msg.startswith(fn + "(") or msg.startswith(_NOT_ENTRY):
        return False
    rest = msg[msg.rfind(")") + 1:]
    return rest == "" or rest.startswith(" called")


def _arg_value(fdesc: Function, name: str, raw: str) -> tuple[str, Any] | None:
    """One argument rendered as the p11spy trace reader renders it; None if it does not fit."""
    try:
        p = fdesc.param(_ARG_ALIAS.get(name, name))
    except KeyError:
        return None
    raw = raw.strip()
    if p.role in _TEXT_ROLES:
        return p.name, raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == "'" else raw
    if p.role not in _SCALAR_ROLES:
        return None
    try:
        if raw[:2] in ("0x", "0X"):
            v = int(raw, 16)
        else:
            v = int(raw, 16) if fdesc.name in _BARE_HEX else int(raw)
    except ValueError:
        return None
    return p.name, scalar(p, v)


def _parse_args(fn: str, msg: str, args: dict[str, Any]) -> bool:
    """Arguments of an entry or result line `C_X(a, name=b, name:c)` into args; whether the
    line says an output buffer was NULL."""
    fdesc = BY_NAME[fn]
    close = msg.rfind(")")
    inner = msg[len(fn) + 1:close] if close > len(fn) else ""
    length_query = False
    if not inner:
        return length_query
    for i, part in enumerate(inner.split(",")):
        part = part.strip()
        if part in _LENGTH_QUERY_WORDS:
            length_query = True
            continue
        name = ""
        for sep in ("=", ":"):
            if sep in part and not part.startswith(("0x", "'")):
                name, _, part = part.partition(sep)
                name = name.strip()
                break
        if not name:
            if i >= len(fdesc.params):
                continue
            name = fdesc.params[i].name
        got = _arg_value(fdesc, name, part)
        if got is not None and got[0] not in args:
            args[got[0]] = got[1]
    return length_query


def _parse_out(fn: str, msg: str, args: dict[str, Any]) -> bool:
    """An output a call reports on the way (`C_OpenSession handle: 0x..`) into args; whether
    it says the call only asked for a length."""
    for prefix, pname in _OUT_LINES.get(fn, ()):
        if msg.startswith(prefix):
            m = _RX_INT.match(msg, len(prefix))
            if m is None:
                break
            v = int(m.group(), 16) if "0x" in m.group() else int(m.group())
            p = BY_NAME[fn].param(pname)
            args[pname] = {"out": v} if p.role is Role.LENGTH_PTR else v
            return prefix.startswith(_LENGTH_QUERY_OUT)
    return False


class _LineInfo(NamedTuple):
    """What one line of a PKCS#11 function says about its call."""

    entry: bool  # the function's first line
    done: bool  # its result line
    rv: int | None
    end: bool  # its last line, without a result
    args: dict[str, Any]  # arguments (or outputs) the line shows
    length_query: bool


_INFO_CACHE: dict[tuple[str, str], _LineInfo] = {}


def _line_info(fn: str, msg: str) -> _LineInfo:
    """The meaning of a function's line; cached, as the same lines recur all through a log."""
    key = (fn, msg)
    info = _INFO_CACHE.get(key)
    if info is None:
        entry = _is_entry(fn, msg)
        done, rv = _result(fn, msg)
        args: dict[str, Any] = {}
        if entry or (done and msg.startswith(fn + "(")):
            lq = _parse_args(fn, msg, args)
        else:
            lq = _parse_out(fn, msg, args)
        info = _LineInfo(entry, done, rv, not done and _is_end(fn, msg), args, lq)
        if len(_INFO_CACHE) > 4096:
            _INFO_CACHE.clear()
        _INFO_CACHE[key] = info
    return info


_CLASS_CACHE: dict[str, tuple[str | None, bool, _LineInfo | None]] = {}


def _classify(text: str) -> tuple[str | None, bool, _LineInfo | None]:
    """What a line (after its `[app] `) is: (the PKCS#11 function it comes from, whether it
    starts an OpenSC context, what it says about the call). Cached by text: the same lines
    recur all through a log."""
    func: str | None = None
    msg = text
    i = text.find(": ")
    if i < 0 and text[-1:] == ":":
        i = len(text) - 1
    head = text[:i] if i > 0 else ""
    if head and head.count(":") == 2 and " " not in head:  # `file:line:func: msg`
        func = head[head.rfind(":") + 1:]
        msg = text[i + 2:]
    fn: str | None = None
    # the start of a context creation: the configuration file line, then the banner
    marker = func == "process_config_file" or msg.startswith("=====")
    if func is not None and func.startswith("C_") and func in BY_NAME:
        fn = func
    elif msg.startswith("C_"):
        # frame-less (MSVC builds), or logged by a helper (0.23's get_info_version logs
        # `C_GetInfo()`): the message names the function; from a helper, only an entry or
        # result line counts
        name = _RX_NAME.match(msg)
        if name is not None and name.group() in BY_NAME:
            n = name.group()
            if func is None or _is_entry(n, msg) or _result(n, msg)[0]:
                fn = n
    elif func is None:
        for prefix, owner in _FRAMELESS_FN.items():
            if msg.startswith(prefix):
                fn = owner
    cls = (fn, marker, None if fn is None else _line_info(fn, msg))
    if len(_CLASS_CACHE) > 8192:
        _CLASS_CACHE.clear()
    _CLASS_CACHE[text] = cls
    return cls


class _Clock:
    """A line's local date and time to epoch seconds (the module docstring says how)."""

    def __init__(self, f: BinaryIO) -> None:
        try:
            ref = os.fstat(f.fileno()).st_mtime
        except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
            ref = _time.time()
        lt = _time.localtime(ref)
        self.ymd = (lt.tm_year, lt.tm_mon, lt.tm_mday)
        self.ref_sod = lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec
        self.day = 0  # days added to ymd
        self.last_sod: int | None = None
        self.key: tuple[str | None, str] = (None, "")
        self.base: float | None = None

    def second(self, date: str | None, hms: str) -> float | None:
        """Epoch seconds of `HH:MM:SS` (on `YYYY-MM-DD` when the line has a date)."""
        self.key = (date, hms)
        try:
            h, m, s = int(hms[0:2]), int(hms[3:5]), int(hms[6:8])
            if date is not None:
                y, mo, d = int(date[0:4]), int(date[5:7]), int(date[8:10])
            else:
                sod = h * 3600 + m * 60 + s
                if self.last_sod is None:
                    self.day = -1 if sod > self.ref_sod else 0
                elif sod < self.last_sod - 43200:  # midnight passed
                    self.day += 1
                self.last_sod = sod
                y, mo, d = self.ymd
                d += self.day
            self.base = _time.mktime((y, mo, d, h, m, s, 0, 0, -1))
        except (ValueError, OverflowError):
            self.base = None
        return self.base

    def at(self, date: str | None, tstr: str) -> float | None:
        """Epoch seconds of a line's `HH:MM:SS.mmm` (Undated when the line has no date)."""
        hms = tstr[:8]
        base = self.base if (date, hms) == self.key else self.second(date, hms)
        if base is None:
            return None
        frac = tstr[9:12]
        t = base + int(frac) / 10 ** len(frac)
        return t if date is not None else Undated(t)


class _Reader:
    """The state machine over the lines of one log."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.clock = _Clock(f)
        self.n = 0  # next seq
        self.ready: list[Event] = []  # emitted, handed out at the next prefixed line
        self.threads: dict[str, _Thread] = {}
        self.lineno = 0
        # the record (a prefixed line and its continuation lines) being read
        self.cur: LogLines | None = None  # its first line is the last of these
        self.cur_parts: list[str] | None = None
        self.cur_len = 0
        self.cur_dropped = 0
        self.apdu_record = False  # the record is an APDU dump (blank / ==== lines follow)
        # an APDU hex dump being read
        self.dump: Apdu | None = None
        self.dump_out = False
        self.dump_left = 0
        self.dump_buf = bytearray()
        self.dump_declared = 0
        self.dump_line = 0
        self.dump_th: _Thread | None = None
        self.orphan_warned = False
        self.threads_warned = False
        self.long_lines: list[tuple[int, int]] = []  # (index in chunk, length) of cut lines

    # -- emitting -------------------------------------------------------------------------

    def emit(self, e: Event) -> None:
        e.seq = self.n
        self.n += len(e.texts) if type(e) is LogLines else 1
        self.ready.append(e)

    def warn(self, line: int, message: str) -> None:
        self.emit(TraceWarning(seq=0, message=f"line {line}: {message}"))

    def route(self, th: _Thread, e: Event) -> None:
        """An event logged on th: into its open call, or kept for a call that may claim it."""
        c = th.call
        if c is not None:
            if th.block is not None:
                c.lines += len(th.block.texts)
                th.block = None
            c.children.append(e)
            return
        th.block = None
        pending = th.pending
        if not pending:
            th.pending_line = self.lineno
        pending.append(e)
        th.pending_n += 1
        if th.pending_n > PENDING_MAX:
            self.flush_pending(th)

    def add_line(self, th: _Thread, text: str, t: float | None) -> LogLines:
        """A line logged on th, routed like an event (the hot loop does the same inline)."""
        blk = th.block
        if blk is None:
            blk = self.new_block(th, self.lineno)
        blk.texts.append(text)
        blk.times.append(t)
        if th.call is None:
            th.pending_n += 1
            if th.pending_n > PENDING_MAX:
                self.flush_pending(th)
        return blk

    def new_block(self, th: _Thread, line: int) -> LogLines:
        """An empty LogLines last in what th logs into, that the next lines join."""
        blk = th.block = _loglines(0, "logs", None, [], [], th.pid, th.tid)
        c = th.call
        if c is not None:
            c.children.append(blk)
        else:
            if not th.pending:
                th.pending_line = line
            th.pending.append(blk)
        return blk

    def flush_pending(self, th: _Thread) -> None:
        """What th logged outside calls, out with parent None."""
        if th.last_out is not None and th.call is None:
            th.last_out = None  # an answer after this would arrive too late to attach
        pending, th.pending = th.pending, []
        th.marker_at = -1
        th.pending_n = 0
        th.block = None
        n = self.n
        for e in pending:
            e.seq = n
            n += len(e.texts) if type(e) is LogLines else 1
        self.n = n
        self.ready.extend(pending)

    def open_call(self, th: _Thread, fn: str, t: float | None, line: int, entry: bool) -> None:
        c = _OpenCall(fn, t, line, entry)
        if th.pending:
            if not entry and fn not in ENTRY_LOGGED:
                # logs nothing on entry: what its thread logged since is its start
                c.children = th.pending
                c.lines = th.pending_n
                first = th.pending[0]
                c.start = first.times[0] if type(first) is LogLines else getattr(first, "time", t)
                c.line = th.pending_line
                c.entry = True
                th.pending = []
                th.pending_n = 0
                th.marker_at = -1
                th.block = None
            else:
                self.flush_pending(th)
        th.call = c

    def close_call(self, th: _Thread) -> int | None:
        """Emits th's open call with its children; the call's seq."""
        c = th.call
        if c is None:
            return None
        th.call = None
        th.block = None
        duration = None
        if c.entry and c.start is not None and c.end is not None:
            duration = float(round((c.end - c.start) * 1e6))  # the log has ms
        call = _call(0, "call", c.function, c.rv, _rv_name(c.rv), th.pid, th.tid, c.start,
                     duration, c.args, c.length_query, None, f"line {c.line}")
        n = self.n
        call.seq = parent = n
        n += 1
        for e in c.children:
            e.seq = n
            e.parent = parent  # type: ignore[attr-defined]
            n += len(e.texts) if type(e) is LogLines else 1
        self.n = n
        self.ready.append(call)
        self.ready.extend(c.children)
        th.last_out = None
        return parent

    # -- records ----------------------------------------------------------------------------

    def end_record(self) -> None:
        """The current record is complete: join its text, finish a dump cut short."""
        if self.dump is not None:
            self.end_dump(truncated=True)
        if self.cur_parts is not None and self.cur is not None:
            parts = self.cur_parts
            while parts and not parts[-1]:
                parts.pop()
            if self.cur_dropped:
                parts.append(f"[{self.cur_dropped} more lines not kept]")
            if parts:
                texts = self.cur.texts
                texts[-1] = "\n".join([texts[-1], *parts])
        self.cur = None
        self.cur_parts = None
        self.cur_len = 0
        self.cur_dropped = 0
        self.apdu_record = False

    def slow_line(self, th: _Thread, text: str, t: float | None) -> None:
        """A line that may come from a PKCS#11 function or start an OpenSC context."""
        cls = _CLASS_CACHE.get(text)
        if cls is None:
            cls = _classify(text)
        fn, marker, info = cls
        if fn is None or info is None:
            if marker:
                # a new context: whatever was open on this thread is over
                self.close_call(th)
                if th.marker_at != th.pending_n:
                    self.flush_pending(th)
                self.cur = self.add_line(th, text, t)
                th.marker_at = th.pending_n
            else:
                self.cur = self.add_line(th, text, t)
            return
        c = th.call
        ended = th.ended
        if (c is None and ended is not None and ended[0] == fn and not info.entry
                and not th.pending and not info.done and not info.end):
            # a late line of the call just ended
            ll = self.cur = _loglines(self.n, "logs", ended[1], [text], [t], th.pid, th.tid)
            self.n += 1
            self.ready.append(ll)
            return
        th.ended = None
        if c is None or c.function != fn or info.entry:
            self.close_call(th)
            self.open_call(th, fn, t, self.lineno, info.entry)
            c = th.call
            assert c is not None
        self.cur = self.add_line(th, text, t)
        if info.args:
            args = c.args
            for k, v in info.args.items():
                if k not in args:
                    args[k] = dict(v) if isinstance(v, dict) else v
        if info.length_query:
            c.length_query = True
        if info.done:
            c.rv, c.rv_seen, c.end = info.rv, True, t
            self.close_call(th)
        elif info.end:
            c.end = t
            seq = self.close_call(th)
            assert seq is not None
            th.ended = (fn, seq)

    # -- APDU dumps -------------------------------------------------------------------------

    def start_dump(self, head: re.Match[str], th: _Thread, t: float | None, line: int) -> None:
        self.apdu_record = True
        outgoing = head.group(1) == "Outgoing"
        declared = int(head.group(3))
        if declared > APDU_MAX:
            self.warn(line, f"an APDU dump of {declared} bytes, more than any APDU: read as "
                            f"{APDU_MAX} bytes")
            declared = APDU_MAX
        if outgoing:
            apdu = Apdu(seq=0, command=b"", pid=th.pid, tid=th.tid, time=t,
                        source=f"line {line}")
            self.route(th, apdu)
            th.last_out, th.last_out_line = apdu, line
        else:
            out = th.last_out
            if out is None:
                self.warn(line, "Incoming APDU with no Outgoing APDU before it on its thread")
                apdu = Apdu(seq=0, command=b"", pid=th.pid, tid=th.tid, time=t,
                            source=f"line {line}")
                self.route(th, apdu)
            else:
                apdu = out
                if out.time is not None and t is not None:
                    out.duration_us = float(round((t - out.time) * 1e6))
            th.last_out = None
        self.dump, self.dump_out, self.dump_th = apdu, outgoing, th
        self.dump_left = self.dump_declared = declared
        self.dump_buf = bytearray()
        self.dump_line = line
        if declared == 0:
            self.end_dump(truncated=False)

    def dump_line_in(self, line: str) -> bool:
        """One line of the hex dump; False when it is none (the dump was cut short)."""
        k = 16 if self.dump_left > 16 else self.dump_left
        chunk = line[:3 * k]
        try:
            b = bytes.fromhex(chunk)
        except ValueError:  # cut inside the line: keep its whole bytes
            b = bytearray()
            for tok in chunk.split():
                if len(tok) != 2 or tok.strip(_HEX_DIGITS):
                    break
                b.append(int(tok, 16))
        self.dump_buf += b
        self.dump_left -= len(b)
        if len(b) < k:
            self.end_dump(truncated=True)
            return bool(b)
        if self.dump_left == 0:
            self.end_dump(truncated=False)
        return True

    def end_dump(self, truncated: bool) -> None:
        apdu = self.dump
        self.dump = None
        if apdu is None:
            return
        data = bytes(self.dump_buf)
        if truncated:
            kind = "Outgoing" if self.dump_out else "Incoming"
            self.warn(self.dump_line, f"{kind} APDU of {self.dump_declared} bytes is cut short "
                                      f"in the log after {len(data)} bytes")
        if self.dump_out:
            apdu.command = data
        else:
            apdu.response = data

    # -- continuation lines -----------------------------------------------------------------

    def continuation(self, line: str, th: _Thread | None) -> None:
        """A line without prefix: more of the current record (th logged it), or stray text."""
        if self.dump is not None and self.dump_line_in(line):
            return
        cur = self.cur
        if cur is not None and self.cur_parts is None and th is not None:
            head = _RX_APDU_HEAD.match(line) if line[:1] in "OI" else None
            if head is not None and cur.texts[-1][-1:] in ": ":
                # the record `file:line:func: ` + `Outgoing APDU (N bytes):` is a dump
                t = cur.times[-1]
                self.unroute(th, cur)
                self.cur = None
                self.start_dump(head, th, t, self.lineno - 1)
                return
        if self.apdu_record:
            if not line or line.startswith("====="):
                return  # the blank line (0.22+) or ==== line (old format) closing a dump
        elif cur is not None:
            parts = self.cur_parts
            if parts is None:
                parts = self.cur_parts = []
            if self.cur_len < MAX_TEXT:
                parts.append(line)
                self.cur_len += len(line) + 1
            else:
                self.cur_dropped += 1
            return
        # text outside any record: before the first log line, or after an APDU dump
        if not self.apdu_record:
            th = None
        self.apdu_record = False
        if th is None:
            if not self.orphan_warned:
                self.orphan_warned = True
                self.warn(self.lineno, "text that is not an OpenSC log line (kept as a log line)")
            ll = _loglines(0, "logs", None, [line], [None], None, None)
            self.emit(ll)
        else:
            ll = self.add_line(th, line, None)
        self.cur, self.cur_parts, self.cur_len = ll, [], len(line)

    def unroute(self, th: _Thread, blk: LogLines) -> None:
        """Takes back the line just routed, the last of blk (it turned out to head an APDU
        dump)."""
        for box in (th.call.children if th.call is not None else None, th.pending, self.ready):
            if box and box[-1] is blk:
                blk.texts.pop()
                blk.times.pop()
                if box is self.ready and blk.seq + len(blk.texts) == self.n - 1:
                    self.n -= 1
                if not blk.texts:
                    box.pop()
                    if th.block is blk:
                        th.block = None
                return

    # -- the whole file ---------------------------------------------------------------------

    def chunks(self) -> Iterator[list[str]]:
        """The file's lines, a block of whole lines at a time (decoder/lines.py): decoding,
        CRLF and colours are handled per block, not per line. A line longer than MAX_LINE
        comes alone, cut there (self.long_lines says which, for a warning)."""
        first = True
        for block in blocks(self.f, MAX_LINE):
            long = isinstance(block, LongLine)
            if isinstance(block, LongLine):
                self.long_lines.append((0, block.length))
                block = block.head
            text = block.decode("utf-8", "replace")
            if "\r" in text:
                text = text.replace("\r\n", "\n").removesuffix("\r")
            if "\x1b" in text:
                text = _RX_ANSI.sub("", text)
            if first:
                first = False
                text = text.removeprefix("\ufeff")
            lines = text.split("\n")
            if lines[-1] == "" and not long:
                lines.pop()
            yield lines

    def run(self) -> Iterator[Event]:
        """The hot loop: most lines are plain log lines inside or between calls and take
        only the cheap checks here; the rest go to the methods above."""
        ready = self.ready
        clock = self.clock
        rx_pid, rx_hex, rx_date = _RX_PID, _RX_HEX, _RX_DATE
        long_lines = self.long_lines
        last_date: str | None = None
        last_tstr = ""
        last_k0: str | None = None
        last_k1 = ""
        th: _Thread | None = None
        busy = False  # the record has more than its first line: end_record() has work
        t: float | None = None
        lineno = 0
        for lines in self.chunks():
            for i, length in long_lines:
                self.warn(lineno + i + 1, f"line of about {length} bytes: only the first "
                                          f"{MAX_LINE} characters kept")
            long_lines.clear()
            last_k0 = None  # the thread is looked up again, and its call bounded, per chunk
            # The prefix (`P:<pid>; T:0x<tid> <time> [app] `) of the last line read by the
            # split below, "\n" (no line starts so) when there is none: most lines repeat it,
            # as OpenSC logs in bursts, and one that does has the same thread and time.
            # removeprefix() cuts it off, or gives the line back unchanged (the same object,
            # which != finds at once): three times faster than startswith() and a slice.
            prefix = "\n"
            for lineno, line in enumerate(lines, lineno + 1):  # noqa: B020 - continues
                text = line.removeprefix(prefix)
                if text != line:  # the previous prefixed line's thread and time
                    new = False
                else:
                    # Unix builds' prefixes (0.20+ `P:<pid>; T:0x<tid> <time> [app] <text>`, up to
                    # 0.19 `0x<tid> <time> [app] <text>`) split on spaces, cheaper than a regex;
                    # anything else that starts like a prefix goes through the regexes.
                    c2 = line[:2]
                    if c2 == "P:":
                        try:
                            k0, k1, tstr, app, text = line.split(" ", 4)
                        except ValueError:
                            app = ""
                    elif c2 == "0x":
                        k0 = ""
                        try:
                            k1, tstr, app, text = line.split(" ", 3)
                        except ValueError:
                            app = ""
                    else:
                        app = ""
                        if line[4:5] != "-" or not c2.isdigit():
                            if self.dump is not None:  # a line of an APDU dump, the common case
                                k = self.dump_left if self.dump_left < 16 else 16
                                try:
                                    data = bytes.fromhex(line[:3 * k])
                                except ValueError:
                                    data = b""
                                if len(data) == k:
                                    self.dump_buf += data
                                    self.dump_left -= k
                                    if not self.dump_left:
                                        self.end_dump(truncated=False)
                                    busy = True
                                    continue
                            self.lineno = lineno
                            busy = True
                            self.continuation(line, th)
                            continue
                    fast = app[:1] == "[" and (tstr == last_tstr
                                               or _RX_TIME.match(tstr) is not None)
                    if fast:
                        date = None
                        prefix = line[:len(line) - len(text)]
                    else:
                        prefix = "\n"
                        rx = rx_pid if c2 == "P:" else rx_hex if c2 == "0x" else rx_date
                        m = rx.match(line)
                        if m is None:
                            self.lineno = lineno
                            busy = True
                            self.continuation(line, th)
                            continue
                        key, date, tstr = m.group(1, 2, 3)
                        k0, _, k1 = key.partition(" ") if c2 == "P:" else ("", "", key)
                        text = line[m.end():]
                    new = True
                if busy:
                    self.end_record()
                    busy = False
                if ready:
                    yield from ready
                    ready.clear()
                if new:  # the thread and the time may have changed
                    if tstr != last_tstr or date != last_date:
                        last_tstr, last_date = tstr, date
                        t = clock.at(date, tstr)
                    if k1 != last_k1 or k0 != last_k0:  # another thread, or a new chunk
                        last_k0, last_k1 = k0, k1
                        self.lineno = lineno
                        th = self.switch(th, f"{k0} {k1}" if k0 else k1)
                    if not fast and ("=====" in text or "fLogin" in text):
                        # frame-less lines, which only MSVC builds write, cannot take the fast
                        # path: they have no `[app] ` before 0.20 and no location to tell
                        self.lineno = lineno
                        self.slow_line(th, text, t)
                        continue
                if ("C" in text and "C_" in text) or ("x" in text and "ctx.c:" in text):
                    # maybe a PKCS#11 line or the start of a context (one character first: it
                    # is found several times faster than a string, and most lines have no C
                    # and no x)
                    self.lineno = lineno
                    self.slow_line(th, text, t)
                    continue
                # a plain line: it joins the LogLines its thread is adding to
                blk = th.block
                if blk is None:
                    blk = self.new_block(th, lineno)
                blk.texts.append(text)
                blk.times.append(t)
                self.cur = blk
                if th.call is None:
                    th.pending_n += 1
                    if th.pending_n > PENDING_MAX:
                        self.flush_pending(th)
        self.lineno = lineno
        self.finish()
        yield from ready
        ready.clear()

    def switch(self, th: _Thread | None, key: str) -> _Thread:
        """The thread whose line comes next, after th's (its call bounded)."""
        if th is not None and th.call is not None:
            self.bound(th)
        new = self.threads.get(key)
        return self.new_thread(key) if new is None else new

    def bound(self, th: _Thread) -> None:
        """Emits th's call, without its end, once it holds more than CALL_LINES_MAX lines."""
        c = th.call
        assert c is not None
        if c.lines + len(c.children) + (len(th.block.texts) if th.block else 0) \
                <= CALL_LINES_MAX:
            return
        self.warn(c.line, f"{c.function} (pid {th.pid}, thread {th.tid}) logged more than "
                          f"{CALL_LINES_MAX} lines: shown without waiting for its end, the lines "
                          "after these on their own")
        self.close_call(th)

    def new_thread(self, key: str) -> _Thread:
        """A thread seen for the first time; past THREADS_MAX, the one seen first is over."""
        threads = self.threads
        if len(threads) >= THREADS_MAX:
            old = threads.pop(next(iter(threads)))
            if not self.threads_warned:
                self.threads_warned = True
                self.warn(self.lineno, f"more than {THREADS_MAX} threads log at once: the "
                                       "oldest is taken as finished each time a new one starts")
            self.close_call(old)
            self.flush_pending(old)
        th = threads[key] = _Thread(key)
        return th

    def finish(self) -> None:
        self.end_record()
        if self.lineno == 0:
            self.emit(TraceWarning(seq=0, message="the file is empty"))
            return
        if not self.threads:
            self.emit(TraceWarning(seq=0, message="no OpenSC debug log line found: is this an "
                                              "OpenSC debug log (OPENSC_DEBUG)?"))
        for th in self.threads.values():
            if th.last_out is not None and th.last_out.response is None:
                self.warn(th.last_out_line, "Outgoing APDU has no Incoming APDU before the "
                                            "end of the log")
            c = th.call
            if c is not None:
                self.close_call(th)
                if c.function in EXIT_LOGGED and not c.rv_seen:
                    self.warn(c.line, f"{c.function} (pid {th.pid}, thread {th.tid}) has no "
                                      "result line before the end of the log")
            self.flush_pending(th)


def read_blocks(f: BinaryIO) -> Iterator[Event]:
    """Events of an OpenSC debug log, streamed, with the lines OpenSC logged as LogLines
    (what decode reads: no object per line)."""
    return _Reader(f).run()


def read(f: BinaryIO) -> Iterator[Event]:
    """Events of an OpenSC debug log, streamed, a LogLine per logged line."""
    return log_lines(_Reader(f).run())
