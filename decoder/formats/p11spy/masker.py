"""Redacts p11spy's own binary traces (facts/LOGFORMAT.md), record by record, in constant memory.

Why in place: a record keeps its length and its fields their kinds, so the redacted trace
decodes to the same calls with the same arguments, a secret's bytes reading as `*` (0x2A).
Only --hide-lengths changes lengths (a record's length would otherwise tell the PIN's), and
then the record is rewritten whole. Which bytes are secret comes from the PKCS#11 table
(Role.PIN parameters, secret attributes, PIN fields of mechanism structs) and from
apdu_pin.pin_field for the APDUs of the preloaded spy's PC/SC records. Unreadable stretches
between records are masked whole: nobody can tell what they hold.

The process header of a redacted trace says "secrets": false and "redacted": true (see
facts/LOGFORMAT.md), rewritten compactly and padded with blanks to its old length.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import BinaryIO

from p11spy.decoder.apdu import pin_field
from p11spy.decoder.formats.p11spy import frames
from p11spy.decoder.formats.p11spy.frames import u64
from p11spy.decoder.masking import (
    HIDDEN_PIN_LENGTH,
    MARK,
    Finding,
    Options,
    Report,
    attribute_is_secret,
    is_key_class,
)
from p11spy.facts import pcsc
from p11spy.facts.logformat import (
    DIGEST,
    FIELD,
    MAGIC,
    MASKED,
    MECHANISM,
    RECORD,
    ULONG,
    FieldFlag,
    Kind,
    Phase,
    RecordType,
)
from p11spy.facts.pkcs11 import functions, structs
from p11spy.facts.pkcs11.constants import CKA, CKO
from p11spy.facts.pkcs11.model import Function, Role

_CLASS = CKA.value_of("CKA_CLASS")
_SENSITIVE = CKA.value_of("CKA_SENSITIVE")
_PUBLIC = CKO.value_of("CKO_PUBLIC_KEY")
_PRIVATE = CKO.value_of("CKO_PRIVATE_KEY")
# Records that hold no secret by construction, and the one field each holds: CK_INFO, the
# count of records lost, nothing (the header of a call passed on to another module). Any other
# field is not theirs (a damaged type byte made one of a call record): it is masked.
_PLAIN = {RecordType.MODULE_INFO: Kind.STRUCT, RecordType.DROPPED: Kind.ULONG,
          RecordType.PASSED_ON: None}
# Records made of fields, whose function index names their function (an entry: the in-fields).
_FIELDED = frozenset({RecordType.CALL, RecordType.ENTRY, RecordType.PCSC})
# Payload kinds that show no value (a length, a NULL, a masked secret's length and class).
_NO_PAYLOAD = frozenset({Kind.NULL, Kind.UNREAD, Kind.MASKED, Kind.APDU_MASKED})
# What a PIN parameter's field may be and keep: a NULL, an unread length, the masked form, a
# number (its length parameter shares the field's kind in some old traces).
_PIN_KEPT = frozenset({Kind.NULL, Kind.UNREAD, Kind.MASKED, Kind.ULONG, Kind.BYTES,
                       Kind.DIGEST})
_KINDS = frozenset(int(k) for k in Kind)
# The payload sizes of the kinds that have one.
_SIZES = {Kind.ULONG: ULONG.size, Kind.NULL: 0, Kind.UNREAD: ULONG.size,
          Kind.MASKED: MASKED.size}
# Fields of PC/SC records beyond the function's parameters: the PKCS#11 call that made it.
_PCSC_EXTRA = frozenset({pcsc.PARENT_PARAM})
_TRANSMIT = pcsc.BY_NAME["SCardTransmit"].index
_CONTROL = pcsc.BY_NAME["SCardControl"].index
# PC/SC parameters holding reader names (masked with --strict): function -> parameter indexes.
_READER_PARAMS = {pcsc.BY_NAME[n].index: {p for p, q in enumerate(pcsc.BY_NAME[n].params)
                                          if q.name in ("szReader", "mszReaders", "szReaderName",
                                                        "rgReaderStates")}
                  for n in ("SCardConnect", "SCardListReaders", "SCardStatus",
                            "SCardGetStatusChange")}
# Text fields of info structs that identify a device (--strict): struct -> field names.
_IDENTIFYING_TEXT = {"CK_TOKEN_INFO": ("label", "serialNumber"),
                     "CK_SLOT_INFO": ("slotDescription",)}


def _text_spans(struct: str, names: tuple[str, ...]) -> list[tuple[int, int]]:
    """(offset, size) of leading fixed-size text fields of a struct (they are all bytes, so
    their offsets do not depend on the platform's alignment)."""
    spans, off = [], 0
    for f in structs.STRUCTS[struct].fields:
        if f.role is not Role.TEXT_FIXED or f.size is None:
            break
        if f.name in names:
            spans.append((off, f.size))
        off += f.size
    return spans


_STRUCT_SPANS = {s: _text_spans(s, n) for s, n in _IDENTIFYING_TEXT.items()}


_MARK_BYTE = bytes([MARK])


def _mask(buf: bytearray, start: int, end: int) -> bool:
    """Marker bytes over buf[start:end]; whether anything changed."""
    if start >= end or buf.count(_MARK_BYTE, start, end) == end - start:
        return False
    buf[start:end] = bytes([MARK]) * (end - start)
    return True


class _Field:
    __slots__ = ("param", "phase", "kind", "flags", "data")

    def __init__(self, param: int, phase: int, kind: int, flags: int, data: bytearray) -> None:
        self.param, self.phase, self.kind, self.flags, self.data = param, phase, kind, flags, data


def _split(rec: bytes) -> tuple[list[_Field], int]:
    """A call or PC/SC record's fields, and where the bytes after the last sound one begin: a
    field that runs past the record, of a kind the format lacks or of a size its kind cannot
    have is where the damage starts, and it and all after it are the rest."""
    out = []
    off = frames.MIN_RECORD
    for param, phase, kind, flags, start, n in frames.fields(rec):
        if start + n > len(rec) or kind not in _KINDS or _SIZES.get(kind, n) != n:
            break
        out.append(_Field(param, phase, kind, flags, bytearray(rec[start:start + n])))
        off = start + n
    return out, off


# The bytes after a record's last whole field: as they are (a view), or a run of that many
# marker bytes (an int), written a chunk at a time: a damaged record may be MAX_RECORD long.
Rest = memoryview | int
Parts = list[bytes | Rest]


def _masked_rest(rec: bytes, off: int) -> tuple[Rest, bool]:
    """rec[off:] as a run of marker bytes unless it is one already; whether that changed it."""
    n = len(rec) - off
    if n == 0 or rec.count(_MARK_BYTE, off) == n:
        return memoryview(rec)[off:], False
    return n, True


def _join(rec: bytes, fields: list[_Field], rest: Rest) -> Parts:
    body = b"".join(FIELD.pack(f.param, f.phase, f.kind, f.flags, len(f.data)) + f.data
                    for f in fields)
    head = bytearray(rec[:RECORD.size])
    n = rest if isinstance(rest, int) else len(rest)
    head[4:8] = (RECORD.size + len(body) + n).to_bytes(4, "little")
    return [bytes(head) + body, rest]


def _write(fout: BinaryIO, out: bytes | Parts) -> None:
    if not isinstance(out, list):
        fout.write(out)
        return
    for part in out:
        if isinstance(part, int):
            for k in range(0, part, frames.CHUNK):
                fout.write(_MARK_BYTE * min(frames.CHUNK, part - k))
        else:
            fout.write(part)


class _Redactor:
    def __init__(self, opts: Options, report: Report) -> None:
        self.opts = opts
        self.report = report
        self.objects: dict[tuple[int, int], int] = {}  # (pid, handle) -> CKO class
        self.pin_controls: set[int] = set()  # SCardControl codes that carry PIN structures

    def found(self, offset: int, what: str) -> None:
        self.report(Finding(f"offset {offset}", what))

    # -- records -----------------------------------------------------------------------------

    def record(self, rec: bytes, offset: int) -> bytes | Parts:
        rtype = rec[8]
        fidx = int.from_bytes(rec[10:12], "little")
        if rtype == RecordType.PROCESS:
            return self.process(rec, offset)
        if rtype == RecordType.MODULE:
            return self.module(rec, offset)
        if rtype in _PLAIN:
            return self.plain(rec, offset)
        if rtype in (RecordType.CALL, RecordType.ENTRY) and fidx < len(functions.FUNCTIONS):
            return self.call(rec, offset, functions.FUNCTIONS[fidx])
        if rtype == RecordType.PCSC and fidx < len(pcsc.FUNCTIONS):
            return self.pcsc(rec, offset)
        return self.unknown(rec, offset, rtype, fidx)

    def unknown(self, rec: bytes, offset: int, rtype: int, fidx: int) -> Parts:
        """A record of a type or function this version does not know: nobody can tell which
        of its bytes are secret, so every field's payload is masked (the whole body when its
        fields do not frame it); the record keeps its header and length."""
        what = f"record of unknown type {rtype}" if rtype not in _FIELDED else \
            f"{RecordType(rtype).name.lower()} record of unknown function {fidx}"
        fields, off = _split(rec)
        changed = False
        for f in fields:
            changed |= _mask(f.data, 0, len(f.data))
        rest, masked = _masked_rest(rec, off)
        if changed or masked:
            self.found(offset, f"{what} (masked: it may hold anything)")
        return _join(rec, fields, rest)

    def unreadable_json(self, rec: bytes, offset: int, what: str) -> Parts:
        """A header record whose JSON does not read (damaged, or a damaged length that
        took in the records after it): its body is masked whole."""
        rest, masked = _masked_rest(rec, RECORD.size)
        if masked:
            self.found(offset, f"{what}: unreadable (masked: it may hold anything)")
        return [rec[:RECORD.size], rest]

    def plain(self, rec: bytes, offset: int) -> bytes | Parts:
        """A record that holds no secret by construction: its own field is kept; any other
        field, and what a damaged length gave it after its fields, is masked."""
        what = RecordType(rec[8]).name.lower()
        fields, off = _split(rec)
        own = _PLAIN[rec[8]]
        changed = False
        for f in fields[1:] if fields and fields[0].kind == own else fields:
            changed |= _mask_payload(f)
        if changed:
            self.found(offset, f"{what} record: a field it does not hold (damaged: masked)")
        rest, masked = _masked_rest(rec, off)
        if masked:
            self.found(offset, f"{what} record: {rest} bytes after its last whole field "
                               f"(damaged: masked)")
        return _join(rec, fields, rest) if changed or masked else rec

    def doubts(self, fields: list[_Field], rec: bytes, off: int, offset: int, what: str,
               known: int, extra: frozenset[int] = frozenset()) -> Rest:
        """What a known record's own rules leave in doubt, masked: a field flagged as a secret
        in clear, whatever its parameter or kind (the flag stays: it says how the field was
        recorded, and a redacted field holds the marker), a field of a parameter the function
        does not have (param >= known, but for the extra ones its records carry), and the
        bytes after the last field that frames (a damaged field length)."""
        for f in fields:
            if f.flags & FieldFlag.SECRETS_SHOWN:
                if _mask_payload(f):
                    self.found(offset, f"{what} field {f.param} (flagged as a secret in clear)")
            elif f.param >= known and f.param not in extra and f.kind not in _NO_PAYLOAD and \
                    _mask(f.data, 0, len(f.data)):
                self.found(offset, f"{what} field {f.param} (unknown parameter)")
        rest, masked = _masked_rest(rec, off)
        if masked:
            self.found(offset, f"{what}: {rest} bytes after its last whole field "
                               f"(damaged: masked)")
        return rest

    def process(self, rec: bytes, offset: int) -> bytes | Parts:
        body = rec[RECORD.size:]
        info = _json(body)
        if info is None:
            return self.unreadable_json(rec, offset, "process header")
        if info.get("secrets"):
            self.found(offset, "process header: recorded with secrets in clear")
        if self.opts.strict:
            for key in ("exe", "module", "output"):
                if isinstance(info.get(key), str) and _masked_path(info[key]) != info[key]:
                    self.found(offset, f"process header: {key} (a path)")
                    info[key] = _masked_path(info[key])
        host = info.get("host")
        if self.opts.strict and isinstance(host, str) and host.strip("*"):
            self.found(offset, "process header: host name")
            info["host"] = "*" * len(host)
        if self.opts.strict and info.get("uid") not in (None, 0):
            info["uid"] = 0
        info["secrets"] = False
        info["redacted"] = True
        text = json.dumps(info, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > len(body):
            return rec  # a header written by another tool, with no room: left as it was
        return rec[:RECORD.size] + text + b" " * (len(body) - len(text))

    def module(self, rec: bytes, offset: int) -> bytes | Parts:
        body = rec[RECORD.size:]
        info = _json(body)
        if info is None:
            return self.unreadable_json(rec, offset, "module record")
        if not isinstance(info.get("path"), str) or not self.opts.strict:
            return rec
        masked = _masked_path(info["path"])
        if masked == info["path"]:
            return rec
        self.found(offset, "module record: path")
        info["path"] = masked
        text = json.dumps(info, separators=(",", ":"), ensure_ascii=False).encode()
        return rec[:RECORD.size] + text + b" " * max(0, len(body) - len(text))

    def call(self, rec: bytes, offset: int, fn: Function) -> bytes | Parts:
        pid = int.from_bytes(rec[12:16], "little")
        fields, off = _split(rec)
        by_name = {fn.params[f.param].name: f for f in fields
                   if f.param < len(fn.params) and f.phase == Phase.IN}
        obj = by_name.get("hObject")
        handle = u64(obj.data) if obj is not None and obj.kind == Kind.ULONG else None
        known = self.objects.get((pid, handle)) if handle is not None else None
        created: int | None = None
        resized = False
        for f in fields:
            if f.param >= len(fn.params):
                continue
            p = fn.params[f.param]
            what = f"{fn.name} {p.name}"
            if p.role is Role.PIN and f.kind == Kind.BYTES:
                if self.opts.hide_lengths and len(f.data) != HIDDEN_PIN_LENGTH:
                    f.data = bytearray([MARK]) * HIDDEN_PIN_LENGTH
                    length = by_name.get(p.length or "")
                    if length is not None and length.kind == Kind.ULONG:
                        length.data = bytearray(HIDDEN_PIN_LENGTH.to_bytes(8, "little"))
                    resized = True
                    self.found(offset, f"{what} (PIN)")
                elif _mask(f.data, 0, len(f.data)):
                    self.found(offset, f"{what} (PIN)")
            elif p.role is Role.PIN and f.kind == Kind.DIGEST:
                if _mask(f.data, DIGEST.size - 8, len(f.data)):
                    self.found(offset, f"{what} (PIN)")
            elif p.role is Role.PIN and f.kind not in _PIN_KEPT:
                if _mask(f.data, 0, len(f.data)):  # a PIN of a kind it cannot have: damage
                    self.found(offset, f"{what} (PIN)")
            elif self.opts.strict and f.kind == Kind.BYTES and (
                    p.name == "pUsername" or (p.role is Role.TEXT_FIXED and p.name == "pLabel")):
                if _mask(f.data, 0, len(f.data)):
                    self.found(offset, f"{what} (identifying)")
            elif self.opts.strict and f.kind == Kind.STRUCT and p.struct in _STRUCT_SPANS:
                for start, size in _STRUCT_SPANS[p.struct]:
                    if _mask(f.data, start, min(start + size, len(f.data))):
                        self.found(offset, f"{what} (identifying)")
            elif f.kind == Kind.TEMPLATE:
                cls = _template_class(f.data)
                if p.role is Role.TEMPLATE_INOUT:
                    keyctx = is_key_class(cls if cls is not None else known)
                    if cls is not None and handle is not None:
                        self.objects[(pid, handle)] = cls
                elif cls is not None or _sensitive(f.data):
                    keyctx = _sensitive(f.data) or bool(is_key_class(cls))
                    created = cls
                elif fn.name in ("C_SetAttributeValue", "C_CopyObject"):
                    keyctx = is_key_class(known)  # the object's class, if seen before
                else:  # as the shim: a template that does not say may be a key's
                    keyctx = True if p.kind == functions.KEY_TEMPLATE else None
                self.template(f.data, keyctx, offset, what, 0)
            elif f.kind == Kind.MECHANISM:
                self.mechanism(f.data, offset, what)
            if f.phase == Phase.OUT and p.role is Role.HANDLE_OUT and \
                    f.kind == Kind.ULONG and p.kind == "object":
                out = u64(f.data)
                if p.name == "phPublicKey":
                    self.objects[(pid, out)] = _PUBLIC
                elif p.name == "phPrivateKey" or (created is None and
                                                  fn.name in ("C_GenerateKey", "C_UnwrapKey",
                                                              "C_DeriveKey")):
                    self.objects[(pid, out)] = _PRIVATE  # some key: masked alike
                elif created is not None:
                    self.objects[(pid, out)] = created
        rest = self.doubts(fields, rec, off, offset, fn.name, len(fn.params))
        return _join(rec, fields, rest) if (resized or fields or rest) else rec

    def template(self, data: bytearray, keyctx: bool | None, offset: int, what: str,
                 depth: int) -> None:
        """Masks a TEMPLATE payload in place."""
        for atype, _alen, vkind, start, end in frames.attributes(data, strict=False):
            if vkind == Kind.TEMPLATE and depth == 0:
                inner = bytearray(data[start:end])
                cls = _template_class(inner)
                ictx = keyctx if cls is None else is_key_class(cls)
                self.template(inner, ictx, offset, what, depth + 1)
                data[start:end] = inner
            elif vkind in (Kind.BYTES, Kind.DIGEST):
                why = attribute_is_secret(atype, keyctx, self.opts.strict)
                secret = start if vkind == Kind.BYTES else start + DIGEST.size - 8
                if why and _mask(data, secret, end):
                    self.found(offset, f"{what} {CKA.name_of(atype)} ({why})")

    def mechanism(self, data: bytearray, offset: int, what: str) -> None:
        """PIN fields (PBKDF2 passwords) of a mechanism's struct parameter."""
        if len(data) < MECHANISM.size:
            return
        mtype, size, pkind, _n = MECHANISM.unpack_from(data)
        name = structs.struct_for_mechanism(mtype)
        if pkind != Kind.STRUCT or name is None:
            return
        for f, kind, start, end in frames.struct_blobs(name, data, MECHANISM.size + size):
            if f.role is Role.PIN and kind == Kind.BYTES and _mask(data, start, end):
                self.found(offset, f"{what} {f.name} (PIN)")

    def pcsc(self, rec: bytes, offset: int) -> bytes | Parts:
        fidx = int.from_bytes(rec[10:12], "little")
        if fidx >= len(pcsc.FUNCTIONS):
            return rec
        fields, off = _split(rec)
        values = {(f.param, f.phase): f for f in fields}
        resized = False
        if fidx == _TRANSMIT:
            f = values.get((2, Phase.IN))
            if f is not None and f.kind == Kind.BYTES:
                resized = self.apdu(f, values.get((3, Phase.IN)), offset)
            r = values.get((5, Phase.OUT))
            if self.opts.strict and r is not None and r.kind == Kind.BYTES \
                    and _mask(r.data, 0, len(r.data) - 2):
                self.found(offset, "APDU response data (identifying)")
        elif fidx == _CONTROL:
            code = values.get((1, Phase.IN))
            code_v = u64(code.data) if code is not None else None
            out = values.get((4, Phase.OUT))
            if code_v == pcsc.CM_IOCTL_GET_FEATURE_REQUEST and out is not None and \
                    out.kind == Kind.BYTES:
                self.pin_controls |= pcsc.pin_pad_codes(bytes(out.data))
            f = values.get((2, Phase.IN))
            if code_v in self.pin_controls and f is not None and f.kind == Kind.BYTES \
                    and _mask(f.data, 0, len(f.data)):
                self.found(offset, "SCardControl PIN-pad structure (PIN)")
        elif self.opts.strict and fidx in _READER_PARAMS:
            for f in fields:
                if f.param in _READER_PARAMS[fidx] and f.kind in (Kind.BYTES,
                                                                  Kind.CSTRING):
                    if self.reader_names(f.data, pcsc.FUNCTIONS[fidx].params[f.param].name):
                        self.found(offset, f"{pcsc.FUNCTIONS[fidx].name} reader name "
                                           f"(identifying)")
        fn = pcsc.FUNCTIONS[fidx]
        rest = self.doubts(fields, rec, off, offset, fn.name, len(fn.params), _PCSC_EXTRA)
        return _join(rec, fields, rest) if (resized or fields or rest) else rec

    def apdu(self, f: _Field, length: _Field | None, offset: int) -> bool:
        """Masks the PIN of a command APDU in place; True if its length changed."""
        span = pin_field(bytes(f.data))
        if span is None:
            return False
        start, n = span
        end = min(start + n, len(f.data))
        if self.opts.hide_lengths and start == 5 and end - start != HIDDEN_PIN_LENGTH:
            f.data = f.data[:4] + bytearray([HIDDEN_PIN_LENGTH, *[MARK] * HIDDEN_PIN_LENGTH]) \
                + f.data[end:]
            if length is not None and length.kind == Kind.ULONG:
                length.data = bytearray(len(f.data).to_bytes(8, "little"))
            self.found(offset, f"{_ins_name(f.data)} APDU data (PIN)")
            return True
        if not self.opts.hide_lengths:
            while end > start and f.data[end - 1] == 0xFF:  # PIV pads PINs with FF
                end -= 1
        if _mask(f.data, start, end):
            self.found(offset, f"{_ins_name(f.data)} APDU data (PIN)")
        return False

    def reader_names(self, data: bytearray, name: str) -> bool:
        changed = False
        if name != "rgReaderStates":
            for i, b in enumerate(data):
                if b and b != MARK:
                    data[i] = MARK
                    changed = True
            return changed
        for _start, _atr, name_start, name_end in frames.reader_states(data, strict=False):
            changed |= _mask(data, name_start, min(name_end, len(data)))
        return changed


def _mask_payload(f: _Field) -> bool:
    """Masks what a field holds in clear: a template's attribute values (its framing kept, so
    it still reads as a template), a digest's hash and prefix, any other payload whole."""
    if f.kind == Kind.TEMPLATE:
        changed = False
        for _t, _n, vkind, start, end in frames.attributes(f.data, strict=False):
            if vkind not in _NO_PAYLOAD:
                changed |= _mask(f.data, start, end)
        return changed
    if f.kind == Kind.DIGEST:
        return _mask(f.data, DIGEST.size - 8, len(f.data))
    if f.kind in _NO_PAYLOAD:
        return False
    return _mask(f.data, 0, len(f.data))


def _ins_name(command: bytes | bytearray) -> str:
    from p11spy.decoder.apdu import ins_name

    return ins_name(command[0], command[1]) or f"INS {command[1]:02X}"


def _template_attrs(data: bytearray) -> Iterator[tuple[int, int, bytes]]:
    """(type, value kind, payload) of a template's top-level attributes."""
    for atype, _alen, vkind, start, end in frames.attributes(data, strict=False):
        yield atype, vkind, bytes(data[start:end])


def _template_class(data: bytearray) -> int | None:
    for atype, vkind, payload in _template_attrs(data):
        if atype == _CLASS and vkind == Kind.BYTES and len(payload) == 8:
            return u64(payload)
    return None


def _sensitive(data: bytearray) -> bool:
    return any(atype == _SENSITIVE and vkind == Kind.BYTES and payload[:1] not in (b"", b"\0")
               for atype, vkind, payload in _template_attrs(data))


def _json(body: bytes) -> dict | None:
    """A header record's JSON object, or None when it does not read as one."""
    try:
        info = json.loads(bytes(body).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None


def _masked_path(path: str) -> str:
    """A path with every character but the separators masked."""
    return "".join(c if c in "/\\" else "*" for c in path)


def redact(fin: BinaryIO, fout: BinaryIO | None, opts: Options, report: Report) -> None:
    r = _Redactor(opts, report)
    stretch: tuple[int, int, bool] | None = None  # unreadable bytes: offset, masked, changed
    for kind, offset, data in frames.frames(fin):
        if stretch is not None and kind != frames.MORE:
            _unreadable(r, *stretch)
            stretch = None
        if kind == frames.RECORD:
            out = r.record(data, offset)
        else:  # unreadable: masked, but a record marker and its length stay, so that the
            # reader stops or resynchronises where it did before
            keep = min(8, len(data)) if data[:4] == MAGIC else 0
            n = len(data) - keep
            changed = data.count(_MARK_BYTE, keep) != n
            stretch = (offset, n, changed) if stretch is None else \
                (stretch[0], stretch[1] + len(data), stretch[2] or changed)
            out = [data[:keep], n] if changed else data
        if fout is not None:
            _write(fout, out)
    if stretch is not None:
        _unreadable(r, *stretch)


def _unreadable(r: _Redactor, offset: int, masked: int, changed: bool) -> None:
    if changed:
        r.found(offset, f"{masked} unreadable bytes (masked: they may hold anything)")
