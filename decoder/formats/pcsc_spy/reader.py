"""Reads pcsc-lite's pcsc-spy traces, in both forms users have, into PC/SC events.

pcsc-spy knows nothing of PKCS#11: every SCardTransmit becomes an Apdu with parent None (its
error set to the return code's name when the call failed, and then no response: the buffer
the spy prints for a failed call is whatever was in memory); every other call a PcscCall with
rv, rv_name and its arguments under the parameter names of p11spy's own PC/SC table
(facts/pcsc.py), rendered as `decoder/p11log.py` renders our own PC/SC records, so a trace from
`p11spy run` and one from pcsc-spy decode alike. Functions our table lacks
(SCardIsValidContext, SCardListReaderGroups, SCardFreeMemory, SCardSetAttrib) get
pcsc-lite's parameter names.

The raw stream (what libpcscspy writes to the FIFO `$HOME/pcsc-spy`, recorded with
`cat ~/pcsc-spy > log`) is lossless. Every line is `<pthread_self in hex>@<text>`, written
whole under a mutex, so lines of threads never mix; per call:

    7F66BB845840@>|1795749299|241832|SCardConnect             entry: epoch sec|usec|function
    7F66BB845840@0x3A02AEDF                                    one line per value, in order
    7F66BB845840@p11spy vpcd 00 00                             (strings as they are, buffers
    7F66BB845840@00 A4 04 00 07 62 76 01 FF 00 00 00           as a length line then a hex
    7F66BB845840@<|1795749299|241886|SCardConnect|Command successful.|0x00000000   line)

The values are read by position, per function, as pcsc-lite 1.9.9 writes them; SCardTransmit
is read by its buffers (length line + hex line pairs: the first is the command, the last the
response), which also covers older releases that wrote no SCARD_IO_REQUEST lines. tid is the
thread's pthread_self value (what the spy prints, not the kernel's thread id); pid is None
(two processes writing to one FIFO cannot be told apart, except by their pthread values);
time is the entry's epoch time and duration_us the time to the return line.

The decoded text (what the `pcsc-spy` tool prints, with or without colour, -t, -d) keeps
less: a function line, ` i `/` o ` argument lines (buffers as hexdump rows), and
` => <text> (<NAME> [0x<rv>])  [<sec>.<usec>]`, indented four spaces per thread (or prefixed
`(tN)` with -t), then per-thread statistics. tid is pcsc-spy's thread number (the indentation
level, or N of `(tN)`), time is None, duration_us the printed duration (None with -d, which
also prints handles as 0x????: those arguments are None). The feature lists pcsc-spy parses
after an SCardControl and its statistics are skipped; anything else it printed (Garbage:,
a Python traceback) becomes a warning.

Both forms are told apart line by line (a raw line starts with hex digits and "@"), so a
file holding both is read too. Calls are emitted when they return, in the order of their
return lines; a call still open at the end of the file (a client that crashed inside the
spy, a cut file) is emitted at the end with rv None and a warning.

Streaming, in constant memory: 1 MiB reads cut at the last newline, decoded as UTF-8 with
errors="replace"; a line longer than MAX_LINE is skipped with a warning; a call keeps at most
MAX_VALUES lines and at most MAX_OPEN calls are open at once. Nothing in a damaged file
raises: what cannot be read becomes a TraceWarning naming its line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from p11spy.decoder.events import Apdu, Event, PcscCall, TraceWarning
from p11spy.decoder.lines import LongLine, text_blocks
from p11spy.decoder.values import pcsc_rv_name, scalar
from p11spy.facts import pcsc
from p11spy.facts.pkcs11.model import SIZE_ROLES, Function, Param, Role

FORMAT = "pcsc-spy"
MAX_LINE = 1 << 20  # longer lines are skipped (a 64 KiB extended APDU's hex line is 192 KiB)
MAX_VALUES = 4096  # value lines kept per call
MAX_OPEN = 256  # calls open at once (one per thread); beyond, the oldest is given up
ORPHAN_SAMPLE = 60
U32 = 0xFFFFFFFF

_SNIFF_RAW = re.compile(rb"(?m)^[0-9A-Fa-f]{1,16}@[<>]\|\d+\|\d+\|SCard\w+")
_SNIFF_RV = re.compile(rb"(?m)^ *(?:\(t\d+\) )?(?:\x1b\[[0-9;]*m)? => [^\n]*"
                       rb"\[0x[0-9A-Fa-f]{8,16}\]\)? *(?:\x1b\[0m)? *\[(?:\d+\.\d+|\?\?\.\?\?)\]")
_SNIFF_CALL = re.compile(rb"(?m)^ *(?:\(t\d+\) )?(?:\x1b\[[0-9;]*m)?SCar(?:d\w+|Control)"
                         rb"(?:\x1b\[0m)?\r?\n *(?:\(t\d+\) )?(?:\x1b\[[0-9;]*m)? [io] [A-Za-z]")

_RAW = re.compile(r"([0-9A-Fa-f]{1,16})@")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_THREAD_TAG = re.compile(r" *\(t(\d{1,6})\) (.*)\Z", re.S)
_NAME = re.compile(r"SCard\w+|SCarControl")
_RV_LINE = re.compile(r" => (.*?)\[(0x[0-9A-Fa-f]{1,16})\]\)?\s*"
                      r"\[(?:(\d+)\.(\d+)|\?\?\.\?\?)\]\s*\Z")
_STATS = re.compile(r"Thread \d+/\d+|Results sorted by total execution time|"
                    r"total time: [\d.]+ sec|[\d.]+ sec \(\s*\d+ calls\)\s+[\d.]+% \w+|"
                    r"fifo .* already present\. Reusing it\.|Ctrl-C, exiting\.")
_LABEL = re.compile(r"([A-Za-z][\w.]*(?: length)?):? ?(.*)\Z", re.S)
_ROW = re.compile(r"[0-9A-F]{4} ")
_HEX = re.compile(r"0x([0-9A-Fa-f]+)")

# pcsc-spy's misspelling of SCardControl, and macOS's name for it.
_ALIASES = {"SCarControl": "SCardControl", "SCardControl132": "SCardControl"}


def sniff(head: bytes) -> bool:
    """Whether the first bytes of a file are pcsc-spy's raw stream or its decoded text."""
    return bool(_SNIFF_RAW.search(head) or _SNIFF_RV.search(head) or _SNIFF_CALL.search(head))


def read(f: BinaryIO) -> Iterator[Event]:
    """PcscCall and Apdu events in the order the calls returned, and TraceWarnings."""
    return _Reader().run(f)


class _Short(Exception):
    """A call's value lines ended before its layout did."""


class _Open:
    """A call seen entering and not yet returned."""

    __slots__ = ("function", "tid", "time", "us", "line", "values", "raw", "dropped")

    def __init__(self, function: str, tid: int | None, us: int | None, line: int,
                 raw: bool) -> None:
        self.function = function
        self.tid = tid
        self.us = us  # entry time in epoch microseconds (raw stream)
        self.time = None if us is None else us / 1e6
        self.line = line
        self.values: list[Any] = []  # raw: str; decoded: (direction, text)
        self.raw = raw
        self.dropped = 0


# --- values --------------------------------------------------------------------------------

# pcsc-lite functions the preloaded spy does not wrap, so facts/pcsc.py lacks them: their
# parameters under pcsc-lite's names.
_LITE_ONLY = {f.name: f for f in (
    Function("SCardIsValidContext", (Param("hContext", "SCARDCONTEXT", Role.HANDLE),),
             since="pcsc"),
    Function("SCardListReaderGroups", (
        Param("hContext", "SCARDCONTEXT", Role.HANDLE),
        Param("mszGroups", "LPSTR", Role.BYTES_OUT, length="pcchGroups"),
        Param("pcchGroups", "LPDWORD", Role.LENGTH_PTR)), since="pcsc"),
    Function("SCardFreeMemory", (Param("hContext", "SCARDCONTEXT", Role.HANDLE),
                                 Param("pvMem", "LPCVOID", Role.POINTER)), since="pcsc"),
    Function("SCardSetAttrib", (
        Param("hCard", "SCARDHANDLE", Role.HANDLE),
        Param("dwAttrId", "DWORD", Role.ULONG),
        Param("pbAttr", "LPCBYTE", Role.BYTES_IN, length="cbAttrLen"),
        Param("cbAttrLen", "DWORD", Role.LENGTH)), since="pcsc"),
)}
# Roles of the parameters the call writes (the others it reads; rgReaderStates, both).
_OUT = frozenset({Role.HANDLE_OUT, Role.ULONG_OUT, Role.BYTES_OUT, Role.BYTES_OUT_FIXED})
# Roles of numbers shown by their constants' names, as p11log shows our own records' ones.
_NAMED = frozenset({Role.ENUM, Role.FLAGS, Role.ULONG_OUT})
# pcsc-spy's quirks. The values of parameters the call writes that it also writes before the
# call, in this order after the inputs (kept as their "in" for a length, else dropped):
_BEFORE = {"SCardConnect": ("phCard", "pdwActiveProtocol"),
           "SCardListReaderGroups": ("pcchGroups",),
           "SCardStatus": ("pcchReaderLen", "pcbAtrLen")}
# The labels of its decoded text where they are not our parameter names, by direction:
_LABELS = {("phContext", "o"): "hContext", ("pdwActiveProtocol", "o"): "dwActiveProtocol",
           ("szReaderName", "o"): "mszReaderName", ("pcchReaderLen", "o"): "cchReaderLen",
           ("pdwState", "o"): "dwState", ("pdwProtocol", "o"): "dwProtocol",
           ("pbAtr", "o"): "bAtr", ("pcbAtrLen", "o"): "bAtrLen",
           ("pbSendBuffer", "i"): "bSendBuffer", ("cbSendLength", "i"): "bSendLength",
           ("pbRecvBuffer", "o"): "bRecvBuffer", ("lpBytesReturned", "o"): "bRecvLength",
           ("pbAttr", "i"): "bAttr", ("pbAttr", "o"): "bAttr", ("cbAttrLen", "i"): "bAttrLen",
           ("pcbAttrLen", "o"): "bAttrLen"}
# Values its decoded text writes unlike others of their kind, and how they are read.
_HCARD, _NULL_WORD, _ONE_LINE, _HEX_LINE, _NULL_LEFT_OUT = range(5)
_DECODED_QUIRKS = {("SCardReleaseContext", "hContext"): _HCARD,  # or labelled hCard
                   ("SCardIsValidContext", "hContext"): _HCARD,
                   ("SCardCancel", "hContext"): _HCARD,
                   ("SCardListReaders", "mszGroups"): _NULL_WORD,  # NULL as "(null)"
                   ("SCardStatus", "szReaderName"): _ONE_LINE,  # the one name, even empty
                   ("SCardStatus", "pbAtr"): _HEX_LINE,  # hex on the label's line
                   ("SCardSetAttrib", "pbAttr"): _NULL_LEFT_OUT}  # NULL: no argument


def _function(name: str) -> Function | None:
    return pcsc.BY_NAME.get(name) or _LITE_ONLY.get(name)


def _shown(fn: Function) -> list[Param]:
    """The parameters pcsc-spy writes, in its order: inputs, then outputs (a length comes with
    its buffer; the reserved pointers are not written)."""
    ps = [p for p in fn.params
          if p.role not in SIZE_ROLES and not p.name.startswith("pvReserved")]
    return [p for p in ps if p.role not in _OUT] + [p for p in ps if p.role in _OUT]


def _number(p: Param, value: int | None) -> Any:
    """A number as p11log renders the same parameter of our own PC/SC records."""
    return scalar(p, value) if value is not None and p.role in _NAMED else value


def _hexnum(text: str) -> int | None:
    m = _HEX.search(text)
    return int(m.group(1), 16) if m else None


def _rv(n: int) -> int:
    """A LONG printed with %lX: a negative one is sign-extended to 64 bits."""
    return n & U32 if n > U32 and n >> 32 == U32 else n


def _size(text: str) -> int:
    """The bytes a string had in the trace (an undecodable byte became one U+FFFD)."""
    return len(text.encode("utf-8", "replace")) - 2 * text.count("\ufffd")


def _state(reader: str, cur: int | None, ev: int | None, atr: bytes | None) -> dict[str, Any]:
    return {"reader": reader,
            "current_state": None if cur is None else f"0x{cur:x}",
            "event_state": None if ev is None else f"0x{ev:x}",
            "atr": None if atr is None else atr.hex()}


class _Values:
    """A raw call's value lines, read in order."""

    def __init__(self, values: list[str]) -> None:
        self.v = values
        self.i = 0

    def text(self) -> str:
        if self.i >= len(self.v):
            raise _Short
        self.i += 1
        return self.v[self.i - 1]

    def num(self) -> int | None:
        t = self.text().strip()
        if t == "NULL":
            return None
        if not t.startswith("0x"):
            raise ValueError(f"value {self.i}: {t[:40]!r} is not a number")
        return int(t, 16)

    def cstring(self) -> str | None:
        t = self.text()
        return None if t == "(null)" else t

    def buffer(self) -> tuple[int | None, bytes | None]:
        n = self.num()
        t = self.text()
        return n, None if t.strip() == "NULL" else bytes.fromhex(t)

    def strings(self) -> tuple[int | None, list[str] | None]:
        """spy_n_str: the length, then strings until it is used up (or NULL)."""
        n = self.num()
        t = self.text()
        if n is None or t == "NULL":
            return n, None
        out, used = [t], _size(t) + 1
        while used < n:
            t = self.text()
            out.append(t)
            used += _size(t) + 1
        return n, [s for s in out if s]

    def left(self) -> int:
        return len(self.v) - self.i


def _raw_args(name: str, v: _Values, rv: int | None) -> dict[str, Any]:
    """The arguments of one raw call, read by position (pcsc-lite 1.9.9's layout)."""
    fn = _function(name)
    if fn is None:
        v.i = len(v.v)
        return {"values": v.v[:64]}
    a: dict[str, Any] = {}
    ok = rv == 0
    before: dict[str, int | None] = {}
    outputs = False
    for p in _shown(fn):
        if p.role in _OUT and not outputs:
            outputs = True
            for b in _BEFORE.get(fn.name, ()):
                before[b] = v.num()
        if p.role is Role.BYTES_INOUT:  # rgReaderStates
            a.update(_raw_states(v, ok))
        elif (fn.name, p.name) == ("SCardStatus", "pbAtr"):  # a NULL ATR is one line
            if v.i < len(v.v) and v.v[v.i] == "NULL":
                v.i += 1
                n, data = None, None
            else:
                n, data = v.buffer()
            a[p.name] = None if data is None or not ok else data.hex()
            a[p.length or ""] = _length(before, p.length, n)
        elif p.role is Role.BYTES_OUT and p.ctype == "LPSTR":  # strings
            n, names = v.strings()
            a[p.name] = names
            a[p.length or ""] = _length(before, p.length, n)
        elif p.role is Role.BYTES_IN:
            n, data = v.buffer()
            a[p.name] = None if data is None else data.hex()
            a[p.length or ""] = n
        elif p.role in (Role.BYTES_OUT, Role.BYTES_OUT_FIXED):
            n, data = v.buffer()
            if ok and data is not None:
                a[p.name] = data.hex()
            a[p.length or ""] = _length(before, p.length, n)
        elif p.role is Role.CSTRING:
            a[p.name] = v.cstring()
        elif p.role is Role.POINTER:
            a[p.name] = v.text()
        else:
            a[p.name] = _number(p, v.num())
    return a


def _length(before: dict[str, int | None], name: str | None, n: int | None) -> dict[str, Any]:
    """An in/out length: its value before the call, when pcsc-spy writes it, and after."""
    return {"in": before[name], "out": n} if name in before else {"out": n}


def _raw_states(v: _Values, ok: bool) -> dict[str, Any]:
    """SCardGetStatusChange's reader states: their count, then each state before the call,
    then each after."""
    count = v.num() or 0
    if count > MAX_VALUES:
        raise ValueError(f"cReaders {count} is not plausible")
    states: dict[str, list] = {}
    for phase in ("in", "out"):
        states[phase] = []
        for _ in range(count):
            reader = v.text()
            cur, ev = v.num(), v.num()
            states[phase].append(_state(reader, cur, ev, v.buffer()[1]))
    if not ok:  # as p11spy records it: the states after the call only when it succeeded
        del states["out"]
    return {"rgReaderStates": states, "cReaders": count}


def _raw_buffers(values: list[str]) -> list[bytes | None]:
    """The buffers of a raw SCardTransmit: each number line followed by a hex line (or NULL,
    or nothing for an empty buffer) whose byte count it gives."""
    out: list[bytes | None] = []
    i = 1  # values[0] is hCard
    while i < len(values) - 1:
        n, t = values[i], values[i + 1]
        if n.startswith("0x") and not t.startswith("0x"):
            try:
                count = int(n, 16)
                data = None if t.strip() == "NULL" else bytes.fromhex(t)
            except ValueError:
                i += 1
                continue
            # a hex line shorter than its length: the file was cut in the middle of it
            if data is None or len(data) == count or (data and i + 2 == len(values)):
                out.append(data)
                i += 2
                continue
        i += 1
    return out


# --- decoded text ------------------------------------------------------------------------

def _rows(rows: list[str]) -> bytes:
    """pcsc-spy's hexdump rows ("0000 00 A4 ... ascii"): hex from a fixed-width column."""
    out = bytearray()
    for r in rows:
        out += bytes.fromhex(r[5:5 + 47])
    return bytes(out)


class _Fields:
    """A decoded call's argument lines as (direction, label, text, hexdump rows)."""

    def __init__(self, values: list[tuple[str, str]]) -> None:
        self.items: list[list[Any]] = []
        for d, text in values:
            if text.startswith(" "):  # a buffer's dump row, NULL, or a reader state's field
                t = text[1:]
                last = self.items[-1] if self.items else None
                if last is not None and last[0] == d and _ROW.match(t):
                    last[3].append(t)
                    continue
                if last is not None and last[0] == d and t == "NULL" and not last[2]:
                    last[2] = "NULL"
                    continue
                text = t
            m = _LABEL.match(text)
            if m:
                self.items.append([d, m.group(1), m.group(2), []])
            else:
                self.items.append([d, "", text, []])

    def get(self, d: str, label: str, nth: int = 0) -> list[Any] | None:
        for item in self.items:
            if item[0] == d and item[1] == label:
                if nth == 0:
                    return item
                nth -= 1
        return None

    def num(self, d: str, label: str) -> int | None:
        item = self.get(d, label)
        return None if item is None else _hexnum(item[2])

    def text(self, d: str, label: str) -> str | None:
        item = self.get(d, label)
        return None if item is None else item[2]

    def buffer(self, d: str, label: str) -> bytes | None:
        item = self.get(d, label)
        if item is None or item[2] == "NULL":
            return None
        return _rows(item[3])

    def all(self, d: str, label: str) -> list[str]:
        return [item[2] for item in self.items if item[0] == d and item[1] == label]


def _decoded_args(name: str, f: _Fields, rv: int | None) -> dict[str, Any]:
    """The arguments of one call of the decoded text, found by their labels."""
    fn = _function(name)
    if fn is None:
        return {"values": [f"{item[0]} {item[1]} {item[2]}".strip() for item in f.items[:64]]}
    a: dict[str, Any] = {}
    ok = rv == 0
    for p in _shown(fn):
        d = "o" if p.role in _OUT else "i"
        label = _LABELS.get((p.name, d), p.name)
        quirk = _DECODED_QUIRKS.get((fn.name, p.name))
        if p.role is Role.BYTES_INOUT:  # rgReaderStates
            a.update(_decoded_states(f, ok))
        elif quirk == _ONE_LINE:
            name = f.text(d, label)
            a[p.name] = None if name in (None, "NULL") else [name]
        elif p.role is Role.BYTES_OUT and p.ctype == "LPSTR":  # strings, one a line
            names = f.all(d, label)
            a[p.name] = None if names in ([], ["NULL"]) else [n for n in names if n]
        elif quirk == _HEX_LINE:
            atr = f.text(d, label)
            a[p.name] = None if not ok or atr in (None, "", "NULL") else bytes.fromhex(atr).hex()
        elif p.role in (Role.BYTES_IN, Role.BYTES_OUT, Role.BYTES_OUT_FIXED):
            data = f.buffer(d, label)
            if data is None and p.role is Role.BYTES_IN and quirk != _NULL_LEFT_OUT:
                a[p.name] = None
            elif data is not None and (ok or p.role is Role.BYTES_IN):
                a[p.name] = data.hex()
        elif p.role is Role.CSTRING:
            text = f.text(d, label)
            a[p.name] = None if quirk == _NULL_WORD and text == "(null)" else text
        elif p.role is Role.POINTER:
            a[p.name] = f.text(d, label)
        elif quirk == _HCARD and not f.get(d, label):
            a[p.name] = f.num(d, "hCard")
        else:
            a[p.name] = _number(p, f.num(d, label))
        if p.length and p.role is not Role.BYTES_INOUT:
            size = fn.param(p.length)
            if size.role is Role.LENGTH:
                a[p.length] = f.num("i", _LABELS.get((p.length, "i"), p.length))
            else:
                out = f.num("o", _LABELS.get((p.length, "o"), p.length))
                a[p.length] = {"in": f.num("i", p.length), "out": out} \
                    if p.length in _BEFORE.get(fn.name, ()) else {"out": out}
    return a


def _decoded_states(f: _Fields, ok: bool) -> dict[str, Any]:
    """SCardGetStatusChange's reader states, each from its szReader line on."""
    states: dict[str, list] = {"in": [], "out": []}
    for d, phase in (("i", "in"), ("o", "out")):
        cur: dict[str, Any] | None = None
        for item in f.items:
            if item[0] != d:
                continue
            label, text = item[1], item[2]
            if label == "szReader":
                cur = _state(text, None, None, None)
                states[phase].append(cur)
            elif cur is not None and label == "dwCurrentState":
                n = _hexnum(text)
                cur["current_state"] = None if n is None else f"0x{n:x}"
            elif cur is not None and label == "dwEventState":
                n = _hexnum(text)
                cur["event_state"] = None if n is None else f"0x{n:x}"
            elif cur is not None and label == "Atr":
                cur["atr"] = None if text.strip() == "NULL" else bytes.fromhex(text).hex()
    if not ok:
        del states["out"]
    count = f.text("i", "cReaders")
    return {"rgReaderStates": states,
            "cReaders": int(count) if count and count.isdigit() else len(states["in"])}


# --- the reader ----------------------------------------------------------------------------

class _Reader:
    def __init__(self) -> None:
        self.seq = 0
        self.open: dict[tuple[str, str | int], _Open] = {}
        self.orphan_first = 0
        self.orphan_last = 0
        self.orphan_count = 0
        self.orphan_sample = ""

    # events

    def _next(self) -> int:
        self.seq += 1
        return self.seq - 1

    def warn(self, message: str) -> TraceWarning:
        return TraceWarning(seq=self._next(), message=message)

    def _orphan(self, lineno: int, text: str) -> Iterator[Event]:
        if self.orphan_count and lineno != self.orphan_last + 1:
            yield from self._flush_orphans()
        if not self.orphan_count:
            self.orphan_first = lineno
            self.orphan_sample = text[:ORPHAN_SAMPLE]
        self.orphan_last = lineno
        self.orphan_count += 1

    def _flush_orphans(self) -> Iterator[Event]:
        if not self.orphan_count:
            return
        n, a, b = self.orphan_count, self.orphan_first, self.orphan_last
        where = f"line {a}" if n == 1 else f"lines {a}-{b}"
        what = "a line" if n == 1 else f"{n} lines"
        self.orphan_count = 0
        yield self.warn(f"{where}: {what} outside any call, not read "
                        f"(starting {self.orphan_sample!r})")

    # input

    def _batches(self, f: BinaryIO) -> Iterator[list[Any]]:
        """The file's lines, a block at a time (decoder/lines.py); an over-long line becomes
        a marker (None and its length are put as a tuple)."""
        for block in text_blocks(f, MAX_LINE):
            yield [("\x00long", block.length)] if isinstance(block, LongLine) else block[0]

    def run(self, f: BinaryIO) -> Iterator[Event]:
        lineno = 0
        open_calls = self.open
        for lines in self._batches(f):
            for line in lines:
                lineno += 1
                if isinstance(line, tuple):
                    yield from self._flush_orphans()
                    yield self.warn(f"line {lineno}: a line of {line[1]} bytes, longer than "
                                    f"{MAX_LINE}, skipped")
                    continue
                if not line or line.isspace():
                    continue
                m = _RAW.match(line)
                if m:
                    tail = line[m.end():]
                    if tail[:2] not in ("<|", ">|"):  # most lines: a value of the open call
                        call = open_calls.get(("r", m.group(1).upper()))
                        if call is not None:
                            self._value(call, tail)
                            continue
                    yield from self._raw(lineno, m.group(1), tail)
                else:
                    yield from self._decoded(lineno, line)
        yield from self._flush_orphans()
        for key, call in list(self.open.items()):
            del self.open[key]
            yield self.warn(f"line {call.line}: {call.function} (thread {_tid_text(call)}) has "
                            "no return line: the trace ends inside it")
            yield from self._emit(call, None, None, None)

    # raw lines

    def _raw(self, lineno: int, thread: str, tail: str) -> Iterator[Event]:
        key = ("r", thread.upper())
        if tail.startswith(">|"):
            parts = tail.split("|")
            if len(parts) == 4 and parts[1].isdigit() and parts[2].isdigit() and parts[3]:
                yield from self._flush_orphans()
                yield from self._start(key, lineno, parts[3], int(thread, 16),
                                       int(parts[1]) * 1_000_000 + int(parts[2]), True)
                return
        elif tail.startswith("<|"):
            parts = tail.split("|")
            if len(parts) >= 5 and parts[1].isdigit() and parts[2].isdigit():
                try:
                    rv = _rv(int(parts[-1], 16))
                except ValueError:
                    rv = None
                if rv is not None:
                    yield from self._flush_orphans()
                    yield from self._end(key, lineno, parts[3], rv,
                                         int(parts[1]) * 1_000_000 + int(parts[2]), None)
                    return
        else:
            call = self.open.get(key)
            if call is not None:
                self._value(call, tail)
                return
        yield from self._orphan(lineno, tail)

    def _value(self, call: _Open, value: Any) -> None:
        if len(call.values) < MAX_VALUES:
            call.values.append(value)
        else:
            call.dropped += 1

    def _start(self, key: tuple[str, str | int], lineno: int, function: str, tid: int | None,
               us: int | None, raw: bool) -> Iterator[Event]:
        function = _ALIASES.get(function, function)
        old = self.open.pop(key, None)
        if old is not None:
            yield self.warn(f"line {old.line}: {old.function} (thread {_tid_text(old)}) has no "
                            f"return line before the next call at line {lineno}")
            yield from self._emit(old, None, None, None)
        if len(self.open) >= MAX_OPEN:
            oldest_key = next(iter(self.open))
            oldest = self.open.pop(oldest_key)
            yield self.warn(f"line {oldest.line}: {oldest.function} given up: more than "
                            f"{MAX_OPEN} calls open at once")
            yield from self._emit(oldest, None, None, None)
        self.open[key] = _Open(function, tid, us, lineno, raw)

    def _end(self, key: tuple[str, str | int], lineno: int, function: str, rv: int,
             us: int | None, duration_us: float | None) -> Iterator[Event]:
        function = _ALIASES.get(function, function)
        call = self.open.pop(key, None)
        if call is None:
            yield self.warn(f"line {lineno}: the return of {function} (rv "
                            f"{pcsc_rv_name(rv)}) without its call, not read")
            return
        if function and function != call.function:
            yield self.warn(f"line {lineno}: the return of {function} ends {call.function} "
                            f"(line {call.line})")
        if duration_us is None and us is not None and call.us is not None:
            duration_us = float(us - call.us)
        yield from self._emit(call, rv, duration_us, lineno)

    # decoded lines

    def _decoded(self, lineno: int, line: str) -> Iterator[Event]:
        if "\x1b" in line:
            line = _ANSI.sub("", line)
            if not line or line.isspace():
                return
        m = _THREAD_TAG.match(line)
        if m:
            thread, content = int(m.group(1)), m.group(2)
        else:
            spaces = len(line) - len(line.lstrip(" "))
            thread = spaces // 4
            content = line[4 * thread:]
        key = ("d", thread)
        if content.startswith(" => "):
            rm = _RV_LINE.match(content)
            if rm and key in self.open:
                yield from self._flush_orphans()
                rv = _rv(int(rm.group(2), 16))
                dur = None if rm.group(3) is None else int(rm.group(3)) * 1e6 + int(rm.group(4))
                yield from self._end(key, lineno, "", rv, None, dur)
                return
        elif content[:3] in (" i ", " o "):
            call = self.open.get(key)
            if call is not None and not call.raw:
                self._value(call, (content[1], content[3:]))
                return
        elif _NAME.fullmatch(content.rstrip()):
            yield from self._flush_orphans()
            yield from self._start(key, lineno, content.rstrip(), thread, None, False)
            return
        elif content.startswith("  ") or _STATS.fullmatch(line.strip()):
            return  # pcsc-spy's own commentary: SCardControl feature lists, statistics
        yield from self._orphan(lineno, line.strip())

    # events of a finished call

    def _emit(self, call: _Open, rv: int | None, duration_us: float | None,
              end_line: int | None) -> Iterator[Event]:
        fn = call.function
        where = f"line {call.line}"
        if call.dropped:
            yield self.warn(f"{where}: {fn}: {call.dropped} lines beyond {MAX_VALUES} not read")
        common = {"tid": call.tid, "time": call.time, "duration_us": duration_us}
        rv_name = None if rv is None else pcsc_rv_name(rv)
        if fn == "SCardTransmit":
            command: bytes = b""
            response: bytes | None = None
            try:
                if call.raw:
                    bufs = _raw_buffers(call.values)
                    command = (bufs[0] or b"") if bufs else b""
                    response = bufs[-1] if len(bufs) > 1 else None
                else:
                    fields = _Fields(call.values)
                    command = fields.buffer("i", "bSendBuffer") or b""
                    response = fields.buffer("o", "bRecvBuffer") \
                        if fields.get("o", "bRecvBuffer") else None
            except ValueError as exc:
                yield self.warn(f"{where}: SCardTransmit: its buffers cannot be read ({exc})")
            if rv != 0:
                response = None
            error = rv_name if rv else None
            yield Apdu(seq=self._next(), command=command, response=response, error=error,
                       source=where, **common)
            return
        try:
            if call.raw:
                vals = _Values(call.values)
                args = _raw_args(fn, vals, rv)
                if vals.left():
                    yield self.warn(f"{where}: {fn}: {vals.left()} more value lines than "
                                    "pcsc-lite 1.9.9 writes, not read")
            else:
                args = _decoded_args(fn, _Fields(call.values), rv)
        except _Short:
            if end_line is not None:  # a call cut by the end of the file is already reported
                yield self.warn(f"{where}: {fn}: fewer value lines than pcsc-lite 1.9.9 writes; "
                                "the values are kept as they are")
            args = {"values": [v if isinstance(v, str) else " ".join(v) for v in
                               call.values[:64]]}
        except (ValueError, IndexError) as exc:
            yield self.warn(f"{where}: {fn}: the values cannot be read ({exc}); they are kept "
                            "as they are")
            args = {"values": [v if isinstance(v, str) else " ".join(v) for v in
                               call.values[:64]]}
        yield PcscCall(seq=self._next(), function=fn, rv=rv, rv_name=rv_name, args=args,
                       **common)


def _tid_text(call: _Open) -> str:
    if call.tid is None:
        return "?"
    return f"{call.tid:X}" if call.raw else f"t{call.tid}"
