"""Writes small p11spy traces record by record, and grows real ones into big ones.

Why: the viewer's tests need traces with things a SoftHSM2 token never produces (APDUs under
a call, a file that grows while it is read), and the benchmark needs gigabytes of trace.
Records are packed with facts/logformat.py's structs, exactly as the shim lays them out, so the
decoder reads them like real ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from p11spy.facts import pcsc
from p11spy.facts.logformat import (
    FIELD,
    FORMAT_VERSION,
    MAGIC,
    MASKED,
    RECORD,
    ULONG,
    Kind,
    Phase,
    PinClass,
    RecordType,
)
from p11spy.facts.pkcs11 import constants, functions

_FIDX = {f.name: i for i, f in enumerate(functions.FUNCTIONS)}
_PCSC = {f.name: i for i, f in enumerate(pcsc.FUNCTIONS)}
CKR = constants.FAMILIES["CKR"].names


def field(param: int, phase: int, kind: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return FIELD.pack(param, phase, kind, flags, len(payload)) + payload


def ulong(param: int, value: int, phase: int = Phase.IN) -> bytes:
    return field(param, phase, Kind.ULONG, ULONG.pack(value))


def masked_pin(param: int, length: int) -> bytes:
    return field(param, Phase.IN, Kind.MASKED,
                 MASKED.pack(length, PinClass.ASCII_DIGITS, 0))


def masked_apdu(header: bytes, length: int, trailer: bytes = b"") -> bytes:
    """An APDU_MASKED payload: what the shim records of a VERIFY that carries a PIN."""
    return (bytes([len(header)]) + header + MASKED.pack(length, PinClass.ASCII_DIGITS, 0)
            + bytes([len(trailer)]) + trailer)


def record(rtype: int, fidx: int, body: bytes, *, pid: int = 4242, tid: int = 4242,
           start_us: int = 1_700_000_000_000_000, dur_ns: int = 1000, rv: int = 0,
           number: int = 0) -> bytes:
    length = RECORD.size + len(body)
    return RECORD.pack(MAGIC, length, rtype, 0, fidx, pid, tid, start_us, dur_ns, rv,
                          number) + body


class TraceWriter:
    """Appends records to a trace file: a process header, calls, APDUs under calls."""

    def __init__(self, f: BinaryIO, pid: int = 4242, tid: int = 4242,
                 start_us: int = 1_700_000_000_000_000) -> None:
        self.f = f
        self.pid = pid
        self.tid = tid
        self.now = start_us
        self.number = 0

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.f.flush()

    def process(self, exe: str = "/usr/bin/pkcs11-tool") -> None:
        info = {"format": FORMAT_VERSION, "p11spy": "test", "pid": self.pid, "ppid": 1,
                "forked": False, "uid": 0, "time_us": self.now, "exe": exe,
                "module": "/usr/lib/softhsm/libsofthsm2.so", "secrets": False}
        self.write(record(RecordType.PROCESS, 0, json.dumps(info).encode(), pid=self.pid,
                          tid=self.tid, start_us=self.now))

    def call(self, name: str, fields: bytes = b"", rv: int | str = 0, dur_us: int = 20,
             apdus: list[tuple[bytes | tuple[bytes, int], bytes | None]] = ()) -> int:
        """A call (and the SCardTransmit records it made, written before it as the shim
        does); returns its call number."""
        self.number += 1
        number = self.number
        start = self.now
        for command, response in apdus:
            if isinstance(command, tuple):  # (header, PIN length): a masked VERIFY
                cmd = field(2, Phase.IN, Kind.APDU_MASKED, masked_apdu(*command))
            else:
                cmd = field(2, Phase.IN, Kind.BYTES, command)
            body = ulong(pcsc.PARENT_PARAM, number) + cmd
            if response is not None:
                body += field(5, Phase.OUT, Kind.BYTES, response)
            self.now += 300
            self.write(record(RecordType.PCSC, _PCSC["SCardTransmit"], body, pid=self.pid,
                              tid=self.tid, start_us=self.now, dur_ns=250_000,
                              rv=0 if response is not None else 0x80100016, number=0))
        code = CKR[rv] if isinstance(rv, str) else rv
        self.now = start + dur_us + 10
        self.write(record(RecordType.CALL, _FIDX[name], fields, pid=self.pid, tid=self.tid,
                          start_us=start, dur_ns=dur_us * 1000, rv=code, number=number))
        return number


def login_story(path: Path, extra_calls: int = 0) -> None:
    """A short card session: open, a wrong PIN (VERIFY -> 63C2), the right PIN, a signature
    whose response needs GET RESPONSE, and extra_calls more C_GetSessionInfo calls."""
    aid = bytes.fromhex("A000000308000010000100")
    fci = bytes.fromhex("61114F0600001000010079074F05A000000308")
    with path.open("wb") as f:
        w = TraceWriter(f)
        w.process()
        w.call("C_Initialize", field(0, Phase.IN, Kind.NULL), dur_us=900)
        w.call("C_OpenSession", ulong(0, 0) + ulong(1, 6) + ulong(4, 7, Phase.OUT),
               apdus=[(bytes.fromhex("00A4040009") + aid[:9] + b"\x00", fci + b"\x90\x00")])
        for _ in range(extra_calls):
            w.call("C_GetSessionInfo", ulong(0, 7) + field(1, Phase.IN, Kind.NULL),
                   dur_us=3)
        w.call("C_Login", ulong(0, 7) + ulong(1, 1) + masked_pin(2, 6) + ulong(3, 6),
               rv="CKR_PIN_INCORRECT", dur_us=4000,
               apdus=[((bytes.fromhex("0020008008"), 8), bytes.fromhex("63C2"))])
        w.call("C_Login", ulong(0, 7) + ulong(1, 1) + masked_pin(2, 6) + ulong(3, 6),
               dur_us=3900, apdus=[((bytes.fromhex("0020008008"), 8), b"\x90\x00")])
        w.call("C_Sign", ulong(0, 7) + field(1, Phase.IN, Kind.BYTES, b"\x01" * 32)
               + ulong(2, 32) + field(3, Phase.IN, Kind.NULL)
               + field(4, Phase.IN, Kind.NULL), dur_us=9000,
               apdus=[(bytes.fromhex("00870702267C248200812000") + b"\x01" * 32 + b"\x00",
                       b"\x7c\x04\x82\x02\xab\xcd" + bytes.fromhex("6120")),
                      (bytes.fromhex("00C0000020"), b"\x55" * 32 + b"\x90\x00")])
        w.call("C_Finalize", field(0, Phase.IN, Kind.NULL))


def records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(offset, record) of a well-formed trace held in memory."""
    off = 0
    while off + RECORD.size <= len(data):
        length = int.from_bytes(data[off + 4:off + 8], "little")
        if data[off:off + 4] != MAGIC or length < RECORD.size:
            return
        yield off, data[off:off + length]
        off += length


def _renumbered(rec: bytes, shift: int) -> bytes:
    """The record with its call number (and, for PC/SC records, its parent's) moved on."""
    if shift == 0:
        return rec
    out = bytearray(rec)
    number = int.from_bytes(rec[48:56], "little")
    if number:
        out[48:56] = (number + shift).to_bytes(8, "little")
    if rec[8] == RecordType.PCSC:
        off = RECORD.size
        while off + FIELD.size <= len(rec):
            param, _ph, _kind, _fl, n = FIELD.unpack_from(rec, off)
            off += FIELD.size
            if param == pcsc.PARENT_PARAM and n == 8:
                parent = int.from_bytes(rec[off:off + 8], "little")
                out[off:off + 8] = (parent + shift).to_bytes(8, "little")
            off += n
    return bytes(out)


def grow(source: Path, dest: Path, size: int) -> int:
    """Write dest by repeating source's records (process header once) until it holds at least
    size bytes; only call numbers change, so every copy decodes like the original. Returns
    the number of records written."""
    data = source.read_bytes()
    recs = [r for _o, r in records(data)]
    head = [r for r in recs if r[8] == RecordType.PROCESS][:1]
    body = [r for r in recs if r[8] != RecordType.PROCESS]
    stride = max((int.from_bytes(r[48:56], "little") for r in body), default=0) + 1
    block_size = sum(map(len, body))
    if not body or block_size == 0:
        raise ValueError(f"{source}: no records to repeat")
    written = 0
    count = 0
    with dest.open("wb") as f:
        for r in head:
            f.write(r)
            written += len(r)
            count += 1
        k = 0
        buf: list[bytes] = []
        while written < size:
            block = b"".join(_renumbered(r, k * stride) for r in body)
            buf.append(block)
            written += len(block)
            count += len(body)
            k += 1
            if len(buf) >= 64:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))
    os.chmod(dest, 0o600)
    return count
