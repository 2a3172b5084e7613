"""Reads p11spy's own binary traces (facts/LOGFORMAT.md) into events.

Streams record by record from a file object, so memory stays flat however large the trace.
A damaged stretch is reported as a warning naming its byte offset, and reading resumes at the
next record marker.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

from p11spy.decoder.events import (
    DROPPED,
    TRUNCATED,
    Apdu,
    Call,
    Event,
    ModuleInfo,
    PcscCall,
    Process,
    TraceWarning,
)
from p11spy.decoder.formats.p11spy import entries, frames
from p11spy.decoder.formats.p11spy.entries import OpenCalls, Waiting
from p11spy.decoder.formats.p11spy.frames import u64
from p11spy.decoder.formats.p11spy.modules import Modules
from p11spy.decoder.values import (
    CK_UNAVAILABLE_INFORMATION,
    attribute_value,
    masked,
    name_in,
    pcsc_rv_name,
    pin_bytes,
    rv_name,
    scalar,
    struct_value,
    utc,
)
from p11spy.facts import pcsc
from p11spy.facts.logformat import (
    DIGEST,
    MAGIC,
    MASKED,
    MECHANISM,
    RECORD,
    Kind,
    Phase,
    RecordType,
    call_key,
)
from p11spy.facts.pkcs11 import functions, structs
from p11spy.facts.pkcs11.model import Function, Param, Role


def sniff(head: bytes) -> bool:
    """Whether the first bytes of a file are a p11spy trace."""
    return head.startswith(MAGIC)


ENDS_INSIDE = "file ends inside"  # how a truncation's message begins


def records(f: BinaryIO) -> Iterator[tuple[int, bytes] | tuple[int, str]]:
    """(offset, record bytes) for each whole record; (offset, message) for damage."""
    stretch, skipped = -1, 0  # where the stretch of unreadable bytes being read began, its size
    short, tail = -1, 0  # where a tail too short for a record header began, its size
    for kind, offset, data in frames.frames(f):
        if kind == frames.MORE:
            skipped += len(data)
            continue
        if stretch >= 0:  # the stretch ended at a record marker
            yield stretch, f"unreadable bytes ({skipped} skipped)"
            stretch = -1
        if kind == frames.RECORD:
            yield offset, data
        elif kind == frames.JUNK:
            stretch, skipped = offset, len(data)
        elif kind == frames.SHORT:
            short, tail = (offset if short < 0 else short), tail + len(data)
        else:
            length = int.from_bytes(data[4:8], "little")
            yield offset, f"{ENDS_INSIDE} a record ({len(data)} of {length} bytes)"
    if stretch >= 0:
        yield stretch, "unreadable bytes up to the end of the file"
    if short >= 0:
        yield short, f"{ENDS_INSIDE} a record header ({tail} bytes)"


# What decoding a damaged record or field raises: the reader turns it into a warning.
DAMAGED = (IndexError, ValueError, KeyError, struct.error)


def _fields(rec: bytes | bytearray) -> Iterator[tuple[int, int, int, int, bytes]]:
    """A record's fields with their payloads as bytes. A payload larger than any the shim
    writes (a damaged length; templates aside) comes as its first bytes and the kind
    OVERSIZED, which decodes as damage, so that no reader copies a damaged record whole."""
    view = memoryview(rec)
    for param, phase, kind, flags, off, n in frames.fields(rec):
        if oversized(kind, n):
            kind, n = OVERSIZED, UNDECODABLE_SHOWN
        yield param, phase, kind, flags, view[off:off + n].tobytes()


_GENERIC = frozenset({Kind.NULL, Kind.MASKED, Kind.DIGEST, Kind.UNREAD, -1})  # _value's own
# kinds (-1: OVERSIZED, below)


def _value(kind: int, data: bytes, render) -> Any:
    """Generic payload kinds; render() handles BYTES/STRUCT/ULONG for the parameter's role."""
    if kind == Kind.NULL:
        return None
    if kind == Kind.MASKED:
        length, cls, extra = MASKED.unpack_from(data)
        return masked(length, cls, extra)
    if kind == Kind.DIGEST:
        length, h = DIGEST.unpack_from(data)
        return {"length": length, "fnv1a64": f"{h:016x}", "prefix": data[16:].hex()}
    if kind == Kind.UNREAD:
        return {"unread": True, "length": u64(data)}
    if kind == OVERSIZED:
        raise ValueError(f"more than {frames.MAX_BUFFER >> 20} MiB: more than the shim "
                         f"records of any buffer")
    if kind not in _KINDS:
        raise ValueError(f"field of unknown kind {kind}")
    return render(kind, data)


_KINDS = frozenset(int(k) for k in Kind)
OVERSIZED = -1  # what _fields calls a payload too large to be one (see there)
FIELD_LIMIT = frames.MAX_BUFFER + (64 << 10)  # a buffer and the bytes around it
UNDECODABLE_SHOWN = 4096  # bytes of an undecodable field shown (as hex): a damaged length
# can make a field of the whole record


def undecodable(data: bytes, exc: Exception) -> dict[str, Any]:
    """What is shown of a field that cannot be decoded: its first bytes, its size, why."""
    shown = data[:UNDECODABLE_SHOWN].hex() + ("..." if len(data) > UNDECODABLE_SHOWN else "")
    return {"undecodable": shown, "error": str(exc)}


def _template(data: bytes) -> list[dict[str, Any]]:
    out = []
    for atype, alen, vkind, start, end in frames.attributes(data):
        payload = data[start:end]
        entry: dict[str, Any] = {"type": name_in("CKA", atype)}
        entry["len"] = "CK_UNAVAILABLE_INFORMATION" if alen == CK_UNAVAILABLE_INFORMATION \
            else alen
        if vkind == Kind.TEMPLATE:
            entry["value"] = _template(payload)
        elif vkind == Kind.BYTES:
            entry["value"] = attribute_value(atype, payload)
        elif vkind in (Kind.MASKED, Kind.DIGEST):
            entry["value"] = _value(vkind, payload, None)
        out.append(entry)
    return out


def _mechanism(data: bytes) -> dict[str, Any]:
    mtype, plen, pkind, n = MECHANISM.unpack_from(data)
    payload = data[MECHANISM.size:MECHANISM.size + n]
    out: dict[str, Any] = {"mechanism": name_in("CKM", mtype)}
    if pkind == Kind.NULL:
        out["parameter"] = None
    elif pkind == Kind.BYTES:
        out["parameter"] = payload.hex()
    elif pkind == Kind.UNREAD:
        out["parameter"] = {"unread": True, "length": plen}
    elif pkind == Kind.STRUCT:
        out["parameter"] = _mech_struct(mtype, plen, payload)
    return out


def _mech_struct(mtype: int, size: int, payload: bytes) -> Any:
    name = structs.struct_for_mechanism(mtype)
    if name is None:
        return payload[:size].hex()
    rendered = struct_value(name, payload[:size])
    if not isinstance(rendered, dict):
        return rendered
    for f, kind, start, end in frames.struct_blobs(name, payload, size):
        rendered[f.name] = _value(kind, payload[start:end], lambda _k, d: d.hex())
    return rendered


def _interfaces(data: bytes) -> list[dict[str, Any]]:
    out = []
    off = 0
    while off + 11 <= len(data):
        flags = u64(data, off)
        major, minor, nl = data[off + 8], data[off + 9], data[off + 10]
        name = data[off + 11:off + 11 + nl].decode("utf-8", "replace")
        off += 11 + nl
        out.append({"name": name, "version": f"{major}.{minor}",
                    "flags": name_in("CKF_INTERFACE", flags)})
    return out


# BYTES payloads of these roles are more than hex (the compiled decoder asks for them).
BYTES_ROLES = {
    Role.TEXT_FIXED: lambda data: data.decode("utf-8", "replace").rstrip(" \x00"),
    Role.INTERFACE_LIST_OUT: _interfaces,
    Role.INTERFACE_OUT: lambda data: (_interfaces(data) or [None])[0],
    Role.PIN: pin_bytes,
}
# Arrays of these kinds are numbers; of others, named in the family p.kind.
PLAIN_ARRAYS = ("slot", "object", None)


def _render_param(p: Param, kind: int, data: bytes) -> Any:
    if kind == Kind.ULONG:
        return scalar(p, u64(data))
    if kind == Kind.BYTES:
        render = BYTES_ROLES.get(p.role)
        return data.hex() if render is None else render(data)
    if kind == Kind.CSTRING:
        return data.decode("utf-8", "replace")
    if kind == Kind.TEMPLATE:
        return _template(data)
    if kind == Kind.MECHANISM:
        return _mechanism(data)
    if kind == Kind.STRUCT:
        if p.role is Role.FUNCTION_LIST_OUT:
            return {"version": f"{data[0]}.{data[1]}"} if len(data) >= 2 else data.hex()
        name = p.struct or ("CK_C_INITIALIZE_ARGS" if p.role is Role.INIT_ARGS else "")
        return struct_value(name, data)
    if kind == Kind.ULONG_ARRAY:
        items = [u64(data, i) for i in range(0, len(data) - 7, 8)]
        if p.kind in PLAIN_ARRAYS:
            return items
        return [name_in(p.kind, v) for v in items]
    return data.hex()


# Roles whose input and output both matter: recorded as {"in": ..., "out": ...}.
INOUT_ROLES = frozenset({Role.LENGTH_PTR, Role.TEMPLATE_INOUT, Role.BYTES_INOUT})
# Output roles whose NULL input pointer means the call only asked for a length.
TWO_CALL_ROLES = frozenset({Role.BYTES_OUT, Role.ARRAY_OUT, Role.INTERFACE_LIST_OUT})


def oversized(kind: int, declared: int) -> bool:
    """A payload larger than any the shim writes (templates aside): damage, shown by its first
    bytes and never copied whole."""
    return declared > FIELD_LIMIT and kind != Kind.TEMPLATE


def shown(kind: int, declared: int) -> int:
    """How much of a field's payload decoding it reads."""
    return UNDECODABLE_SHOWN if oversized(kind, declared) else declared


def call_field_value(p: Param, kind: int, declared: int, data: bytes) -> Any:
    """One field of a call record, data being its payload (up to shown(kind, declared) bytes,
    fewer where the record ends first). A damaged field stays hex."""
    if oversized(kind, declared):
        kind, data = OVERSIZED, data[:UNDECODABLE_SHOWN]
    try:
        if kind == Kind.ULONG:
            return scalar(p, int.from_bytes(data[:8], "little"))
        if kind in _GENERIC:
            return _value(kind, data, None)
        return _render_param(p, kind, data)
    except DAMAGED as exc:
        return undecodable(data, exc)


_RV_NAMES: dict[int, str | None] = {}  # rv_name() of the return values seen


def decode_call(rec: bytes, seq: int, offset: int) -> Call:
    _, _, _, _mod, fidx, pid, tid, start_us, dur_ns, rv, number = RECORD.unpack_from(rec)
    fn: Function | None = functions.FUNCTIONS[fidx] if fidx < len(functions.FUNCTIONS) else None
    name = _RV_NAMES.get(rv)
    if name is None:
        name = _RV_NAMES[rv] = rv_name(rv)
        if len(_RV_NAMES) > 4096:  # damaged records: any number
            _RV_NAMES.clear()
    call = Call(
        seq=seq, function=fn.name if fn else f"function #{fidx}", rv=rv, rv_name=name,
        pid=pid, tid=tid, time=utc(start_us), duration_us=dur_ns / 1000.0,
        call_number=number, source=f"offset {offset}",
    )
    if rec[8] == RecordType.ENTRY:  # an entry no return closed: no result, no duration
        call.rv = call.rv_name = call.duration_us = None
        call.never_returned = True
    if fn is None:
        return call
    args: dict[str, Any] = {}
    params = fn.params
    for param, phase, kind, _flags, off, n in frames.fields(rec):
        if param >= len(params):
            continue
        p = params[param]
        if kind == Kind.ULONG and n == 8:  # most fields: handles, lengths, flags
            v = scalar(p, int.from_bytes(rec[off:off + 8], "little"))
        else:
            v = call_field_value(p, kind, n, rec[off:off + shown(kind, n)])
        role = p.role
        if role in INOUT_ROLES:
            slot = args.setdefault(p.name, {})
            slot["in" if phase == Phase.IN else "out"] = v
        else:
            args[p.name] = v
        if role in TWO_CALL_ROLES and phase == Phase.IN and kind == Kind.NULL:
            call.length_query = True
    call.args = {p.name: args[p.name] for p in params if p.name in args}
    return call


MASK_FILL = b"*"  # stands for each byte of masked APDU data


def _masked_apdu(data: bytes) -> tuple[bytes, dict[str, Any]]:
    """An APDU recorded with its data masked: header, data as '*' bytes, trailer."""
    hl = data[0]
    header = data[1:1 + hl]
    length, cls, extra = MASKED.unpack_from(data, 1 + hl)
    if length > 65536:  # no APDU carries more: the record is damaged
        raise ValueError(f"masked APDU data of {length} bytes")
    off = 1 + hl + MASKED.size
    tl = data[off]
    trailer = data[off + 1:off + 1 + tl]
    return header + MASK_FILL * length + trailer, masked(length, cls, extra)


def pcsc_reader_states(data: bytes) -> list[dict[str, Any]]:
    out = []
    for start, atr, name, end in frames.reader_states(data):
        cur, ev = u64(data, start), u64(data, start + 8)
        out.append({"reader": data[name:end].decode("utf-8", "replace"),
                    "current_state": f"0x{cur:x}", "event_state": f"0x{ev:x}",
                    "atr": data[atr:name - 1].hex()})
    return out


def pcsc_reader_names(data: bytes) -> list[str]:
    return [r for r in data.decode("utf-8", "replace").split("\0") if r]


# PC/SC parameters whose BYTES payload has a structure of its own.
PCSC_BYTES = {"rgReaderStates": pcsc_reader_states, "mszReaders": pcsc_reader_names,
              "szReaderName": pcsc_reader_names}


def pcsc_field_value(p: Param, kind: int, data: bytes) -> Any:
    """One field of a PC/SC record; raises DAMAGED where the field is (the record is then)."""
    if kind == Kind.BYTES and p.name in PCSC_BYTES:
        return PCSC_BYTES[p.name](data)
    if kind in _GENERIC:
        return _value(kind, data, None)
    return _render_param(p, kind, data)


def decode_pcsc(rec: bytes, seq: int, offset: int) -> tuple[int, Event]:
    """A PC/SC record as an Apdu (SCardTransmit) or a PcscCall, with its parent's call number."""
    _, _, _, _mod, fidx, pid, tid, start_us, dur_ns, rv, _number = RECORD.unpack_from(rec)
    fn = pcsc.FUNCTIONS[fidx] if fidx < len(pcsc.FUNCTIONS) else None
    parent = 0
    values: dict[tuple[int, int], tuple[int, bytes]] = {}
    for param, phase, kind, _flags, off, n in frames.fields(rec):
        if param == pcsc.PARENT_PARAM:
            parent = u64(rec, off) if n >= 8 else u64(rec[off:off + n])
        else:
            values[(param, phase)] = (kind, rec[off:off + n])
    common = {"seq": seq, "pid": pid, "tid": tid, "time": utc(start_us),
              "duration_us": dur_ns / 1000.0}
    if fn is not None and fn.name == "SCardTransmit":
        kind, data = values.get((2, Phase.IN), (Kind.NULL, b""))
        is_masked = kind == Kind.APDU_MASKED
        command = _masked_apdu(data)[0] if is_masked else (data if kind == Kind.BYTES else b"")
        rkind, rdata = values.get((5, Phase.OUT), (Kind.NULL, b""))
        response = rdata if rkind == Kind.BYTES else None
        return parent, Apdu(command=command, response=response, masked=is_masked,
                            error=None if rv == 0 else pcsc_rv_name(rv),
                            source=f"offset {offset}", **common)
    args: dict[str, Any] = {}
    if fn is not None:
        for (param, phase), (kind, data) in sorted(values.items()):
            if param >= len(fn.params):
                continue
            p = fn.params[param]
            v = pcsc_field_value(p, kind, data)
            if p.role in INOUT_ROLES:
                args.setdefault(p.name, {})["in" if phase == Phase.IN else "out"] = v
            else:
                args[p.name] = v
    name = fn.name if fn else f"PC/SC function #{fidx}"
    return parent, PcscCall(function=name, rv=rv, rv_name=pcsc_rv_name(rv), args=args,
                            **common)


def never_returned(pid: int, number: int) -> str:
    """What is said where PC/SC calls waited for a call whose record the trace does not hold."""
    return f"process {pid}: call #{number} never returned (the client stopped inside it)"


def gave_up_waiting(pid: int, number: int) -> str:
    """What is said where the PC/SC calls waiting for a call are shown without it (Waiting)."""
    return f"process {pid}: call #{number} made more PC/SC calls than a reader keeps waiting " \
           f"for it ({entries.MAX_WAITING >> 20} MiB): they are shown here, without it"


def read(f: BinaryIO) -> Iterator[Event]:
    """Events in file order, except that the PC/SC records a call made (written before the
    call's own record, which is written when it returns) follow their call. A call's ENTRY
    record shows only if no return closes it: then, at the end, as a call that never
    returned."""
    seq = 0
    pending: Waiting[tuple[int, int], Event] = Waiting()  # (pid, call number) -> children
    modules = Modules()  # (pid, module index) -> path
    entered: OpenCalls[tuple[int, bytes]] = OpenCalls()  # (offset, ENTRY record), not returned

    def call_events(offset: int, rec: bytes, lost: bool = False) -> Iterator[Event]:
        """A call record, or an entry no return closed (lost: its return may be among records
        that went missing, so it is not said never to have returned), then the PC/SC calls
        made under it."""
        nonlocal seq
        try:
            call = decode_call(rec, seq, offset)
        except DAMAGED as exc:
            what = "entry" if rec[8] == RecordType.ENTRY else "call"
            yield TraceWarning(seq=seq, message=f"byte {offset}: damaged {what} record ({exc})")
            seq += 1
            return
        call.never_returned = call.never_returned and not lost
        call.module = modules.get(call.pid or 0, rec[9])
        seq += 1
        yield call
        if pending.items:
            yield from adopt(pending.take((call.pid or 0, call.call_number or 0)), call.seq)

    def adopt(children: list[Event], parent_seq: int | None) -> Iterator[Event]:
        nonlocal seq
        for child in children:
            child.seq = seq
            child.parent = parent_seq  # type: ignore[attr-defined]
            seq += 1
            yield child

    for offset, rec in records(f):
        if isinstance(rec, str):
            yield TraceWarning(seq=seq, message=f"byte {offset}: {rec}",
                               kind=TRUNCATED if rec.startswith(ENDS_INSIDE) else None)
            seq += 1
            continue
        rtype = rec[8]
        pid = int.from_bytes(rec[12:16], "little")
        if rtype == RecordType.PCSC:
            try:
                parent, event = decode_pcsc(rec, -1, offset)
            except DAMAGED as exc:
                yield TraceWarning(seq=seq, message=f"byte {offset}: damaged PC/SC record ({exc})")
                seq += 1
                continue
            if not parent:
                yield from adopt([event], None)
                continue
            for (gpid, number), children in pending.add((pid, parent), event, len(rec)):
                yield TraceWarning(seq=seq, message=gave_up_waiting(gpid, number))
                seq += 1
                yield from adopt(children, None)
            continue
        if rtype == RecordType.ENTRY:  # held until its return closes it
            for (at, entry), lost in entered.enter(call_key(rec), (offset, rec), len(rec)):
                yield from call_events(at, entry, lost)
            continue
        if rtype == RecordType.PASSED_ON:  # the module it was passed to recorded the call
            entered.leave(call_key(rec))
            continue
        if rtype == RecordType.CALL:
            if entered.items:
                entered.leave(call_key(rec))
            yield from call_events(offset, rec)
            continue
        if rtype == RecordType.DROPPED:
            entered.records_lost(rec[12:16])
        event, module = other_record(rec, seq, offset)
        if module is not None:
            modules.named(pid, *module)
        yield event
        seq += 1
    for (at, entry), lost in entered.drain():
        yield from call_events(at, entry, lost)
    for (pid, number), children in pending.drain():
        yield TraceWarning(seq=seq, message=never_returned(pid, number))
        seq += 1
        yield from adopt(children, None)


def other_record(rec: bytes, seq: int,
                 offset: int) -> tuple[Event, tuple[int, str | None] | None]:
    """The event of a record that is no call and no PC/SC call, and for a module record the
    (index, path) its calls name it by."""
    rtype, pid = rec[8], int.from_bytes(rec[12:16], "little")
    if rtype == RecordType.PROCESS:
        try:
            info = json.loads(rec[RECORD.size:].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            info = {"unreadable_header": True}
        if not isinstance(info, dict):
            info = {"unreadable_header": True}
        return Process(seq=seq, pid=pid, info=info), None
    if rtype == RecordType.MODULE:
        try:
            info = json.loads(rec[RECORD.size:].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            info = {}
        module = (info["index"], info.get("path")) if isinstance(info.get("index"), int) \
            else None
        return ModuleInfo(seq=seq, pid=pid, info={"loaded": info.get("path"),
                                                  "index": info.get("index")}), module
    if rtype == RecordType.MODULE_INFO:
        info = {}
        for _p, _ph, kind, _fl, data in _fields(rec):
            if kind == Kind.STRUCT:
                info = struct_value("CK_INFO", data)
        return ModuleInfo(seq=seq, pid=pid, info=info if isinstance(info, dict) else {}), None
    if rtype == RecordType.DROPPED:
        return TraceWarning(seq=seq, message=dropped_message(pid, rec), kind=DROPPED), None
    return TraceWarning(seq=seq, message=f"byte {offset}: record of unknown type {rtype}"), None


def dropped_message(pid: int, rec: bytes) -> str:
    """What a DROPPED record says, for decode and the viewer alike."""
    lost = next((u64(d) for _p, _ph, kind, _fl, d in _fields(rec)
                 if kind == Kind.ULONG and len(d) == 8), 0)
    return f"process {pid}: {lost} record(s) missing here: the shim could not write them " \
           "(disk full?)"
