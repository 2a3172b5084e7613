"""Turns captured PKCS#11 values into JSON-friendly Python values, driven by the fact tables.

Shared by every reader: a template, a mechanism or a CK_TOKEN_INFO renders the same whichever
tracer captured it.
"""

from __future__ import annotations

import datetime as _dt
from functools import cache, lru_cache
from typing import Any

from p11spy.decoder.events import Undated
from p11spy.decoder.masking import MARK
from p11spy.facts import pcsc
from p11spy.facts.logformat import PinClass, PinExtra
from p11spy.facts.pkcs11 import attributes, constants, structs
from p11spy.facts.pkcs11.model import Param, Role, ValueType

CK_UNAVAILABLE_INFORMATION = (1 << 64) - 1
PIN_CLASS_NAMES = {
    PinClass.EMPTY: "empty",
    PinClass.ASCII_DIGITS: "ASCII digits",
    PinClass.ASCII_OTHER: "ASCII text",
    PinClass.EBCDIC_DIGITS: "EBCDIC digits",
    PinClass.OTHER: "binary",
}
PIN_EXTRA_NAMES = {
    PinExtra.TRAILING_NEWLINE: "trailing newline",
    PinExtra.HAS_NUL: "NUL byte",
    PinExtra.UTF16: "UTF-16",
    PinExtra.NON_ASCII: "non-ASCII bytes",
}


def name_in(family: str | None, value: int) -> str:
    """A constant's name in a family; the hex number when the family is unknown."""
    fam = constants.FAMILIES.get(family or "") or pcsc.FAMILIES.get(family or "")
    return fam.render(value) if fam else f"0x{value:x}"


def pcsc_rv_name(rv: int) -> str:
    """A PC/SC return code's name (SCARD_...), or its hex value."""
    from p11spy.decoder.codes import pcsc_name  # late: the tables load only when needed

    return pcsc_name(rv) or f"0x{rv:08X}"


def rv_name(rv: int | None) -> str | None:
    return None if rv is None else constants.FAMILIES["CKR"].name_of(rv)


def pin_bytes(data: bytes) -> Any:
    """A PIN a trace holds in clear, as hex; one that `p11spy redact` overwrote with its mark
    (every byte '*') as masked, as a PIN masked at capture is shown: a row of 2a is no PIN."""
    if data and data.count(MARK) == len(data):
        return {"masked": True, "length": len(data), "redacted": True}
    return data.hex()


def masked(length: int, cls: int, extra: int) -> dict[str, Any]:
    out: dict[str, Any] = {"masked": True, "length": length}
    try:
        out["class"] = PIN_CLASS_NAMES[PinClass(cls)]
    except ValueError:
        out["class"] = f"class {cls}"
    extras = [name for bit, name in PIN_EXTRA_NAMES.items() if extra & bit]
    if extras:
        out["extras"] = extras
    return out


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").rstrip(" \x00")


# How a number-like parameter or attribute value renders: its form (and the family naming it).
NUMBER, NAMED, BOOL, POINTER, UNAVAILABLE = "number", "named", "bool", "pointer", "unavailable"
STRING, DATE, MECHANISMS, NUMBERS, HEX = "string", "date", "mechanisms", "numbers", "hex"


@cache
def scalar_form(p: Param) -> tuple[str, str | None]:
    """How scalar() renders p: a table the compiled decoder reads too (fastjson.py)."""
    role = p.role
    if role in (Role.ENUM, Role.FLAGS) or (role is Role.ULONG_OUT and
                                           p.kind in constants.FAMILIES):
        return NAMED, p.kind
    if role is Role.BOOL:
        return BOOL, None
    if role is Role.POINTER:
        return POINTER, None
    if role in (Role.ULONG, Role.LENGTH, Role.ULONG_OUT):
        return UNAVAILABLE, None  # a number, or CK_UNAVAILABLE_INFORMATION by name
    return NUMBER, None


def scalar(p: Param, value: int) -> Any:
    """A number-like parameter or field."""
    form, family = scalar_form(p)
    if form is NUMBER:
        return value
    if form is NAMED:
        return name_in(family, value)
    if form is BOOL:
        return bool(value)
    if form is POINTER:
        return f"0x{value:x}"
    return "CK_UNAVAILABLE_INFORMATION" if value == CK_UNAVAILABLE_INFORMATION else value


_VALUE_FORMS = {ValueType.BOOL: BOOL, ValueType.ULONG: NUMBER, ValueType.ENUM: NAMED,
                ValueType.FLAGS: NAMED, ValueType.STRING: STRING, ValueType.DATE: DATE,
                ValueType.MECHANISMS: MECHANISMS, ValueType.ULONGS: NUMBERS}


@lru_cache(maxsize=4096)  # attribute numbers come from the trace: any number
def attribute_form(atype: int) -> tuple[str, str | None]:
    """How attribute_value() renders a value of this attribute type (and its family)."""
    a = attributes.attribute(atype)
    return _VALUE_FORMS.get(a.type, HEX), a.family


def attribute_value(atype: int, data: bytes) -> Any:
    """An attribute's value bytes as its type says (bytes that do not fit stay hex)."""
    form, family = attribute_form(atype)
    try:
        if form is BOOL and len(data) == 1:
            return bool(data[0])
        if form in (NUMBER, NAMED) and len(data) == 8:
            v = int.from_bytes(data, "little")
            return v if form is NUMBER else name_in(family, v)
        if form is STRING:
            return data.decode("utf-8")
        if form is DATE and len(data) == 8 and data.isdigit():
            s = data.decode()
            return f"{s[:4]}-{s[4:6]}-{s[6:]}"
        if form in (MECHANISMS, NUMBERS) and len(data) % 8 == 0:
            vals = [int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data), 8)]
            return [name_in("CKM", v) for v in vals] if form is MECHANISMS else vals
    except (UnicodeDecodeError, ValueError):
        pass
    return data.hex()


@cache
def _ffi():
    return structs.ffi_for_layout()


def struct_value(name: str, data: bytes) -> Any:
    """A struct captured as raw bytes, field by field as the struct table describes."""
    desc = structs.STRUCTS.get(name)
    ffi = _ffi()
    try:
        size = ffi.sizeof(name)
    except Exception:  # noqa: BLE001 - an unknown struct name stays hex
        return data.hex()
    if desc is None or len(data) != size:
        return data.hex()
    cdata = ffi.from_buffer(f"{name} *", data)
    out: dict[str, Any] = {}
    for f in desc.fields:
        raw = getattr(cdata, f.name)
        if f.role is Role.TEXT_FIXED:
            out[f.name] = _text(bytes(ffi.buffer(raw)))
        elif f.role is Role.STRUCT_IN and f.struct == "CK_VERSION":
            out[f.name] = f"{raw.major}.{raw.minor}"
        elif f.role is Role.BYTES_IN and f.size:
            out[f.name] = bytes(ffi.buffer(raw)).hex()
        elif f.role in (Role.POINTER, Role.BYTES_IN, Role.PIN, Role.CSTRING):
            out[f.name] = f"0x{int(ffi.cast('uintptr_t', raw)):x}"
        elif f.role is Role.STRUCT_IN:
            out[f.name] = "..."
        else:
            out[f.name] = scalar(f, int(raw))
    return out


def utc(us: int) -> float:
    return us / 1e6


def format_time(epoch: float | None) -> str:
    """The date and time; the time alone where the trace wrote no date (Undated)."""
    if epoch is None:
        return "-"
    try:
        when = _dt.datetime.fromtimestamp(epoch)
        # isoformat writes what strftime("%Y-%m-%d %H:%M:%S.%f") does, three times faster (a
        # text decode writes a time per call), but pads a year before 1000
        stamp = when.isoformat(" ", "microseconds") if when.year >= 1000 else \
            when.strftime("%Y-%m-%d %H:%M:%S.%f")
        if isinstance(epoch, Undated):
            return stamp[-15:] + " (no date in the trace)"
        return stamp
    except (ValueError, OverflowError, OSError):  # a damaged record's time
        return f"{epoch:.6f} s (not a date)"
