"""Compiles a p11spy trace into the replay module's script (spy/replay_runtime.c reads it).

Why a script and not the trace itself: the module is plain C in the client, and should only
walk a flat list. The script keeps, per recorded call of one process and module, the function,
the return value, the call number and the call's fields exactly as the shim recorded them
(split into what went in and what came out), so the module compares an incoming call with
the recording byte for byte, with the same encoders, and writes back what was recorded.

Layout (little-endian): "P11RPLY1", u32 calls, u8 major, u8 minor (the function list's
version), u8 flags (1: secrets were masked), u8 0, u32 name length, the name (what the
replay's trace names as its module); then per call u32 function index, u32 in length,
u32 out length, u32 0, u64 return value, u64 the call's number as `p11spy decode` shows it,
the in-fields, the out-fields.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from p11spy.decoder.events import Call
from p11spy.decoder.formats.p11spy import frames
from p11spy.decoder.formats.registry import open_file, seekable
from p11spy.errors import UserError
from p11spy.facts.logformat import RECORD, Kind, Phase, RecordType
from p11spy.facts.pkcs11 import functions

MAGIC = b"P11RPLY1"
HEAD = struct.Struct("<8sIBBBBI")
CALL = struct.Struct("<IIIIQQ")
SECRETS_MASKED = 1
SHIM_MODULE = 255  # calls the shim answered itself (facts/LOGFORMAT.md): entry points
DEFAULT_VERSION = (2, 40)
_ENTRY = {"C_GetFunctionList", "C_GetInterfaceList", "C_GetInterface"}


@dataclass
class Recorded:
    """One recorded call: its function, return value, call number and fields by phase."""

    function: str
    fn_index: int
    rv: int
    seq: int  # the number `p11spy decode` shows for it
    tid: int
    fields_in: bytes
    fields_out: bytes


@dataclass
class Recording:
    """The calls of one process to one module, as the replay answers them."""

    source: str
    pid: int
    module: str
    calls: list[Recorded] = field(default_factory=list)
    version: tuple[int, int] = DEFAULT_VERSION
    secrets_masked: bool = False
    gaps: list[str] = field(default_factory=list)  # why calls may be missing from the recording

    @property
    def interfaces(self) -> bool:
        """Whether the recorded client found PKCS#11 3.0 interfaces (then the replay offers
        them too, so that the client takes the same path)."""
        return any(c.function in ("C_GetInterface", "C_GetInterfaceList") for c in self.calls)

    @property
    def name(self) -> str:
        return f"{self.source} (process {self.pid}, module {self.module})"


def _split(rec: bytes) -> tuple[bytes, bytes, bool]:
    """The record's in-fields and out-fields, each as recorded; whether an output was masked."""
    parts: dict[int, bytearray] = {Phase.IN: bytearray(), Phase.OUT: bytearray()}
    masked = False
    for _param, phase, kind, _flags, off, n in frames.fields(rec):
        if off + n > len(rec) or phase not in parts:
            raise UserError("a damaged call record (its fields run past it)")
        parts[phase] += rec[off - 8:off + n]
        if phase == Phase.OUT:
            masked |= kind == Kind.MASKED or (
                kind == Kind.TEMPLATE and any(vk == Kind.MASKED for _t, _l, vk, _s, _e in
                                              frames.attributes(rec[off:off + n], 0, False)))
    return bytes(parts[Phase.IN]), bytes(parts[Phase.OUT]), masked


def _version(call: Recorded) -> tuple[int, int] | None:
    """The function list's version an entry call (or C_GetInfo) handed out."""
    out = list(frames.fields(call.fields_out, -RECORD.size))
    for _param, _phase, kind, _flags, off, n in out:
        data = call.fields_out[off:off + n]
        if call.function == "C_GetFunctionList" and kind == Kind.STRUCT and n >= 2:
            return data[0], data[1]
        if call.function in ("C_GetInterface", "C_GetInterfaceList") and n >= 10:
            return data[8], data[9]
        if call.function == "C_GetInfo" and kind == Kind.STRUCT and n >= 2:
            return data[0], data[1]
    return None


def _calls(f: BinaryIO,
           gaps: list[str] | None = None) -> Iterator[tuple[int, int, int, bytes]]:
    """(offset, pid, module index, record) of each call and module record; what leaves calls
    out into gaps (when given)."""
    for kind, offset, data in frames.frames(f):
        if kind != frames.RECORD:
            if gaps is not None and kind != frames.MORE:
                gaps.append(f"unreadable bytes at offset {offset}" if kind == frames.JUNK
                            else f"the trace ends inside a record at offset {offset}")
            continue
        _m, _len, rtype, mod, fn, rpid, _tid, *_rest = RECORD.unpack_from(data)
        if rtype == RecordType.DROPPED and gaps is not None:
            gaps.append(f"{frames.u64(data, RECORD.size + 8)} records the shim could not "
                        f"write are missing before offset {offset}")
        elif rtype in (RecordType.CALL, RecordType.MODULE) and fn < len(functions.FUNCTIONS):
            yield offset, rpid, mod, data


def _numbers(f: BinaryIO, pid: int) -> dict[int, int]:
    """Record offset -> the number `p11spy decode` shows for the call (its event number), so
    that what replay reports can be found in the decoded trace."""
    from p11spy.decoder.formats.p11spy import reader

    out: dict[int, int] = {}
    for e in reader.read(f):
        if isinstance(e, Call) and e.pid == pid and e.source and e.source.startswith("offset "):
            out[int(e.source.split()[1])] = e.seq
    return out


def load(path: Path, pid: int | None = None) -> Recording:
    """The recording of one process of a p11spy trace (the first with calls, or pid) to the
    module it called most. Two passes, so only that process's calls are held."""
    with open_file(path) as f:
        if not seekable(path):
            raise UserError(f"{path}: replay reads a trace file (not a pipe)")
        if f.read(4) != b"P11R":
            raise UserError(f"{path}: replay reads p11spy's own traces (this is not one)")
        f.seek(0)
        modules: dict[tuple[int, int], str] = {}
        counts: dict[int, Counter[int]] = {}
        gaps: list[str] = []
        for _offset, rpid, mod, data in _calls(f, gaps):
            if data[8] == RecordType.MODULE:
                try:
                    modules[(rpid, mod)] = json.loads(data[RECORD.size:]).get("path", "?")
                except (ValueError, AttributeError):
                    modules[(rpid, mod)] = "?"
            else:
                counts.setdefault(rpid, Counter())[mod] += 1
        if not counts:
            raise UserError(f"{path}: no PKCS#11 calls recorded")
        if pid is None:
            pid = next(iter(counts))
        elif pid not in counts:
            have = ", ".join(str(p) for p in counts)
            raise UserError(f"{path}: no calls of process {pid} (processes: {have})")
        real = Counter({m: n for m, n in counts[pid].items() if m != SHIM_MODULE})
        module = real.most_common(1)[0][0] if real else SHIM_MODULE
        rec = Recording(str(path), pid, modules.get((pid, module), f"#{module}"), gaps=gaps)
        f.seek(0)
        numbers = _numbers(f, pid)
        f.seek(0)
        for offset, rpid, mod, data in _calls(f):
            if rpid != pid or mod not in (module, SHIM_MODULE) or data[8] != RecordType.CALL:
                continue
            _m, _len, _t, _mod, fn, _pid, tid, _start, _dur, rv, seq = RECORD.unpack_from(data)
            fin, fout, masked = _split(data)
            rec.calls.append(Recorded(functions.FUNCTIONS[fn].name, fn, rv,
                                      numbers.get(offset, seq), tid, fin, fout))
            rec.secrets_masked |= masked
    for call in rec.calls:
        if call.function in _ENTRY or call.function == "C_GetInfo":
            v = _version(call)
            if v:
                rec.version = v
                break
    return rec


def encode(rec: Recording) -> bytes:
    name = rec.name.encode()
    out = [HEAD.pack(MAGIC, len(rec.calls), rec.version[0], rec.version[1],
                     SECRETS_MASKED if rec.secrets_masked else 0, 0, len(name)), name]
    for c in rec.calls:
        out.append(CALL.pack(c.fn_index, len(c.fields_in), len(c.fields_out), 0,
                             c.rv & (2**64 - 1), c.seq))
        out += [c.fields_in, c.fields_out]
    return b"".join(out)
