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
from p11spy.facts.logformat import DIGEST, FIELD, MAGIC, MECHANISM, RECORD, Kind, Phase, RecordType
from p11spy.facts.pkcs11 import functions, structs
from p11spy.facts.pkcs11.constants import CKA, CKO
from p11spy.facts.pkcs11.model import Function, Role

_CLASS = CKA.value_of("CKA_CLASS")
_SENSITIVE = CKA.value_of("CKA_SENSITIVE")
_PUBLIC = CKO.value_of("CKO_PUBLIC_KEY")
_PRIVATE = CKO.value_of("CKO_PRIVATE_KEY")
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


def _mask(buf: bytearray, start: int, end: int) -> bool:
    """Marker bytes over buf[start:end]; whether anything changed."""
    if start >= end or all(b == MARK for b in buf[start:end]):
        return False
    buf[start:end] = bytes([MARK]) * (end - start)
    return True


class _Field:
    __slots__ = ("param", "phase", "kind", "flags", "data")

    def __init__(self, param: int, phase: int, kind: int, flags: int, data: bytearray) -> None:
        self.param, self.phase, self.kind, self.flags, self.data = param, phase, kind, flags, data


def _split(rec: bytes) -> tuple[list[_Field], bytes]:
    """A call or PC/SC record's fields, and any bytes after the last whole one."""
    out = []
    off = frames.MIN_RECORD
    for param, phase, kind, flags, start, n in frames.fields(rec):
        if start + n > len(rec):
            break
        out.append(_Field(param, phase, kind, flags, bytearray(rec[start:start + n])))
        off = start + n
    return out, rec[off:]


def _join(rec: bytes, fields: list[_Field], rest: bytes) -> bytes:
    body = b"".join(FIELD.pack(f.param, f.phase, f.kind, f.flags, len(f.data)) + f.data
                    for f in fields)
    head = bytearray(rec[:RECORD.size])
    head[4:8] = (RECORD.size + len(body) + len(rest)).to_bytes(4, "little")
    return bytes(head) + body + rest


class _Redactor:
    def __init__(self, opts: Options, report: Report) -> None:
        self.opts = opts
        self.report = report
        self.objects: dict[tuple[int, int], int] = {}  # (pid, handle) -> CKO class
        self.pin_controls: set[int] = set()  # SCardControl codes that carry PIN structures

    def found(self, offset: int, what: str) -> None:
        self.report(Finding(f"offset {offset}", what))

    # -- records -----------------------------------------------------------------------------

    def record(self, rec: bytes, offset: int) -> bytes:
        rtype = rec[8]
        if rtype == RecordType.PROCESS:
            return self.process(rec, offset)
        if rtype == RecordType.MODULE and self.opts.strict:
            return self.module(rec, offset)
        if rtype in (RecordType.CALL, RecordType.ENTRY):  # an entry: its in-fields
            fidx = int.from_bytes(rec[10:12], "little")
            if fidx < len(functions.FUNCTIONS):
                return self.call(rec, offset, functions.FUNCTIONS[fidx])
        if rtype == RecordType.PCSC:
            return self.pcsc(rec, offset)
        return rec

    def process(self, rec: bytes, offset: int) -> bytes:
        body = rec[RECORD.size:]
        try:
            info = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return rec
        if not isinstance(info, dict):
            return rec
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

    def module(self, rec: bytes, offset: int) -> bytes:
        body = rec[RECORD.size:]
        try:
            info = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return rec
        if not isinstance(info, dict) or not isinstance(info.get("path"), str):
            return rec
        masked = _masked_path(info["path"])
        if masked == info["path"]:
            return rec
        self.found(offset, "module record: path")
        info["path"] = masked
        text = json.dumps(info, separators=(",", ":"), ensure_ascii=False).encode()
        return rec[:RECORD.size] + text + b" " * max(0, len(body) - len(text))

    def call(self, rec: bytes, offset: int, fn: Function) -> bytes:
        pid = int.from_bytes(rec[12:16], "little")
        fields, rest = _split(rec)
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
        if resized:
            return _join(rec, fields, rest)
        return _join(rec, fields, rest) if fields else rec

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

    def pcsc(self, rec: bytes, offset: int) -> bytes:
        fidx = int.from_bytes(rec[10:12], "little")
        if fidx >= len(pcsc.FUNCTIONS):
            return rec
        fields, rest = _split(rec)
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
        return _join(rec, fields, rest) if (resized or fields) else rec

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
            buf = bytearray(data)  # reader stops or resynchronises where it did before
            keep = min(8, len(buf)) if buf[:4] == MAGIC else 0
            changed = _mask(buf, keep, len(buf))
            stretch = (offset, len(buf) - keep, changed) if stretch is None else \
                (stretch[0], stretch[1] + len(buf), stretch[2] or changed)
            out = bytes(buf)
        if fout is not None:
            fout.write(out)
    if stretch is not None:
        _unreadable(r, *stretch)


def _unreadable(r: _Redactor, offset: int, masked: int, changed: bool) -> None:
    if changed:
        r.found(offset, f"{masked} unreadable bytes (masked: they may hold anything)")
