"""Which calls a process was inside when it died: read from the entry records of its traces.

Why here and so small: `p11spy run` says so next to "client killed by SIGSEGV", from the
traces the run wrote, without the decoder (capture imports only the facts). Only record
headers are read, and only from traces small enough to read at once at the end of a run.
"""

from __future__ import annotations

import os

from p11spy.facts.logformat import MAGIC, RECORD, RecordType, call_key

MAX_SIZE = 64 << 20  # larger traces are left to `p11spy decode`


def calls_inside(paths: list[str], pid: int) -> list[tuple[str, int]]:
    """(function, thread id) of each call of process pid entered and never returned, in the
    order entered. A big-endian trace (written on s390x) is not one run writes here."""
    from p11spy.facts.pkcs11 import functions  # only after a death: run starts without it

    names = [f.name for f in functions.FUNCTIONS]
    found: list[tuple[str, int]] = []
    for path in paths:
        try:
            if os.path.getsize(path) > MAX_SIZE:
                continue
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        found += _open_entries(data, pid, names)
    return found


def _open_entries(data: bytes, pid: int, names: list[str]) -> list[tuple[str, int]]:
    entered: dict[bytes, list[int]] = {}  # key -> offsets of its entries still open
    off = 0
    while off + RECORD.size <= len(data):
        magic, length, rtype, _mod, _fn, rpid, *_ = RECORD.unpack_from(data, off)
        if magic != MAGIC or length < RECORD.size:
            break  # damage: what was read so far stands
        if rpid == pid:
            key = call_key(data, off)
            if rtype == RecordType.ENTRY:
                entered.setdefault(key, []).append(off)
            elif rtype in (RecordType.CALL, RecordType.PASSED_ON) and entered.get(key):
                entered[key].pop()
        off += length
    out = []
    for offsets in entered.values():
        for at in offsets:
            _m, _l, _t, _mod, fidx, _pid, tid, *_ = RECORD.unpack_from(data, at)
            out.append((names[fidx] if fidx < len(names) else f"function #{fidx}", tid))
    return out
