"""Reads OpenSC pkcs11-spy text logs (OpenSC 0.13 to 0.27) into the same events as p11spy's own
traces, so a log a user already has can be read, filtered and diagnosed like ours.

The format (OpenSC `src/pkcs11/pkcs11-spy.c` and `pkcs11-display.c`):

    *************** OpenSC PKCS#11 spy *****************      once per process (repeated when
    Loaded: "/usr/lib/softhsm/libsofthsm2.so"                 several processes append)

    7: C_Login                                                 per-process counter from 0
    P:4242; T:0x140007141424576 2024-03-25 15:09:17.251        0.24+ (Windows: "T:%lu")
    2016-10-05 07:34:35.176                                    instead, up to 0.23
    [in] hSession = 0x1
    [in] pPin[ulPinLen] 00007ffc29d01996 / 6                   pointer / length, then a dump
        00000000  39 39 39 39 39 39                                999999
    Returned:  160 CKR_PIN_INCORRECT                           "(null)" for names it lacks

Why it is read the way it is:

* Streaming, in constant memory: the file is read 1 MiB at a time, cut at the last newline
  and decoded as UTF-8 with errors="replace" (the same as decoding each line: a newline byte
  is never part of a multi-byte sequence); a line longer than MAX_LINE is skipped with a
  warning. No regex runs over the whole file.
* Two speeds. The reader itself only looks at the first character of each line: banners,
  call headers, time (and P/T) lines and "Returned:" lines are read at once, every other line
  of a call is appended to that call's list. The arguments are parsed from that list when
  `args` is first read (SpyCall), so finding calls costs about as much as matching one regex
  per line, and `decode --errors` or a summary never parse a dump they do not show.
* Arguments are keyed by the function table's parameter names and rendered as
  `decoder/values.py` renders p11spy's own records (PINs, which pkcs11-spy prints in clear,
  become hex, as p11spy records them with P11SPY_LOG_SECRETS=1). What pkcs11-spy never prints
  (the room offered by a length pointer, C_Finalize's pReserved, ...) is simply absent; a
  length pointer known only after the call is `{"out": n}`. A value that cannot be read is
  described under the call's "decode_problems" argument (line numbers included): parsing it
  happens after the call was emitted, when no TraceWarning event can be inserted any more.
* Return names come from the project's CKR table: pkcs11-spy before 0.27 prints `(null)` for
  the codes its own table lacks.
* Times: pkcs11-spy writes local wall-clock time without a zone. It is converted with the
  zone of the machine that decodes (set TZ to the zone of the machine that traced when they
  differ). pkcs11-spy measures no durations: duration_us is None.
* pkcs11-spy takes no lock: lines of concurrent threads interleave and only the header line
  says which thread. A call that starts before the previous one returned is reported with a
  warning and the lines after it go to the newest open call; calls are still emitted in the
  order of their headers. Lines that belong to no call become TraceWarning events (a run of them
  one warning). Nothing in a damaged log raises.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any, BinaryIO

from p11spy.decoder.events import Call, Event, Process, TraceWarning
from p11spy.decoder.formats.pkcs11_spy.grammar import BANNER, FUNCTION_ALIASES, PARAMS, REDACTED
from p11spy.decoder.lines import LongLine, text_blocks
from p11spy.decoder.values import attribute_value, name_in, pin_bytes, rv_name, scalar
from p11spy.facts.pkcs11 import attributes, constants, functions, structs
from p11spy.facts.pkcs11.model import Function, Param, Role, ValueType

FORMAT = "pkcs11-spy"
MAX_LINE = 1 << 20  # longer lines are skipped with a warning (no real pkcs11-spy line is)
LONG_LINE = "\x00p11spy: over-long line of "  # the marker _batches puts in its place
MASK64 = (1 << 64) - 1
ORPHAN_SAMPLE = 60  # characters of an unreadable line quoted in its warning

# A call header followed by its time line: how a log cut from its banner is still recognised.
_SNIFF = re.compile(rb"(?m)^\d+: C_\w+\r?\n(?:P:\d+; T:(?:0x)?\d+ )?"
                    rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\r?$")
_MECH_INFO = re.compile(r"min:(-?\d+) max:(-?\d+) flags:0x([0-9A-Fa-f]+)")
_HEX_IN_PARENS = re.compile(r"\((?:0x)?([0-9A-Fa-f]+)\)")
_NOT_FOUND = re.compile(r"^Value ([0-9A-Fa-f]+) not found for type")

# Spellings of pkcs11-display.c's tables that are not (or no longer) specification names.
_SPY_SPELLINGS = {"CKK_EC_MONTOGMERY": "CKK_EC_MONTGOMERY"}

# The words pkcs11-display.c prints for CKF_ mechanism bits (C_SessionCancel, mechanism info).
_FLAG_WORDS = {
    "Hardware": "CKF_HW", "Encrypt": "CKF_ENCRYPT", "Decrypt": "CKF_DECRYPT",
    "Digest": "CKF_DIGEST", "Sign": "CKF_SIGN", "SigRecov": "CKF_SIGN_RECOVER",
    "Verify": "CKF_VERIFY", "VerRecov": "CKF_VERIFY_RECOVER", "Generate": "CKF_GENERATE",
    "KeyPair": "CKF_GENERATE_KEY_PAIR", "Wrap": "CKF_WRAP", "Unwrap": "CKF_UNWRAP",
    "Derive": "CKF_DERIVE",
}

# Info struct fields: pkcs11-spy's label -> the struct table's field name, and the fields it
# prints in hex ("%0lx") rather than in decimal ("%ld").
_FIELD_ALIASES = {"time": "utcTime"}
_HEX_FIELDS = frozenset({"flags", "ulDeviceError"})

# Roles recorded as {"in": ..., "out": ...} (as p11log does).
_INOUT = frozenset({Role.LENGTH_PTR, Role.TEMPLATE_INOUT, Role.BYTES_INOUT})
# Output roles whose NULL pointer means the call only asked for a length.
_TWO_CALL = frozenset({Role.BYTES_OUT, Role.ARRAY_OUT, Role.INTERFACE_LIST_OUT})
# Roles whose value pkcs11-spy prints as "<pointer> / <length>" plus a dump.
_BUFFER_ROLES = frozenset({Role.BYTES_IN, Role.BYTES_INOUT, Role.PIN, Role.BYTES_OUT,
                           Role.BYTES_OUT_FIXED, Role.TEXT_FIXED, Role.CSTRING})
# Lines printed without "[in] " by old versions (0.13 era).
_OLD_STYLE = ("pMechanism->", "pApplication=", "Notify=")
_ULONG_TYPES = frozenset({ValueType.ULONG, ValueType.ENUM, ValueType.FLAGS})


def sniff(head: bytes) -> bool:
    """Whether the first bytes of a file are a pkcs11-spy log (its banner, or calls)."""
    return BANNER.encode() in head or _SNIFF.search(head) is not None


def read(f: BinaryIO) -> Iterator[Event]:
    """Events in file order: a Process per banner, a Call per call block, TraceWarnings."""
    return _Reader().run(f)


# --- value helpers ---------------------------------------------------------------------------

# Logs repeat the same lines over and over (the same session handle, slot, mechanism info,
# template request): what a line means is kept, keyed by its text, and only immutable values
# or dicts of them (copied on use) are kept. MEMO_SIZE bounds each memo.
MEMO_SIZE = 1 << 16
_IMMUTABLE = (str, int, bool, type(None))


def _remember(memo: dict, key: Any, value: Any) -> None:
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    memo[key] = value


def _int(text: str) -> int | None:
    """A number as pkcs11-spy prints one: 0x-hex, or decimal (possibly negative)."""
    t = text.strip()
    try:
        if t[:2] in ("0x", "0X"):
            return int(t, 16)
        return int(t)
    except ValueError:
        return None


def _unsigned(n: int) -> int:
    """A CK_ULONG printed with %ld: -1 is CK_UNAVAILABLE_INFORMATION."""
    return n & MASK64


@lru_cache(maxsize=8192)
def _canon(family: str | None, text: str) -> str:
    """A constant printed by name (or as a number) -> the project's name for its value."""
    t = text.strip()
    fam = constants.FAMILIES.get(family or "")
    if fam is None:
        return t
    t = _SPY_SPELLINGS.get(t, t)
    try:
        return fam.render(fam.value_of(t))
    except KeyError:
        pass
    n = _int(t)
    if n is None:
        m = _HEX_IN_PARENS.search(t) or _NOT_FOUND.match(t)
        n = int(m.group(1), 16) if m else None
    return t if n is None else fam.render(_unsigned(n))


def _flag_words(family: str | None, text: str) -> Any:
    """Flags printed as names or words ("Encrypt Decrypt ", "CKF_END_OF_MESSAGE", "")."""
    fam = constants.FAMILIES.get(family or "")
    if fam is None:
        return text.strip()
    bits = 0
    for word in text.split():
        name = _FLAG_WORDS.get(word, word)
        try:
            bits |= fam.value_of(name)
        except KeyError:
            try:
                bits |= constants.lookup(name)[1]
            except KeyError:
                return text.strip()
    return fam.render(bits)


def _scalar(p: Param, text: str) -> Any:
    """One "[in] name = value" value, rendered for the parameter's role."""
    t = text.strip()
    role = p.role
    if t in ("NULL", "(nil)"):
        return "0x0" if role is Role.POINTER else None
    n = _int(t)
    if n is None and role is Role.POINTER:
        try:
            n = int(t, 16)  # MSVC prints %p as bare hex digits
        except ValueError:
            return t
    if n is not None:
        return scalar(p, _unsigned(n))
    if role is Role.ENUM:
        return _canon(p.kind, t)
    if role is Role.FLAGS:
        return _flag_words(p.kind, t)
    if role is Role.STRUCT_IN and p.struct == "CK_VERSION":
        major, _, minor = t.partition(".")
        if major.isdigit() and minor.isdigit():
            return {"major": int(major), "minor": int(minor)}
    return t


def _buffer_spec(value: str) -> tuple[int | None, int] | None:
    """(pointer or None for NULL, length) of print_generic's first line, else None."""
    v = value.strip()
    k = v.find(" / ")
    if k > 0:
        try:
            return int(v[:k], 16), int(v[k + 3:])
        except ValueError:
            return None
    if v.startswith("NULL [size"):
        m = re.search(r"\((-?\d+)\)", v)
        return None, int(m.group(1)) if m else 0
    if v == "EMPTY":
        return 1, -1
    return None


def _length(n: int) -> Any:
    return "CK_UNAVAILABLE_INFORMATION" if n < 0 or n == MASK64 else n


def _dump_bytes(rows: list[str]) -> bytes:
    """print_generic rows ("    %08X  XX XX ..  ascii") -> bytes. ValueError if a row is not
    one (the caller then reads row by row)."""
    for r in rows:
        if r[12:14] != "  " and r.strip():
            raise ValueError("not a dump row")
    return bytes.fromhex("".join([r[14:62] for r in rows]))


def _dump_bytes_lenient(rows: list[str]) -> tuple[bytes, int]:
    """Row by row; (bytes, number of rows that were not dump rows)."""
    out = bytearray()
    bad = 0
    for r in rows:
        if not r.strip():
            continue
        try:
            if r[12:14] != "  ":
                raise ValueError
            out += bytes.fromhex(r[14:62])
        except ValueError:
            bad += 1
    return bytes(out), bad


def _print_bytes(rows: list[str]) -> bytes:
    """print_print rows (hex in groups of 4 bytes, then the characters under them)."""
    hexes = []
    for r in rows:
        body = r[4:]
        if not body.strip() or body[0] == " " or body.startswith("DN: "):
            continue
        hexes.append(body.replace(" ", ""))
    return bytes.fromhex("".join(hexes))


def _attr_value(atype: int | None, data: bytes) -> Any:
    if atype is None:
        return data.hex()
    if len(data) == 4 and attributes.attribute(atype).type in _ULONG_TYPES:
        data += b"\0\0\0\0"  # a 32-bit CK_ULONG (Windows)
    return attribute_value(atype, data)


@lru_cache(maxsize=4096)
def _attr_type(name: str) -> tuple[str, int | None]:
    """pkcs11-spy's attribute label -> (the project's name, value or None if unknown)."""
    if name.startswith("CKA_? ("):
        m = _HEX_IN_PARENS.search(name)
        if m:
            v = int(m.group(1), 16)
            return name_in("CKA", v), v
        return name, None
    base = name.split("(", 1)[0]  # "CKA_NETSCAPE_URL(Netsc)"
    try:
        v = constants.CKA.value_of(base)
    except KeyError:
        return base, None
    return name_in("CKA", v), v


# --- arguments under construction ----------------------------------------------------------------


class _Args:
    """The arguments of one call while its lines are parsed."""

    __slots__ = ("number", "function", "fn", "pmap", "args", "length_query", "mech_types")

    def __init__(self, number: int | None, function: str) -> None:
        self.number = number
        self.function = function
        self.fn: Function | None = functions.BY_NAME.get(function)
        self.pmap = PARAMS.get(function, {})
        self.args: dict[str, Any] = {}
        self.length_query = False
        self.mech_types: dict[str, int] = {}

    def param(self, name: str) -> Param | None:
        return self.pmap.get(name)

    def put(self, p: Param | None, name: str, phase: str, value: Any) -> None:
        key = p.name if p else name
        if p is not None and p.role in _INOUT:
            slot = self.args.get(key)
            if not isinstance(slot, dict) or not set(slot) <= {"in", "out"}:
                slot = self.args[key] = {}
            slot[phase] = value
        else:
            self.args[key] = value

    def put_length(self, p: Param, n: int, phase: str) -> None:
        """The size parameter of a buffer, template or array, from what the spy printed."""
        if not p.length or self.fn is None:
            return
        lp = self.param(p.length)
        if lp is None:
            return
        if lp.role is Role.LENGTH_PTR:
            slot = self.args.setdefault(lp.name, {})
            if isinstance(slot, dict):
                slot.setdefault("out", _length(n))  # the size the call reported
        else:
            self.args.setdefault(lp.name, _length(n))

    def ordered_args(self) -> dict[str, Any]:
        """In the function's parameter order, as p11log gives them."""
        args = self.args
        for name, mtype in self.mech_types.items():
            _order_mech_param(args.get(name), mtype)
        if self.fn is None:
            return args
        out = {p.name: args[p.name] for p in self.fn.params if p.name in args}
        out.update((k, v) for k, v in args.items() if k not in out)
        return out


def _order_mech_param(mech: Any, mtype: int) -> None:
    """A decoded mechanism parameter's fields in the struct table's order (as p11log)."""
    if not isinstance(mech, dict) or not isinstance(mech.get("parameter"), dict):
        return
    name = structs.struct_for_mechanism(mtype)
    desc = structs.STRUCTS.get(name or "")
    if desc is None:
        return
    par = mech["parameter"]
    order = [f.name for f in desc.fields if f.name in par]
    mech["parameter"] = {k: par[k] for k in order} | {k: v for k, v in par.items()
                                                        if k not in order}


# --- collectors: continuation lines of one value, parsed when the value is complete ---------


class _Collector:
    """Lines that continue a value. take_text says whether a line that does not start with a
    space (mechanism names, "Slot 1", "Count is 2") belongs here too."""

    prefixes: tuple[str, ...] = ()

    def __init__(self, call: _Args, name: str, line: int) -> None:
        self.call = call
        self.name = name
        self.line = line
        self.rows: list[str] = []

    def take_text(self, line: str) -> bool:
        if self.prefixes and line.startswith(self.prefixes):
            self.rows.append(line)
            return True
        return False

    def finish(self, parser: _Parser) -> None:
        raise NotImplementedError


class _Bytes(_Collector):
    """A print_generic dump; store(data) puts the decoded bytes where they belong."""

    def __init__(self, call: _Args, name: str, line: int, length: int,
                 store: Callable[[bytes], None]) -> None:
        super().__init__(call, name, line)
        self.length = length
        self.store = store

    def finish(self, parser: _Parser) -> None:
        try:
            data = _dump_bytes(self.rows)
        except ValueError:
            data, bad = _dump_bytes_lenient(self.rows)
            parser.warn(self.line, f"{self.name}: {bad} of {len(self.rows)} lines of its dump "
                                   f"are not dump lines (interleaved output?)")
        if 0 <= self.length != len(data):
            parser.warn(self.line, f"{self.name}: the dump holds {len(data)} bytes, the spy "
                                   f"announced {self.length}")
        self.store(data)


class _Template(_Collector):
    """A template's attribute lines (print_attribute_list / print_attribute_list_req)."""

    def __init__(self, call: _Args, p: Param | None, name: str, phase: str, line: int,
                 count: int | None, request: bool, ulong: int) -> None:
        super().__init__(call, name, line)
        self.p = p
        self.count = count
        self.phase = phase
        self.request = request  # C_GetAttributeValue's [in]: pointers and lengths only
        self.ulong = ulong

    def finish(self, parser: _Parser) -> None:
        entries: list[dict[str, Any]] = []
        head: str | None = None
        rows: list[str] = []
        for r in self.rows:
            if r.startswith("    CK"):
                if head is not None:
                    entries.append(self._entry(parser, head, rows))
                head, rows = r[4:], []
            elif head is None:
                if r.strip():
                    parser.warn(self.line, f"{self.name}: a line before its first attribute")
            else:
                rows.append(r)
        if head is not None:
            entries.append(self._entry(parser, head, rows))
        # "[in] pTemplate[0]:" is what a NULL template with a zero count prints (the usual
        # way to ask C_FindObjectsInit for every object): recorded as NULL, as p11spy does.
        value = None if not entries and self.count == 0 else entries
        self.call.put(self.p, self.name, self.phase, value)

    def _entry(self, parser: _Parser, head: str, rows: list[str]) -> dict[str, Any]:
        key = (self.request, self.ulong, head, tuple(rows))
        hit = _ENTRIES.get(key)
        if hit is not None:
            return dict(hit)
        problems = len(parser.problems)
        entry = self._read_entry(parser, head, rows)
        if len(parser.problems) == problems and isinstance(entry.get("value"), _IMMUTABLE):
            _remember(_ENTRIES, key, entry)
            return dict(entry)
        return entry

    def _read_entry(self, parser: _Parser, head: str, rows: list[str]) -> dict[str, Any]:
        if head.startswith("CKA_? ("):
            j = head.find(")") + 1
        else:
            j = head.find(" ")
            j = len(head) if j < 0 else j
        tname, atype = _attr_type(head[:j])
        rest = head[j:].strip()
        entry: dict[str, Any] = {"type": tname}
        spec = _buffer_spec(rest)
        if spec is not None:
            ptr, n = spec
            entry["len"] = _length(n)
            if self.request or not ptr:
                return entry
            if not rows:
                if n == 0:
                    entry["value"] = _attr_value(atype, b"")
                return entry
            try:
                if any(r[12:14] == "  " and r[4] != " " for r in rows if len(r) > 14):
                    data = _dump_bytes([r for r in rows if not r.startswith("    DN: ")])
                else:
                    data = _print_bytes(rows)
            except ValueError:
                parser.warn(self.line, f"{self.name}: the value of {tname} is unreadable")
                return entry
            if 0 <= n != len(data):
                parser.warn(self.line, f"{self.name}: {tname} holds {len(data)} bytes, the spy "
                                       f"announced {n}")
            entry["value"] = _attr_value(atype, data)
            return entry
        if rest in ("True", "False"):
            entry["len"] = 1
            entry["value"] = rest == "True"
            return entry
        entry["len"] = self.ulong
        family = attributes.attribute(atype).family if atype is not None else None
        entry["value"] = _canon(family, rest) if family else rest
        return entry


# (request?, sizeof(CK_ULONG), attribute line, its value's lines) -> template entry.
_ENTRIES: dict[tuple[bool, int, str, tuple[str, ...]], dict[str, Any]] = {}


class _Struct(_Collector):
    """An info struct ("[out] pInfo:" then "      label:  '...'" lines)."""

    def __init__(self, call: _Args, p: Param, line: int) -> None:
        super().__init__(call, p.name, line)
        self.p = p

    def take_text(self, line: str) -> bool:
        if " : min:" in line:
            self.rows.append(line)
            return True
        return False

    def finish(self, parser: _Parser) -> None:
        key = (self.p.struct, tuple(self.rows))
        hit = _STRUCT_ROWS.get(key)
        if hit is None:
            hit = self._read()
            if isinstance(hit, dict):
                _remember(_STRUCT_ROWS, key, hit)
        self.call.args[self.p.name] = dict(hit) if isinstance(hit, dict) else hit

    def _read(self) -> Any:
        desc = structs.STRUCTS.get(self.p.struct or "")
        if desc is None:
            return [r.strip() for r in self.rows]
        fields = {f.name: f for f in desc.fields}
        raw: dict[str, str] = {}
        last = None
        for r in self.rows:
            m = _MECH_INFO.search(r)
            if m:
                raw.update(ulMinKeySize=m.group(1), ulMaxKeySize=m.group(2),
                           flags=f"{int(m.group(3), 16):x}")
                continue
            s = r.strip()
            if s.startswith("'") and last is not None:
                raw[last] += _unquote(s)  # slotDescription's second half
                continue
            label, sep, value = s.partition(":")
            if not sep or " " in label:
                continue  # a flag's name under "flags:"
            last = _FIELD_ALIASES.get(label, label)
            raw[last] = _unquote(value.strip())
        out: dict[str, Any] = {}
        for name, f in fields.items():
            if name in raw:
                out[name] = _field_value(f, name, raw[name])
        return out


_STRUCT_ROWS: dict[tuple[str | None, tuple[str, ...]], dict[str, Any]] = {}


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == "'" else text


def _field_value(f: Param, name: str, text: str) -> Any:
    if f.role is Role.TEXT_FIXED:
        return text.rstrip(" \x00")
    if f.role is Role.STRUCT_IN:
        return text
    if f.role is Role.ENUM and not text[:1].isdigit():
        return _canon(f.kind, text)
    try:
        n = int(text, 16) if name in _HEX_FIELDS else int(text)
    except ValueError:
        return text
    return scalar(f, _unsigned(n))


class _Array(_Collector):
    """Slot lists, mechanism lists and interface lists; "Count is N" for a NULL array."""

    prefixes = ("Slot ", "Count is ", "CK", "Unknown Mechanism", "Interface '")

    def __init__(self, call: _Args, p: Param, line: int, count: int | None) -> None:
        super().__init__(call, p.name, line)
        self.p = p
        self.count = count

    def finish(self, parser: _Parser) -> None:
        call, p = self.call, self.p
        items: list[Any] | None = []
        count = self.count
        for r in self.rows:
            s = r.strip()
            if not s:
                continue
            if s.startswith("Count is "):
                items = None
                count = _int(s[9:])
            elif s.startswith("Slot "):
                n = _int(s[5:])
                if items is not None and n is not None:
                    items.append(_unsigned(n))
            elif s.startswith("Interface '"):
                name, _, flags = s[11:].rpartition("' flags=")
                if items is not None:
                    items.append({"name": name, "flags": name_in(
                        "CKF_INTERFACE", int(flags, 16) if flags else 0)})
            elif items is not None:
                items.append(_canon(p.kind if p.kind != "slot" else None, s))
        call.args[p.name] = items
        if items is None:
            call.length_query = True
        if count is not None:
            call.put_length(p, count, "out")


class _InitArgs(_Collector):
    """C_Initialize's "     flags: N" line under a non-NULL pInitArgs."""

    def finish(self, parser: _Parser) -> None:
        value: dict[str, Any] = {}
        for r in self.rows:
            label, sep, text = r.strip().partition(":")
            if sep and label == "flags":
                n = _int(text)
                value["flags"] = name_in("CKF_INIT_ARGS", n) if n is not None else text
        self.call.args[self.name] = value


class _Raw(_Collector):
    """Lines under a parameter this reader does not know: kept as text."""

    def finish(self, parser: _Parser) -> None:
        self.call.args.setdefault(self.name, [r.strip() for r in self.rows])


# --- the argument parser: one call's body lines, read when its args are first asked for ------

# (function, phase, text after "[in] ") -> (parameter, printed name, value) of scalar lines.
_SCALAR_LINES: dict[tuple[str, str, str], tuple[Param, str, Any]] = {}


class _Parser:
    """Parses the body lines of one call ("[in] ...", dumps, templates) into arguments.
    Problems do not raise: they are listed under the call's "decode_problems" argument."""

    def __init__(self, number: int | None, function: str, first_line: int, ulong: int) -> None:
        self.state = _Args(number, function)
        self.first = first_line
        self.ulong = ulong
        self.col: _Collector | None = None
        self.problems: list[str] = []
        self.dispatch: dict[str, Callable[[int, str], None]] = {
            " ": self._space, "[": self._bracket}

    def warn(self, line: int, message: str) -> None:
        self.problems.append(f"line {line}: {message}")

    def run(self, lines: list[str]) -> tuple[dict[str, Any], bool]:
        lineno = self.first
        dispatch, text = self.dispatch, self._text
        for line in lines:
            if line:
                try:
                    dispatch.get(line[0], text)(lineno, line)
                except Exception as exc:  # noqa: BLE001 - a damaged line must not stop reading
                    self.warn(lineno, f"unreadable ({exc}): {line[:ORPHAN_SAMPLE]!r}")
            lineno += 1
        self._close()
        st = self.state
        args = st.ordered_args()
        if self.problems:
            args["decode_problems"] = self.problems
        return args, st.length_query

    def _close(self) -> None:
        """The value being collected is complete: parse it into the arguments."""
        col = self.col
        if col is None:
            return
        self.col = None
        try:
            col.finish(self)
        except Exception as exc:  # noqa: BLE001 - a damaged value must not stop reading
            self.warn(col.line, f"{col.name}: unreadable value ({exc})")

    def _space(self, lineno: int, line: str) -> None:
        col = self.col
        if col is not None:
            col.rows.append(line)
        else:
            self._text(lineno, line)

    def _text(self, lineno: int, line: str) -> None:
        """Lines that do not start with "[" (continuations, "Object 0x.. matches", ...)."""
        col = self.col
        if col is not None and col.take_text(line):
            return
        st = self.state
        if line.startswith("Object ") and line.endswith(" matches"):
            self._close()
            n = _int(line[7:-8])
            objs = st.args.get("phObject")
            if not isinstance(objs, list):
                objs = st.args["phObject"] = []
            if n is not None:
                objs.append(_unsigned(n))
            return
        if line.startswith(_OLD_STYLE):
            self._param(lineno, "in", line)
            return
        s = line.strip()
        if s.startswith(("CKM_", "Unknown Mechanism")) and "type" not in st.args and \
                st.param("type") is not None:
            st.args["type"] = _canon("CKM", s)  # old C_GetMechanismInfo: the name alone
            return
        if s:
            self.warn(lineno, f"a line this reader cannot place: {line[:ORPHAN_SAMPLE]!r}")

    def _bracket(self, lineno: int, line: str) -> None:
        # 0.23 prints C_GetMechanismInfo's "[in] type = %s" without a newline, so the next
        # "[out] pInfo:" is glued to it: read each part.
        k = line.find("[out] ", 1)
        if k > 0:
            self._bracket(lineno, line[:k])
            self._bracket(lineno, line[k:])
            return
        if line.startswith("[in] "):
            self._param(lineno, "in", line[5:])
        elif line.startswith("[out] "):
            self._param(lineno, "out", line[6:])
        elif line.startswith("[compat]"):
            self._close()
        else:
            self._text(lineno, line)

    def _param(self, lineno: int, phase: str, rest: str) -> None:
        """One "name = value", "name <buffer>" or "name[N]:" argument line."""
        self._close()
        st = self.state
        hit = _SCALAR_LINES.get((st.function, phase, rest))
        if hit is not None:
            p, base, value = hit
            if p.name in st.args and p.role not in _INOUT:
                self.warn(lineno, f"{base} is printed twice: the lines of two calls are "
                                  f"mixed (concurrent threads?)")
            st.put(p, base, phase, value)
            return
        s = rest.rstrip()
        block = s.endswith(":")
        value = ""
        if block:
            name = s[:-1].rstrip()
        else:
            i = s.find(" = ")
            if i >= 0:
                name, value = s[:i], s[i + 3:]
            elif s.endswith(" ="):
                name = s[:-2]
            elif "=" in s and " " not in s.split("=", 1)[0]:
                name, value = s.split("=", 1)  # 0.13 era: "pMechanism->type=CKM_RSA_PKCS"
            else:
                name, _, value = s.partition(" ")
        if "->" in name:
            self._mechanism(lineno, phase, name, value)
            return
        base, _, bracket = name.partition("[")
        base = base.lstrip("*")
        count = _int(bracket[:-1]) if bracket.endswith("]") else None
        p = st.param(base)
        key = p.name if p is not None else base
        if key in st.args and (p is None or p.role not in _INOUT) and key != "phObject":
            self.warn(lineno, f"{base} is printed twice: the lines of two calls are mixed "
                              f"(concurrent threads?)")
        if block:
            self._block(lineno, p, base, phase, count)
            return
        spec = _buffer_spec(value) if (p is None or p.role in _BUFFER_ROLES) else None
        if spec is not None:
            self._buffer(lineno, p, base, phase, spec)
            return
        if p is None:
            st.args[base] = value.strip()
            return
        role = p.role
        if role is Role.INIT_ARGS:
            v = value.strip()
            if v in ("(nil)", "NULL") or _int(v) == 0:
                st.args[p.name] = None
            else:
                st.args[p.name] = {}
                self.col = _InitArgs(st, p.name, lineno)
            return
        if role is Role.MECHANISM:  # "[in] pMechanism = NULL"
            st.args[p.name] = None
            return
        if p.name == "pulObjectCount" and phase == "out":
            st.args.setdefault("phObject", [])  # "Object 0x.. matches" lines follow
        v = _scalar(p, value)
        st.put(p, base, phase, v)
        if isinstance(v, _IMMUTABLE) and p.name != "pulObjectCount":
            _remember(_SCALAR_LINES, (st.function, phase, rest), (p, base, v))

    def _block(self, lineno: int, p: Param | None, base: str, phase: str,
               count: int | None) -> None:
        st = self.state
        role = p.role if p is not None else None
        if p is not None and role in (Role.TEMPLATE_IN, Role.TEMPLATE_INOUT):
            self.col = _Template(st, p, p.name, phase, lineno, count,
                                 request=phase == "in" and role is Role.TEMPLATE_INOUT,
                                 ulong=self.ulong)
            if count is not None and p.length:
                lp = st.param(p.length)
                if lp is not None:
                    st.args.setdefault(lp.name, count)
        elif p is not None and role is Role.STRUCT_OUT:
            self.col = _Struct(st, p, lineno)
        elif p is not None and role in (Role.ARRAY_OUT, Role.INTERFACE_LIST_OUT):
            self.col = _Array(st, p, lineno, count)
        else:
            self.col = _Raw(st, base, lineno)

    def _buffer(self, lineno: int, p: Param | None, base: str, phase: str,
                spec: tuple[int | None, int]) -> None:
        st = self.state
        ptr, n = spec
        role = p.role if p is not None else None
        if p is not None:
            st.put_length(p, n, phase)
        if ptr is None:  # NULL: no dump follows
            st.put(p, base, phase, None)
            if role in _TWO_CALL:
                st.length_query = True
            return
        if n < 0:
            st.put(p, base, phase, "")
            return

        def store(data: bytes) -> None:
            if role is Role.CSTRING:
                v: Any = data.rstrip(b"\0").decode("utf-8", "replace")
            elif role is Role.TEXT_FIXED:
                v = data.decode("utf-8", "replace").rstrip(" \x00")
            elif role is Role.PIN:
                v = pin_bytes(data)
            else:
                v = data.hex()
            st.put(p, base, phase, v)

        self.col = _Bytes(st, p.name if p is not None else base, lineno, n, store)

    def _mechanism(self, lineno: int, phase: str, name: str, value: str) -> None:
        """pMechanism->type, ->pParameter[ulParameterLen], ->pParameter->field lines."""
        st = self.state
        head, _, tail = name.partition("->")
        mech = st.args.get(head)
        if not isinstance(mech, dict):
            mech = st.args[head] = {"mechanism": None, "parameter": None}
        if tail == "type":
            mech["mechanism"] = _canon("CKM", value)
            try:
                st.mech_types[head] = constants.CKM.value_of(mech["mechanism"])
            except KeyError:
                pass
            return
        if not tail.startswith("pParameter"):
            self.warn(lineno, f"an unknown mechanism field: {name!r}")
            return
        sub = tail[10:]
        if not sub.startswith("->"):  # the whole parameter: a dump, or NULL
            spec = _buffer_spec(value)
            if spec is None or spec[0] is None:
                mech["parameter"] = None
                return

            def store_whole(data: bytes) -> None:
                mech["parameter"] = data.hex()

            self.col = _Bytes(st, f"{head}->pParameter", lineno, spec[1], store_whole)
            return
        fname = sub[2:].partition("[")[0].strip()
        par = mech["parameter"]
        if not isinstance(par, dict):
            par = mech["parameter"] = {}
        desc = structs.STRUCTS.get(structs.struct_for_mechanism(st.mech_types.get(head, -1))
                                   or "")
        field = next((f for f in desc.fields if f.name == fname), None) if desc else None
        spec = _buffer_spec(value)
        if spec is not None and (field is None or field.role in _BUFFER_ROLES):
            ptr, n = spec
            if field is not None and field.length:
                par.setdefault(field.length, _length(n))
            if ptr is None:
                par[fname] = None
                return

            def store_field(data: bytes) -> None:
                par[fname] = data.hex()

            self.col = _Bytes(st, f"{head}->pParameter->{fname}", lineno, n, store_field)
            return
        par[fname] = _scalar(field, value) if field is not None else value.strip()


# --- the events --------------------------------------------------------------------------------


class SpyCall(Call):
    """A Call read from a pkcs11-spy log. Its arguments (and length_query, which depends on
    them) are parsed from the call's lines when first read: finding calls is cheap, parsing
    dumps and templates is not, and a filtered or counted trace never needs most of them."""

    @property  # type: ignore[override]
    def args(self) -> dict[str, Any]:
        if self._raw is not None:
            self._parse()
        return self._args

    @args.setter
    def args(self, value: dict[str, Any]) -> None:
        self._args = value
        self._raw = None

    @property  # type: ignore[override]
    def length_query(self) -> bool:
        if self._raw is not None:
            self._parse()
        return self._lq

    @length_query.setter
    def length_query(self, value: bool) -> None:
        if self.__dict__.get("_raw") is not None:
            self._parse()
        self._lq = value

    @property  # type: ignore[override]
    def source(self) -> str | None:
        line = self.__dict__.get("_line")
        return f"line {line}" if line is not None else self.__dict__.get("_source")

    @source.setter
    def source(self, value: str | None) -> None:
        self._line = None
        self._source = value

    def _parse(self) -> None:
        raw = self._raw
        self._raw = None
        try:
            self._args, self._lq = _Parser(self.call_number, self.function, self._first,
                                           self._ulong).run(raw)
        except Exception as exc:  # noqa: BLE001 - reading a value must never raise
            self._args = {"decode_problems": [f"unreadable arguments ({exc})"]}


def _new_call(function: str, number: int, line: int, ulong: int) -> SpyCall:
    """A SpyCall for a call header, without dataclass __init__ (one dict assignment: this
    runs once per call). seq, rv and rv_name are set when it returns."""
    c = object.__new__(SpyCall)
    c.__dict__ = {
        "seq": -1, "type": "call", "function": function, "rv": None, "rv_name": None,
        "pid": None, "tid": None, "time": None, "duration_us": None, "call_number": number,
        "_line": line, "_args": {}, "_lq": False, "_raw": [], "_first": line + 1,
        "_ulong": ulong, "_done": False,
    }
    return c


# --- the reader: finds calls, processes and stray lines --------------------------------------

# First characters of the lines that continue a call block: "[in] ...", dumps and other
# indented lines, "Slot 1", "Count is 2", "CKM_..." and "Unknown Mechanism", "Object 0x..
# matches", "Interface '...'", and the 0.13-era "pMechanism->type=" / "Notify=" lines.
_BODY = frozenset(" [SCOIUpN")


class _Reader:
    """One pass over one file: headers, times and "Returned:" lines are read at once, a
    call's other lines are kept for SpyCall to parse when asked. The common cases are
    inlined in run(): it is the loop every line of the file goes through."""

    def __init__(self) -> None:
        self.out: list[Event] = []
        self.seq = 0
        self.open: list[SpyCall] = []  # calls not yet emitted, in the order they started
        self.cur: SpyCall | None = None  # the call the next body lines belong to
        self.process: Process | None = None  # announced by a banner, not yet emitted
        self.pids: set[int] = set()  # pids of the calls emitted so far
        self.ulong = 8  # sizeof(CK_ULONG) of the traced process: 4 on Windows
        self.crlf = False
        self.orphans: list[Any] | None = None  # [first line, last line, count, sample, where]
        self.rv_names: dict[int, str | None] = {}
        self._tkey = ""
        self._tms = 0  # epoch milliseconds of self._tkey

    # -- main loop --

    def _batches(self, f: BinaryIO) -> Iterator[list[str]]:
        """The file's lines, a block at a time (decoder/lines.py); a line longer than
        MAX_LINE becomes one marker line."""
        for block in text_blocks(f, MAX_LINE):
            if isinstance(block, LongLine):
                yield [f"{LONG_LINE}{block.seen}"]
                continue
            lines, crlf = block
            if crlf is not None:
                self.crlf = crlf
            yield lines

    def run(self, f: BinaryIO) -> Iterator[Event]:
        out = self.out
        open_ = self.open
        rv_names = self.rv_names
        body = _BODY
        lineno = 0
        cur: SpyCall | None = None  # self.cur
        block: list[str] | None = None  # cur._raw
        for lines in self._batches(f):
            for line in lines:
                lineno += 1
                if not line:
                    if block is not None:
                        block.append(line)  # keeps line numbers exact inside the block
                    continue
                c = line[0]
                if block is not None and (c == " " or c in body):
                    block.append(line)
                    continue
                # Fast paths: a header, its time (or P/T) line, its "Returned:" line.
                if cur is None:
                    if "0" <= c <= "9" and self.orphans is None:
                        i = line.find(": ")
                        if i > 0 and line[:i].isdigit():
                            name = line[i + 2:].rstrip()
                            name = FUNCTION_ALIASES.get(name, name)
                            self.cur = cur = _new_call(name, int(line[:i]), lineno, self.ulong)
                            block = cur._raw
                            open_.append(cur)
                            continue
                elif cur.time is None and cur.pid is None:
                    if "0" <= c <= "2" and line[4:5] == "-":
                        cur.time = self._epoch(line)
                        cur._first = lineno + 1  # body lines start after this one
                        continue
                    if c == "P" and line[:2] == "P:" and "; T:0x" in line:
                        semi = line.find("; T:0x")
                        sp = line.find(" ", semi)
                        t = line[semi + 6:sp]
                        if sp > 0 and line[2:semi].isdigit() and t.isdigit():
                            cur.pid = int(line[2:semi])
                            cur.tid = int(t)  # "T:0x%lu": decimal after 0x (0.24+ bug)
                            cur.time = self._epoch(line[sp + 1:])
                            cur._first = lineno + 1
                            continue
                elif c == "R" and line[:9] == "Returned:" and len(open_) == 1 and \
                        self.process is None and self.orphans is None:
                    try:
                        rv = int(line[9:].split(None, 1)[0])
                    except (ValueError, IndexError):
                        rv = -1
                    if rv >= 0:
                        name = rv_names.get(rv)
                        if name is None:
                            name = rv_names[rv] = rv_name(rv)
                        cur.rv = rv
                        cur.rv_name = name
                        cur.seq = self.seq
                        self.seq += 1
                        if cur.pid is not None:
                            self.pids.add(cur.pid)
                        open_.clear()
                        if out:
                            yield from out
                            out.clear()
                        yield cur
                        self.cur = cur = block = None
                        continue
                self.cur = cur
                try:
                    self._slow(lineno, line, c)
                except Exception as exc:  # noqa: BLE001 - a damaged line must not stop reading
                    self.warn(lineno, f"unreadable line ({exc}): {line[:ORPHAN_SAMPLE]!r}")
                cur = self.cur
                block = cur._raw if cur is not None else None
                if out:
                    yield from out
                    out.clear()
        self._eof(lineno)
        yield from out
        out.clear()

    def _slow(self, lineno: int, line: str, c: str) -> None:
        """Every line the fast paths of run() did not take."""
        if c in _BODY:
            cur = self.cur
            if cur is None:
                self._orphan(lineno, line)
            else:
                cur._raw.append(line)
        elif c == "R" and line.startswith("Returned:"):
            self._returned(lineno, line)
        elif "0" <= c <= "9":
            self._digit(lineno, line)
        elif c == "P" and line.startswith("P:"):
            self._pid_line(lineno, line)
        elif c == "*" and BANNER in line:
            self._banner(lineno, REDACTED in line)
        elif c == "L" and line.startswith("Loaded:"):
            self._loaded(line)
        elif c == "E" and line.startswith("Error:"):
            self._error(lineno, line)
        elif line.startswith(LONG_LINE):
            self.warn(lineno, f"a line of {line[len(LONG_LINE):]} bytes or more, longer than "
                              f"any pkcs11-spy writes: skipped")
        else:
            self._orphan(lineno, line)

    # -- events --

    def _next_seq(self) -> int:
        s = self.seq
        self.seq += 1
        return s

    def warn(self, line: int, message: str) -> None:
        self._flush_orphans()
        self.out.append(TraceWarning(seq=self._next_seq(), message=f"line {line}: {message}"))

    def _orphan(self, line: int, text: str) -> None:
        """A line that belongs to no call: consecutive ones make one warning."""
        o = self.orphans
        if o is not None and o[1] == line - 1:
            o[1] = line
            o[2] += 1
            return
        self._flush_orphans()
        cur = self.cur
        where = f"in call #{cur.call_number} {cur.function}" if cur is not None else \
            "outside any call"
        self.orphans = [line, line, 1, text[:ORPHAN_SAMPLE], where]

    def _flush_orphans(self) -> None:
        o = self.orphans
        if o is None:
            return
        self.orphans = None
        first, last, n, sample, where = o
        if n == 1:
            msg = f"line {first}: a line this reader cannot place ({where}): {sample!r}"
        else:
            msg = (f"lines {first}-{last}: {n} lines this reader cannot place ({where}), "
                   f"the first: {sample!r}")
        self.out.append(TraceWarning(seq=self._next_seq(), message=msg))

    def _emit_process(self) -> None:
        p = self.process
        if p is not None:
            self.process = None
            self._flush_orphans()
            p.seq = self._next_seq()
            self.out.append(p)

    def _emit_ready(self) -> None:
        """Emit finished calls from the front of the queue (the order of their headers)."""
        open_ = self.open
        while open_ and open_[0]._done:
            c = open_.pop(0)
            # A banner's process is the first new pid after it (0.24+: blocks of processes
            # writing at the same time alternate); without pids, the next call's.
            if self.process is not None and (c.pid is None or c.pid not in self.pids):
                self.process.pid = c.pid
                self._emit_process()
            if c.pid is not None:
                self.pids.add(c.pid)
            self._flush_orphans()
            rv = c.rv
            if rv is not None:
                name = self.rv_names.get(rv)
                if name is None:
                    name = self.rv_names[rv] = rv_name(rv)
                c.rv_name = name
            c.seq = self._next_seq()
            self.out.append(c)

    def _split_glued(self, c: SpyCall) -> bool:
        """0.23 prints C_GetMechanismInfo's "[in] type = %s" with no newline: when the call
        failed, its "Returned:" line is glued to that one. True if it was found and read."""
        lines = c._raw
        for i in range(len(lines) - 1, max(len(lines) - 4, -1), -1):
            k = lines[i].find("Returned:")
            if k > 0 and lines[i][0] == "[":
                line = lines[i]
                del lines[i:]
                lines.append(line[:k])
                self.cur = c
                self._returned(c._first + i, line[k:])
                return True
        return False

    def _abandon(self, why: str) -> None:
        for c in self.open:
            if not c._done and not self._split_glued(c):
                self.warn(c._line, f"call #{c.call_number} {c.function} has no 'Returned:' "
                                   f"line ({why}): its return value is unknown")
                c._done = True
        self.cur = None
        self._emit_ready()

    def _eof(self, lineno: int) -> None:
        self._abandon(f"the file ends at line {lineno}")
        self._emit_process()
        self._flush_orphans()

    # -- handlers --

    def _new_process(self, redacted: bool = False) -> Process:
        """pkcs11-spy prints PINs in clear, unless p11spy redact masked them (and marked the
        banner)."""
        return Process(seq=-1, pid=None, info={"module": None, "format": FORMAT,
                                               "secrets": not redacted})

    def _banner(self, lineno: int, redacted: bool = False) -> None:
        self._abandon(f"a new spy banner at line {lineno}: another process, or this one "
                      f"restarted")
        self._emit_process()
        self.process = self._new_process(redacted)
        self.ulong = 4 if self.crlf else 8  # CRLF: written by the Windows C runtime

    def _loaded(self, line: str) -> None:
        module = line[7:].strip()
        if len(module) >= 2 and module[0] == module[-1] == '"':
            module = module[1:-1]
        if self.process is None:
            self.process = self._new_process()
        self.process.info["module"] = module

    def _error(self, lineno: int, line: str) -> None:
        if self.process is None:
            self.process = self._new_process()
        self.process.info["error"] = line[6:].strip()
        self.warn(lineno, f"pkcs11-spy could not start: {line[6:].strip()}")

    def _digit(self, lineno: int, line: str) -> None:
        if line[4:5] == "-" and line[13:14] == ":":
            self._time_line(lineno, line, None, None)
            return
        i = line.find(": ")
        if i <= 0 or not line[:i].isdigit():
            self._orphan(lineno, line)
            return
        self._flush_orphans()
        name = line[i + 2:].strip()
        name = FUNCTION_ALIASES.get(name, name)
        call = _new_call(name, int(line[:i]), lineno, self.ulong)
        cur = self.cur
        if cur is not None and not self._split_glued(cur):
            self.warn(lineno, f"call #{call.call_number} {name} starts before call "
                              f"#{cur.call_number} {cur.function} (line {cur._line}) "
                              f"returned: concurrent threads wrote into each other's lines "
                              f"(pkcs11-spy takes no lock), so the lines that follow may "
                              f"belong to either call")
        self.open.append(call)
        self.cur = call

    def _pid_line(self, lineno: int, line: str) -> None:
        semi = line.find("; T:")
        sp = line.find(" ", semi + 4)
        if semi < 0 or sp < 0:
            self._orphan(lineno, line)
            return
        pid = int(line[2:semi])
        t = line[semi + 4:sp]
        if t[:2] == "0x":
            t = t[2:]  # "T:0x%lu": a decimal number after 0x (a bug kept since 0.24)
            tid = int(t) if t.isdigit() else int(t, 16)
        else:
            tid = int(t)
            self.ulong = 4  # "T:%lu": the Windows build
        self._time_line(lineno, line[sp + 1:], pid, tid)

    def _time_line(self, lineno: int, stamp: str, pid: int | None, tid: int | None) -> None:
        target = self.cur
        if target is None or target.time is not None or target.pid is not None:
            target = next((c for c in reversed(self.open)
                           if not c._done and c.time is None and c.pid is None), None)
            if target is None:
                self._orphan(lineno, stamp)
                return
        target.pid, target.tid, target.time = pid, tid, self._epoch(stamp)
        target._ulong = self.ulong
        if not target._raw:
            target._first = lineno + 1

    def _epoch(self, s: str) -> float | None:
        """Local "YYYY-MM-DD HH:MM:SS.mmm" -> epoch seconds (this machine's zone)."""
        key = s[:19]
        if key != self._tkey:
            try:
                d = _dt.datetime(int(s[0:4]), int(s[5:7]), int(s[8:10]), int(s[11:13]),
                                 int(s[14:16]), int(s[17:19]))
                ms = int(d.timestamp()) * 1000
            except (ValueError, OverflowError, OSError):
                return None
            self._tkey, self._tms = key, ms
        frac = s[20:23]
        # integer milliseconds / 1000: the closest float, which prints as the stamp did
        return (self._tms + int(frac)) / 1000 if frac.isdigit() else self._tms / 1000

    def _returned(self, lineno: int, line: str) -> None:
        cur = self.cur
        if cur is None:
            self._orphan(lineno, line)
            return
        parts = line[9:].split(None, 1)
        rv = _int(parts[0]) if parts else None
        if rv is not None and rv < 0:  # %ld of a 32-bit unsigned long (Windows)
            rv += (1 << 32) if rv >= -(1 << 31) else (1 << 64)
        cur.rv = rv
        cur._done = True
        if rv is None:
            self.warn(lineno, f"call #{cur.call_number} {cur.function}: unreadable return "
                              f"value")
        self.cur = next((c for c in reversed(self.open) if not c._done), None)
        self._emit_ready()
