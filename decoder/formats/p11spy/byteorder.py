"""Big-endian traces (written on s390x): each record turned into its little-endian twin.

The shim writes numbers in its machine's byte order, and says which in the process record
(facts/logformat.py BYTE_ORDER_MARK). Rather than teach every reader of records (the reader,
the masker, the viewer's index) two orders, a big-endian record is rewritten once, swapping
every number where facts/LOGFORMAT.md puts one and nothing else: then it is exactly the record
a little-endian machine would have written for the same call.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import cache

from p11spy.facts import logformat as lf
from p11spy.facts import pcsc
from p11spy.facts.pkcs11 import attributes, functions, structs
from p11spy.facts.pkcs11.model import Param, Role, ValueType

# Offset and size of each number in the record header (the magic and two bytes are not).
_HEADER = ((4, 4), (10, 2), (12, 4), (16, 8), (24, 8), (32, 8), (40, 8), (48, 8))
_ULONG_VALUES = (ValueType.ULONG, ValueType.ENUM, ValueType.FLAGS)
_ULONG_ARRAYS = (ValueType.MECHANISMS, ValueType.ULONGS)


def is_big_endian(head: bytes) -> bool:
    """Whether a record header is a process record that marks what follows as big-endian."""
    at = lf.BOM_OFFSET
    return len(head) >= at + 8 and head[8] == lf.RecordType.PROCESS and \
        head[at:at + 8] == lf.BIG_ENDIAN_MARK


def order_from(head: bytes, big: bool) -> bool:
    """The byte order from this record on: each process record names its writer's."""
    return is_big_endian(head) if head[8:9] == bytes([lf.RecordType.PROCESS]) else big


def record_length(head: bytes, big: bool) -> int:
    return int.from_bytes(head[4:8], "big" if big else "little")


def _swap(b: bytearray, off: int, n: int, end: int | None = None) -> None:
    """Reverses the n bytes at off, if they lie before end (a field's end: payloads can be
    shorter than their kind says, as an unread template value, which has none)."""
    if off + n <= (len(b) if end is None else end):
        b[off:off + n] = b[off:off + n][::-1]


def _u64(b: bytearray, off: int) -> int:
    return int.from_bytes(b[off:off + 8], "little")


def _u32(b: bytearray, off: int) -> int:
    return int.from_bytes(b[off:off + 4], "little")


@cache
def _number_spots(ctype: str) -> tuple[tuple[int, int], ...]:
    """(offset, size) of every number in a struct laid out as the decoder reads it."""
    ffi = structs.ffi_for_layout()
    out: list[tuple[int, int]] = []

    def walk(t, base: int) -> None:
        if t.kind == "struct":
            for _name, f in t.fields:
                walk(f.type, base + f.offset)
        elif t.kind == "array":
            step = ffi.sizeof(t.item)
            for i in range(t.length):
                walk(t.item, base + i * step)
        elif t.kind in ("primitive", "pointer", "function", "enum"):
            size = ffi.sizeof(t) if t.kind != "function" else ffi.sizeof("void *")
            if size > 1:
                out.append((base, size))

    walk(ffi.typeof(ctype), 0)
    return tuple(out)


def _struct(b: bytearray, off: int, end: int, name: str) -> None:
    for at, size in _number_spots(name):
        if off + at + size <= end:
            _swap(b, off + at, size)


def _generic(b: bytearray, off: int, end: int, kind: int) -> bool:
    """The kinds whose payload is the same whatever the parameter; False for the others."""
    if kind in (lf.Kind.ULONG, lf.Kind.UNREAD, lf.Kind.MASKED):
        _swap(b, off, 8, end)
    elif kind == lf.Kind.DIGEST:
        _swap(b, off, 8, end)
        _swap(b, off + 8, 8, end)
    elif kind == lf.Kind.ULONG_ARRAY:
        for at in range(off, end - 7, 8):
            _swap(b, at, 8, end)
    elif kind == lf.Kind.TEMPLATE:
        _template(b, off, end)
    elif kind == lf.Kind.MECHANISM:
        _mechanism(b, off, end)
    elif kind == lf.Kind.APDU_MASKED:
        if off < end:
            _swap(b, off + 1 + b[off], 8, end)
    else:
        return kind in (lf.Kind.NULL, lf.Kind.CSTRING)
    return True


def _template(b: bytearray, off: int, end: int) -> None:
    _swap(b, off, 8)
    count = _u64(b, off)
    at = off + 8
    for _ in range(count):
        if at + lf.ATTRIBUTE.size > end:
            return
        for k, n in ((0, 8), (8, 8), (20, 4)):
            _swap(b, at + k, n)
        atype, _alen, vkind, n = lf.ATTRIBUTE.unpack_from(b, at)
        at += lf.ATTRIBUTE.size
        if vkind == lf.Kind.BYTES:
            vtype = attributes.attribute(atype).type
            if vtype in _ULONG_VALUES and n == 8:
                _swap(b, at, 8, end)
            elif vtype in _ULONG_ARRAYS and n % 8 == 0:
                for k in range(at, at + n, 8):
                    _swap(b, k, 8, end)
        else:
            _generic(b, at, at + n, vkind)
        at += n


def _mechanism(b: bytearray, off: int, end: int) -> None:
    for k, n in ((0, 8), (8, 8), (20, 4)):
        _swap(b, off + k, n)
    mtype, size, pkind, n = lf.MECHANISM.unpack_from(b, off)
    at = off + lf.MECHANISM.size
    if pkind != lf.Kind.STRUCT:
        _generic(b, at, at + n, pkind)
        return
    name = structs.struct_for_mechanism(mtype)
    if name is None:
        return
    _struct(b, at, at + size, name)
    at, stop = at + size, min(end, at + n)
    while at + lf.BLOB.size <= stop:  # the followed pointer fields
        _swap(b, at + 4, 4)
        kind, blen = lf.BLOB.unpack_from(b, at)
        at += lf.BLOB.size
        _generic(b, at, at + blen, kind)
        at += blen


def _interfaces(b: bytearray, off: int, end: int) -> None:
    while off + 11 <= end:  # u64 flags, major, minor, name length, name
        _swap(b, off, 8)
        off += 11 + b[off + 10]


def _reader_states(b: bytearray, off: int, end: int) -> None:
    while off + 17 <= end:  # u64 current, u64 event, ATR length, ATR, name length, name
        _swap(b, off, 8)
        _swap(b, off + 8, 8)
        off += 17 + b[off + 16]
        off += 1 + (b[off] if off < end else 0)


def _call_payload(p: Param, b: bytearray, off: int, end: int, kind: int) -> None:
    if _generic(b, off, end, kind):
        return
    if kind == lf.Kind.STRUCT and p.role is not Role.FUNCTION_LIST_OUT:
        name = p.struct or ("CK_C_INITIALIZE_ARGS" if p.role is Role.INIT_ARGS else None)
        if name:
            _struct(b, off, end, name)
    elif kind == lf.Kind.BYTES and p.role in (Role.INTERFACE_LIST_OUT, Role.INTERFACE_OUT):
        _interfaces(b, off, end)


def _pcsc_payload(p: Param, b: bytearray, off: int, end: int, kind: int) -> None:
    if not _generic(b, off, end, kind) and kind == lf.Kind.BYTES and p.name == "rgReaderStates":
        _reader_states(b, off, end)


def _fields(b: bytearray, params: list[Param] | None,
            payload: Callable[[Param, bytearray, int, int, int], None]) -> None:
    off = lf.RECORD.size
    while off + lf.FIELD.size <= len(b):
        _swap(b, off + 4, 4)
        param, _phase, kind, _flags, n = lf.FIELD.unpack_from(b, off)
        off += lf.FIELD.size
        end = min(len(b), off + n)
        if params is not None and param < len(params):
            payload(params[param], b, off, end, kind)
        else:
            _generic(b, off, end, kind)  # the PC/SC parent's call number, or an unknown one
        off += n


def to_little(rec: bytes) -> bytes:
    """The little-endian twin of a big-endian record (damage is left for the reader to find:
    a record whose fields do not add up is swapped as far as they do)."""
    b = bytearray(rec)
    try:
        _to_little(b)
    except (IndexError, ValueError, KeyError, struct.error):
        pass
    return bytes(b)


def _to_little(b: bytearray) -> None:
    for off, n in _HEADER:
        _swap(b, off, n)
    rtype, fidx = b[8], int.from_bytes(b[10:12], "little")
    if rtype == lf.RecordType.PROCESS:
        b[lf.BOM_OFFSET:lf.BOM_OFFSET + 8] = lf.ULONG.pack(lf.BYTE_ORDER_MARK)
    elif rtype in (lf.RecordType.CALL, lf.RecordType.ENTRY):
        fns = functions.FUNCTIONS
        _fields(b, list(fns[fidx].params) if fidx < len(fns) else None, _call_payload)
    elif rtype == lf.RecordType.PCSC:
        fns = pcsc.FUNCTIONS
        _fields(b, list(fns[fidx].params) if fidx < len(fns) else None, _pcsc_payload)
    elif rtype == lf.RecordType.MODULE_INFO:
        off = lf.RECORD.size
        if off + lf.FIELD.size <= len(b):
            _swap(b, off + 4, 4)
            _struct(b, off + lf.FIELD.size, len(b), "CK_INFO")
    elif rtype != lf.RecordType.MODULE:  # JSON; a record of a later type holds plain fields
        _fields(b, None, _call_payload)
