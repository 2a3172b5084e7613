"""The knowledge base of codes behind `p11spy explain` and `p11spy diagnose`.

Why: one failure shows up as a card status word, an OpenSC error, a CKR_* from the module, a
PC/SC code, a GSKit return code or an IBM message, and an administrator usually holds just one
of them. This module turns the tables of decoder/knowledge/ into Code records, follows how one
layer maps to the next (SW -> OpenSC -> CKR), and reads what a user types (`160`, `0xA0`,
`63 C2`, `-1214`, `gsk:408`, `AMQ9669E`, ...) into every plausible reading, likeliest first.
CKR names and numbers come from the project's constant table, never from a second list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from p11spy.decoder.knowledge import Entry, Pattern
from p11spy.decoder.knowledge.ckr import CKR as CKR_TEXTS
from p11spy.decoder.knowledge.gskit import GSKIT, GSKIT_BY_NAME_ONLY, GSKIT_RANGES
from p11spy.decoder.knowledge.ibm_messages import AMQ, CTGSK, MQRC
from p11spy.decoder.knowledge.opensc import OPENSC
from p11spy.decoder.knowledge.pcsc import PCSC, PCSC_STATE_FLAGS
from p11spy.decoder.knowledge.status_words import SW, SW_GROUPS, SW_PATTERNS
from p11spy.facts.pkcs11.constants import FAMILIES

SYSTEMS = ("CKR", "SW", "OpenSC", "PC/SC", "GSKit", "CTGSK", "AMQ", "MQRC")
SYSTEM_LABELS = {
    "CKR": "PKCS#11 return value",
    "SW": "ISO 7816 status word",
    "OpenSC": "OpenSC error",
    "PC/SC": "PC/SC return code",
    "GSKit": "IBM GSKit return code",
    "CTGSK": "runmqakm / GSKCapiCmd message",
    "AMQ": "IBM MQ message",
    "MQRC": "IBM MQ reason code",
}
_U32 = 1 << 32


@dataclass(frozen=True)
class Code:
    """One code with what it means, why it usually happens and what to check."""

    system: str  # one of SYSTEMS
    name: str
    value: int | None  # None: a message id, a pattern, or a name whose number is unconfirmed
    meaning: str
    causes: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    maps_to: str | None = None  # the code one layer up: SW/PC/SC -> OpenSC error, OpenSC -> CKR
    note: str = ""
    aliases: tuple[str, ...] = ()
    pattern: str | None = None  # status words and ranges: the family that matched ("63Cx")

    @property
    def ckr(self) -> str | None:
        """For an OpenSC error: the CKR_* OpenSC's PKCS#11 module returns for it."""
        return self.maps_to if self.system == "OpenSC" else None

    @property
    def hex(self) -> str | None:
        """The value in hex as the system's own tools print it; None where hex means nothing."""
        v = self.value
        if v is None or self.system == "OpenSC":
            return None
        if self.system == "CKR" or self.system == "PC/SC":
            return f"0x{v:08X}"
        if self.system == "SW":
            return f"0x{v:04X}"
        return f"0x{v:X}"

    def value_text(self) -> str:
        """The value for a human: hex and decimal where both make sense."""
        v = self.value
        if v is None:
            return ""
        if self.system == "SW":
            return f"SW1 SW2 = {v >> 8:02X} {v & 0xFF:02X}"
        if self.system == "OpenSC":
            return str(v)
        if self.system in ("GSKit", "MQRC"):
            return f"{v} = {self.hex}"
        text = f"{self.hex} = {v}"
        if self.system == "PC/SC" and v >= 1 << 31:
            text += f" (as a signed 32-bit LONG: {v - _U32})"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "system": self.system, "name": self.name, "value": self.value, "hex": self.hex,
            "meaning": self.meaning, "causes": list(self.causes), "checks": list(self.checks),
            "maps_to": self.maps_to, "note": self.note or None, "pattern": self.pattern,
        }


def label(code: Code) -> str:
    """What kind of code this is, in words (reader state bits are not return codes)."""
    if code.name.startswith("SCARD_STATE_"):
        return "PC/SC reader state bit"
    return SYSTEM_LABELS[code.system]


@dataclass(frozen=True)
class Match:
    """One reading of what the user typed: the code, and how the text was read to get it."""

    code: Code
    read_as: str  # e.g. "decimal", "hex", "status word", "name"
    rank: int = field(default=0, compare=False)  # lower is likelier


# --- building the tables ---------------------------------------------------------------------

def _code(system: str, e: Entry) -> Code:
    return Code(system, e.name, e.value, e.meaning, e.causes, e.checks, e.maps_to, e.note,
                e.aliases)


def _ckr_code(name: str, value: int) -> Code:
    text = CKR_TEXTS.get(name)
    if text is None:  # the constant table grew before the texts did
        return Code("CKR", name, value, "(no explanation written yet)")
    aliases = tuple(n for n, v in FAMILIES["CKR"].names.items() if v == value and n != name)
    return Code("CKR", name, value, text.meaning, text.causes, text.checks, None, text.note,
                aliases)


class _Tables:
    """Every code by system and value, and by name (upper case, aliases included)."""

    def __init__(self) -> None:
        self.by_value: dict[str, dict[int, list[Code]]] = {s: {} for s in SYSTEMS}
        self.by_name: dict[str, list[Code]] = {}
        self.codes: list[Code] = []
        ckr = FAMILIES["CKR"]
        self._add(_ckr_code(name, value) for value, name in ckr.canonical.items())
        self._add(_code("SW", e) for e in SW)
        self._add(_code("OpenSC", e) for e in OPENSC)
        self._add(_code("PC/SC", e) for e in PCSC)
        self._add((_code("PC/SC", e) for e in PCSC_STATE_FLAGS), by_value=False)
        self._add(_code("GSKit", e) for e in GSKIT + GSKIT_BY_NAME_ONLY)
        self._add(_code("CTGSK", e) for e in CTGSK)
        self._add(_code("AMQ", e) for e in AMQ)
        self._add(_code("MQRC", e) for e in MQRC)
        for p in SW_PATTERNS + SW_GROUPS:  # "63Cx" typed as such: the general meaning
            self._index_name(p.name, _pattern_code(p, None))

    def _add(self, codes: Iterable[Code], by_value: bool = True) -> None:
        for c in codes:
            self.codes.append(c)
            if by_value and c.value is not None:
                self.by_value[c.system].setdefault(c.value, []).append(c)
            if c.system != "SW":  # status words are read as numbers, not names
                for n in (c.name, *c.aliases):
                    self._index_name(n, c)
                if c.system in ("CTGSK", "AMQ") and c.name[-1].isalpha():
                    self._index_name(c.name[:-1], c)  # AMQ9669 for AMQ9669E

    def _index_name(self, name: str, code: Code) -> None:
        self.by_name.setdefault(name.upper(), []).append(code)


@cache
def _tables() -> _Tables:
    return _Tables()


def all_codes(system: str | None = None) -> list[Code]:
    """Every code of the tables (status-word patterns and GSKit ranges excepted)."""
    return [c for c in _tables().codes if system is None or c.system == system]


def by_name(name: str) -> list[Code]:
    """The codes with this name or alias, any case (a name may exist on two platforms)."""
    return list(_tables().by_name.get(name.strip().upper(), ()))


def by_value(system: str, value: int) -> list[Code]:
    """The codes of one system with this number (status words: exact entries only)."""
    return list(_tables().by_value[system].get(value, ()))


# --- status words -----------------------------------------------------------------------------

def _pattern_code(p: Pattern, sw: int | None) -> Code:
    """A pattern as a code: for one status word (its variable part filled in), or in general."""
    if sw is None:
        width = len(p.name) - len(p.name.rstrip("x")) if "-" not in p.name else 2
        meaning = p.meaning.format(n="x" * width, xx="x" * width)
        return Code("SW", p.name, None, meaning, p.causes, p.checks, p.maps_to, p.note,
                    pattern=p.name)
    n = sw - p.lo
    meaning = p.zero if n == 0 and p.zero else p.meaning.format(n=n, xx=f"{n:02X}")
    return Code("SW", f"{sw:04X}", sw, meaning, p.causes, p.checks, p.maps_to, p.note,
                pattern=p.name)


def _sw_reading(sw: int) -> tuple[Code, bool] | None:
    """The code for a status word and whether it is specific (not just its SW1 group)."""
    if not 0 <= sw <= 0xFFFF:
        return None
    exact = _tables().by_value["SW"].get(sw)
    if exact:
        return exact[0], True
    for patterns, specific in ((SW_PATTERNS, True), (SW_GROUPS, False)):
        for p in patterns:
            if p.lo <= sw <= p.hi:
                return _pattern_code(p, sw), specific
    return None


def explain_sw(sw: int) -> Code | None:
    """The meaning of a status word (SW1 << 8 | SW2), for renderers; None outside 6xxx/9xxx."""
    found = _sw_reading(sw)
    return found[0] if found else None


# --- return values of the other layers ---------------------------------------------------------

def explain_rv(rv: int) -> Code | None:
    """The meaning of a CK_RV, for renderers: vendor codes too; None for an undefined number."""
    found = _tables().by_value["CKR"].get(rv)
    if found:
        return found[0]
    ckr = FAMILIES["CKR"]
    if ckr.vendor_defined is not None and ckr.vendor_defined <= rv < 1 << 64:
        base = _tables().by_value["CKR"][ckr.vendor_defined][0]
        return replace(base, name=ckr.name_of(rv), value=rv, aliases=(), pattern=base.name,
                       meaning="A code of the module's vendor: only its documentation says "
                               "what it means.")
    return None


def explain_opensc(err: int) -> Code | None:
    """An OpenSC error (the sign is ignored, as OpenSC's own sc_strerror does)."""
    found = _tables().by_value["OpenSC"].get(-abs(err))
    return found[0] if found else None


def explain_pcsc(rv: int) -> Code | None:
    """A PC/SC return code, given as unsigned or as a negative 32-bit LONG."""
    found = _tables().by_value["PC/SC"].get(rv % _U32 if -(1 << 31) <= rv < 0 else rv)
    return found[0] if found else None


def pcsc_name(rv: int) -> str | None:
    """A PC/SC return code's name (pcsc-lite's, where Windows differs), or None."""
    code = explain_pcsc(rv)
    return code.name if code else None


def _gskit_readings(value: int) -> list[Code]:
    found = list(_tables().by_value["GSKit"].get(value, ()))
    for base, lo, hi, meaning in GSKIT_RANGES:
        if lo <= value <= hi:
            name = base if value == lo else f"{base}+{value - lo}"
            found.append(Code("GSKit", name, value, meaning, pattern=f"{lo}-{hi}"))
    return found


def explain_gskit(rc: int) -> Code | None:
    """A GSKit return code."""
    found = _gskit_readings(rc)
    return found[0] if found else None


def follow(code: Code) -> list[Code]:
    """The codes this one turns into on its way up to the client (SW -> OpenSC -> CKR)."""
    chain: list[Code] = []
    current = code
    while current.maps_to and len(chain) < 3:
        nxt = by_name(current.maps_to)
        if not nxt:
            break
        current = nxt[0]
        chain.append(current)
    return chain


def mapped_from(code: Code) -> list[Code]:
    """The codes one layer down that turn into this one (OpenSC errors behind a CKR, ...)."""
    if code.system not in ("CKR", "OpenSC"):
        return []
    found = [c for c in _tables().codes if c.maps_to == code.name and c.system != "CKR"]
    if code.system == "OpenSC":
        found += [_pattern_code(p, None) for p in SW_PATTERNS if p.maps_to == code.name]
    return found


# --- reading what the user typed ----------------------------------------------------------------

_PREFIX = re.compile(r"(?i)(ckr|sw|gsk|gskit|mqrc|mq|opensc|sc|pcsc|scard|rc)\s*[:=\s]\s*(.+)")
_MESSAGE = re.compile(r"(?i)(CTGSK|AMQ)(\d{4})([A-Z]?)")
_DEC = re.compile(r"[+-]?\d+")
_HEX0X = re.compile(r"(?i)0x([0-9a-f]+)")
_HEX = re.compile(r"(?i)[0-9a-f]+")
_SW_SPLIT = re.compile(r"(?i)(?:0x)?([0-9a-f]{2})[\s:]+([0-9a-f]{2})")


class _Readings:
    """Collects readings with their rank, dropping repeats of the same code."""

    def __init__(self) -> None:
        self.items: list[Match] = []

    def add(self, rank: int, codes: Iterable[Code], read_as: str) -> None:
        for c in codes:
            key = (c.system, c.name, c.value)
            if all((m.code.system, m.code.name, m.code.value) != key for m in self.items):
                self.items.append(Match(c, read_as, rank))

    def sw(self, value: int, specific_rank: int, group_rank: int, read_as: str) -> None:
        found = _sw_reading(value)
        if found:
            code, specific = found
            self.add(specific_rank if specific else group_rank, [code], read_as)

    def result(self) -> list[Match]:
        return sorted(self.items, key=lambda m: m.rank)


def _ckr(value: int) -> list[Code]:
    return list(_tables().by_value["CKR"].get(value, ()))


def _pcsc(value: int) -> list[Code]:
    return list(_tables().by_value["PC/SC"].get(value, ()))


def _mqrc(value: int) -> list[Code]:
    return list(_tables().by_value["MQRC"].get(value, ()))


def _opensc(value: int) -> list[Code]:
    return list(_tables().by_value["OpenSC"].get(value, ()))


def _vendor_ckr(r: _Readings, value: int, read_as: str) -> None:
    """CKR_VENDOR_DEFINED+n, only when nothing else explains a large number."""
    if not r.items and value >= 0x80000000:
        code = explain_rv(value)
        if code:
            r.add(9, [code], read_as)


def _read_decimal(r: _Readings, s: str) -> None:
    d = int(s)
    digits = s.lstrip("+-")
    if d < 0:
        r.add(0, _opensc(d), "OpenSC error")
        if d >= -(1 << 31):
            r.add(1, _pcsc(d % _U32), "signed 32-bit LONG")
        return
    r.add(0, _ckr(d), "decimal")
    if len(digits) == 4:
        r.sw(int(digits, 16), 1, 4, "status word")
    r.add(2, _gskit_readings(d), "decimal")
    r.add(2, _mqrc(d), "decimal")
    if d == 0 or d >= 0x80000000:
        r.add(3, _pcsc(d), "unsigned decimal")
    if d == 0 or 1100 <= d <= 1901:
        r.add(5, _opensc(-d), "OpenSC error, sign dropped")
    if len(digits) == 8:  # a zero-padded 32-bit value is usually hex
        _read_hex(r, digits, base_rank=6, read_as="hex")
    _vendor_ckr(r, d, "decimal")


def _read_hex(r: _Readings, digits: str, base_rank: int, read_as: str) -> None:
    h = int(digits, 16)
    r.add(base_rank, _ckr(h), read_as)
    if len(digits) == 4:
        r.sw(h, base_rank + 1, base_rank + 4, "status word")
    r.add(base_rank + 1, _pcsc(h), read_as)
    r.add(base_rank + 2, _gskit_readings(h), read_as)
    r.add(base_rank + 3, _mqrc(h), read_as)
    _vendor_ckr(r, h, read_as)


def _read_bare_hex(r: _Readings, digits: str) -> None:
    """Hex digits with letters and no 0x: a status word first when there are four."""
    if len(digits) == 4:
        r.sw(int(digits, 16), 0, 3, "status word")
    _read_hex(r, digits, base_rank=1, read_as="hex")


def _parse_int(text: str) -> int | None:
    t = text.strip()
    if _DEC.fullmatch(t):
        return int(t)
    m = _HEX0X.fullmatch(t)
    return int(m.group(1), 16) if m else None


def _sw_value(text: str) -> int | None:
    t = text.strip()
    m = _SW_SPLIT.fullmatch(t)
    if m:
        return int(m.group(1) + m.group(2), 16)
    m = re.fullmatch(r"(?i)(?:0x)?([0-9a-f]{4})", t)
    return int(m.group(1), 16) if m else None


def _read_prefixed(r: _Readings, prefix: str, rest: str) -> None:
    prefix = prefix.lower()
    if prefix == "rc":
        r.items.extend(lookup(rest))
        return
    if prefix == "sw":
        sw = _sw_value(rest)
        if sw is not None:
            r.sw(sw, 0, 1, "status word")
        else:
            r.add(0, [c for c in by_name(rest) if c.system == "SW"], "name")
        return
    system = {"ckr": "CKR", "gsk": "GSKit", "gskit": "GSKit", "mqrc": "MQRC", "mq": "MQRC",
              "opensc": "OpenSC", "sc": "OpenSC", "pcsc": "PC/SC", "scard": "PC/SC"}[prefix]
    value = _parse_int(rest)
    if value is None:
        r.add(0, [c for c in by_name(rest) if c.system == system], "name")
        return
    if system == "CKR":
        code = explain_rv(value)
        r.add(0, [code] if code else [], "PKCS#11 return value")
    elif system == "GSKit":
        r.add(0, _gskit_readings(value), "GSKit return code")
    elif system == "MQRC":
        r.add(0, _mqrc(value), "MQ reason code")
    elif system == "OpenSC":
        code = explain_opensc(value)
        r.add(0, [code] if code else [], "OpenSC error")
    else:
        r.add(0, _pcsc(value % _U32 if -(1 << 31) <= value < 0 else value), "PC/SC return code")


def lookup(text: str) -> list[Match]:
    """Every reading of a code as a user types it, likeliest first; [] when none fits.

    Accepted: names (any case, aliases, AMQ/CTGSK ids with or without the severity letter),
    decimal and 0x-hex numbers, status words (`63C2`, `63 C2`, `0x63C2`, `sw:63c2`), negative
    OpenSC errors (`-1214`), and a system prefix to say which reading is meant (`gsk:408`,
    `mqrc:2393`, `ckr:0xa0`, `pcsc:...`, `opensc:...`, `rc=...`).
    """
    s = text.strip()
    r = _Readings()
    if not s:
        return []
    names = by_name(s)
    if names:
        r.add(0, names, "name")
        return r.result()
    m = _MESSAGE.fullmatch(s)
    if m:
        r.add(0, by_name(m.group(1) + m.group(2)), "message id")
        return r.result()
    m = _PREFIX.fullmatch(s)
    if m:
        _read_prefixed(r, m.group(1), m.group(2))
        return r.result()
    m = _SW_SPLIT.fullmatch(s)
    if m:
        r.sw(int(m.group(1) + m.group(2), 16), 0, 1, "status word")
        return r.result()
    if _DEC.fullmatch(s):
        _read_decimal(r, s)
    elif (m := _HEX0X.fullmatch(s)) is not None:
        _read_hex(r, m.group(1), base_rank=0, read_as="hex")
    elif _HEX.fullmatch(s):
        _read_bare_hex(r, s)
    return r.result()
