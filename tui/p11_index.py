"""Index of a p11spy binary trace built from the record headers alone.

Why: the fixed record header (facts/logformat.py RECORD) already says type, function, pid,
thread, time, duration and return value, so the scan unpacks one struct per record (plus the
first field, for the session handle) and never decodes arguments. Records are read with
os.pread in 1 MiB chunks rather than mmap, so scanning a 1 GB file does not leave it resident
in the process. A record is decoded only when shown, with the reader's own code
(decoder/formats/p11spy/reader.py).

PC/SC records are written before the call that made them (the call's record is written when it
returns); the scan keeps them pending by (pid, call number) and attaches them to their call.
"""

from __future__ import annotations

import heapq
import io
import json
import os
import re
import tempfile
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from itertools import islice
from pathlib import Path

from p11spy.decoder.events import Event, TraceWarning
from p11spy.decoder.formats.p11spy import byteorder, frames
from p11spy.decoder.formats.p11spy import reader as p11log
from p11spy.decoder.formats.p11spy.entries import OpenCalls, Waiting
from p11spy.decoder.formats.p11spy.modules import Modules
from p11spy.decoder.summary import NEVER_RETURNED, FunctionStats, Summary
from p11spy.decoder.values import format_time, pcsc_rv_name, rv_name
from p11spy.facts import pcsc
from p11spy.facts.logformat import FIELD, MAGIC, RECORD, ULONG, Kind, Phase, RecordType, call_key
from p11spy.facts.pkcs11 import functions
from p11spy.tui.trace_index import (
    APDU,
    CALL,
    ERROR,
    MODULE,
    NO_ID,
    PCSC,
    PROCESS,
    SLOWEST,
    WARNING,
    TraceIndex,
)

CHUNK = 1 << 20
POLL = 0.25  # seconds between looks at a followed file
RAW_LIMIT = 4096  # bytes of a record shown in the raw view
OVERLAP = 255  # bytes two search reads share, so that a match across them is found

_FN = functions.FUNCTIONS
_SESSION_FIRST = frozenset(i for i, f in enumerate(_FN)
                           if f.params and f.params[0].name == "hSession")
_OPEN_SESSION = next(i for i, f in enumerate(_FN) if f.name == "C_OpenSession")
_OPEN_SESSION_OUT = next(i for i, p in enumerate(_FN[_OPEN_SESSION].params)
                         if p.name == "phSession")
_TRANSMIT = next(i for i, f in enumerate(pcsc.FUNCTIONS) if f.name == "SCardTransmit")
_RESPONSE_PARAM = 5  # SCardTransmit's pbRecvBuffer, as p11log reads it
_ULONG = int(Kind.ULONG)
_CALL_T = int(RecordType.CALL)
_PCSC_T = int(RecordType.PCSC)
_ENTRY_T = int(RecordType.ENTRY)
_PASSED_T = int(RecordType.PASSED_ON)


def little_endian(path: Path) -> Path:
    """path itself, or for a big-endian trace (written on s390x) a private little-endian copy:
    the index reads record headers with the little-endian structs, for speed. The copy holds
    the whole records (a damaged stretch, which `p11spy decode` names, is left out)."""
    with path.open("rb") as f:
        if not byteorder.is_big_endian(f.read(RECORD.size)):
            return path
        f.seek(0)
        fd, name = tempfile.mkstemp(prefix="p11spy-little-", suffix=".p11")  # mode 0600
        with os.fdopen(fd, "wb") as out:
            for _offset, rec in p11log.records(f):
                if not isinstance(rec, str):
                    out.write(rec)
    return Path(name)


class P11Index(TraceIndex):
    format_name = "p11spy"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        for f in _FN:
            self.func_id(f.name)
        self._pcsc_base = len(self.func_names)
        for f in pcsc.FUNCTIONS:
            self.func_id(f.name)
        self._unknown = self.func_id("(unknown function)")
        self._names = {t: self.func_id(n) for t, n in (
            (PROCESS, "(process)"), (MODULE, "(module)"), (WARNING, "(warning)"))}
        self.warnings: dict[int, str] = {}
        # Raw counters the scan keeps (stats builds the readable Stats from them on demand):
        # per function id [count, errors, total ns, max ns]; failures per (function, rv).
        self._fstats: list[list[int]] = [[0, 0, 0, 0] for _ in self.func_names]
        self._failures: dict[tuple[int, int], int] = {}
        self._never_returned: dict[int, int] = {}  # function id -> calls that never returned
        self._return_lost: set[int] = set()  # entries whose return may have been lost
        self._slowest: list[tuple[int, int]] = []  # (duration ns, record), a min-heap
        self._sws: dict[str | None, int] = {}
        self.kid_owner = array("I")  # calls with children, in order
        self.kid_start = array("I")
        self.kid_end = array("I")
        self.kid_list = array("I")
        self._pending: Waiting[tuple[int, int], int] = Waiting()  # PC/SC records by call
        self._entered: OpenCalls[int] = OpenCalls()  # offsets of entries not yet returned
        self._seq_order: array | None = None  # seq -> record, built when first asked
        self._record_seqs: dict[int, int] = {}  # record -> seq, where the two differ
        self._orders_for = -1  # the number of records the two were built for
        self._module_paths = Modules()  # (pid, module index) -> path
        self._data = little_endian(path)  # what is scanned and read: path, or its twin
        self._fd = os.open(self._data, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size

    def close(self) -> None:
        os.close(self._fd)
        if self._data != self.path:
            self._data.unlink(missing_ok=True)

    # -- scanning ------------------------------------------------------------------------------

    def scan(self, cancelled: Callable[[], bool], follow: bool = False) -> None:
        fd = os.open(self._data, os.O_RDONLY)
        try:
            self._scan(fd, cancelled, follow)
        finally:
            os.close(fd)

    def _scan(self, fd: int, cancelled: Callable[[], bool], follow: bool) -> None:
        pos = 0
        skipping: int | None = None  # start of a damaged stretch being skipped
        while not cancelled():
            size = os.fstat(fd).st_size
            self.size = size
            if size - pos < RECORD.size:
                if follow:
                    time.sleep(POLL)
                    continue
                if skipping is not None:
                    self._warn(skipping, "unreadable bytes up to the end of the file")
                elif size > pos:
                    self._warn(pos, f"file ends inside a record header ({size - pos} bytes)")
                break
            buf = os.pread(fd, min(CHUNK, size - pos), pos)
            if skipping is not None:
                nxt = buf.find(MAGIC)
                if nxt < 0:
                    pos += max(0, len(buf) - 3)
                    self.done_bytes = pos
                    if not follow and pos + 3 >= size:
                        self._warn(skipping, "unreadable bytes up to the end of the file")
                        break
                    continue
                self._warn(skipping, f"unreadable bytes ({pos + nxt - skipping} skipped)")
                skipping = None
                pos += nxt
                continue
            used, bad = self._index(buf, pos, size)
            if bad:
                skipping = pos + used
                pos += used + 1
                continue
            if used == 0:  # a record the chunk cannot vouch for: the reader's framing decides
                kind, length = self._frame_at(pos)
                if kind == frames.JUNK:  # a damaged length: only this record is lost
                    self._warn(pos, f"unreadable bytes ({length} skipped)")
                    pos += length
                    self.done_bytes = pos
                    continue
                if kind == frames.RECORD:
                    used, bad = self._index(os.pread(fd, length, pos), pos, pos + length)
                elif follow:  # still being written
                    time.sleep(POLL)
                    continue
                else:
                    length = int.from_bytes(buf[4:8], "little")
                    self._warn(pos, f"file ends inside a record ({size - pos} of {length} "
                                    "bytes)")
                    break
            pos += used
            self.done_bytes = pos
        if not follow and not cancelled():
            self._orphans()
            self.complete = True

    def _frame_at(self, pos: int) -> tuple[int, int]:
        """(kind, length) of what decoder/formats/p11spy/frames.py reads first at pos: for a
        record whose end the scan cannot see followed by another record, whether its length
        is right (RECORD), damaged (JUNK: the bytes up to where the records go on) or runs
        past the end of the file (CUT). It reads no more than the reader would."""
        with open(self._data, "rb") as f:
            f.seek(pos)
            for kind, _offset, data in frames.frames(f):
                return kind, len(data)
        return frames.CUT, 0

    def _index(self, buf: bytes, base: int, size: int) -> tuple[int, bool]:
        """Index the whole records at the start of buf, the file being size bytes long:
        (bytes used, stopped on damage). A record is taken here only when another record
        starts where it ends, or the file ends there (as frames.py trusts a length); it stops
        before one it cannot vouch for, which the caller then asks frames.py about."""
        unpack = RECORD.unpack_from
        hs = RECORD.size
        field = FIELD.unpack_from
        ulong = ULONG.unpack_from
        magic_ok, min_len, max_len = MAGIC, frames.MIN_RECORD, frames.MAX_RECORD
        offsets, kinds, funcs = self.offsets, self.kinds, self.funcs
        threads, sessions, rvs = self.threads, self.sessions, self.rvs
        rows, errors = self.rows, self.errors
        thread_ids, rv_ids, session_ids = self.thread_ids, self.rv_ids, self.session_ids
        fstats, failures, slowest, sws = self._fstats, self._failures, self._slowest, self._sws
        slow_min = slowest[0][0] if len(slowest) >= SLOWEST else -1
        pending = self._pending
        waiting = pending.items
        entered = self._entered
        open_entries = entered.items
        fsize = FIELD.size
        session_len = hs + fsize + 8
        nfn = len(_FN)
        n = len(buf)
        p = 0
        while p + hs <= n:
            magic, length, rtype, _mod, fidx, pid, tid, start_us, dur_ns, rv, number = \
                unpack(buf, p)
            if magic != magic_ok or length < min_len or length > max_len:  # frames.header_ok
                return p, True
            end = p + length
            if not (buf.startswith(magic_ok, end) or end == n == size - base):
                break
            rec = len(kinds)
            tkey = (pid, tid)
            thread = thread_ids.get(tkey)
            if thread is None:
                thread = self.thread_id(pid, tid)
            if rtype == _ENTRY_T:  # listed only if no return closes it (_orphans)
                for given_up, lost in entered.enter(buf[p + 10:p + 32] + buf[p + 48:p + 56],
                                                    base + p):  # logformat.call_key, inlined
                    self._unreturned(given_up, lost)
                p += length
                continue
            if rtype == _PASSED_T:  # the module it was passed on to recorded the call
                entered.leave(call_key(buf, p))
                p += length
                continue
            if rtype == _CALL_T:
                if open_entries:
                    key = buf[p + 10:p + 32] + buf[p + 48:p + 56]  # logformat.call_key, inlined
                    if key in open_entries:
                        entered.leave(key)
                session = NO_ID
                if fidx in _SESSION_FIRST and length >= session_len:
                    param, _ph, kind, _fl, _n = field(buf, p + hs)
                    if param == 0 and kind == _ULONG:
                        skey = (pid, ulong(buf, p + hs + fsize)[0])
                        session = session_ids.get(skey)
                        if session is None:
                            session = self.session_id(*skey)
                elif fidx == _OPEN_SESSION and rv == 0:
                    session = self._opened_session(buf, p, length, pid)
                rid = rv_ids.get(rv)
                if rid is None:
                    rid = self.rv_id(rv)
                failed = rv != 0
                fid = fidx if fidx < nfn else self._unknown
                offsets.append(base + p)
                kinds.append(CALL | ERROR if failed else CALL)
                funcs.append(fid)
                threads.append(thread)
                sessions.append(session)
                rvs.append(rid)
                fs = fstats[fid]
                fs[0] += 1
                fs[2] += dur_ns
                if dur_ns > fs[3]:
                    fs[3] = dur_ns
                if dur_ns > slow_min:
                    if len(slowest) < SLOWEST:
                        heapq.heappush(slowest, (dur_ns, rec))
                    else:
                        heapq.heapreplace(slowest, (dur_ns, rec))
                    slow_min = slowest[0][0] if len(slowest) >= SLOWEST else -1
                if waiting:
                    kids = pending.take((pid, number))
                    if kids:
                        self._adopt(rec, kids)
                if failed:
                    fs[1] += 1
                    fkey = (fid, rv)
                    failures[fkey] = failures.get(fkey, 0) + 1
                    errors.append(rec)
                rows.append(rec)
            elif rtype == _PCSC_T:
                parent, sw = self._pcsc_fields(buf, p, length, fidx)
                is_apdu = fidx == _TRANSMIT
                rid = rv_ids.get(rv)
                if rid is None:
                    rid = self.rv_id(rv)
                kind = APDU if is_apdu else PCSC
                offsets.append(base + p)
                kinds.append(kind | ERROR if rv else kind)
                funcs.append(self._pcsc_base + fidx if fidx < len(pcsc.FUNCTIONS)
                             else self._unknown)
                threads.append(thread)
                sessions.append(NO_ID)
                rvs.append(rid)
                if is_apdu:
                    sws[sw] = sws.get(sw, 0) + 1
                if parent:
                    for (gpid, gone), kids in pending.add((pid, parent), rec, length):
                        self._adopt(self._warn(self.offsets[kids[0]],
                                               p11log.gave_up_waiting(gpid, gone)), kids)
                else:  # outside any PKCS#11 call (opensc-tool): a call of its own
                    rows.append(rec)
                    fid = funcs[-1]
                    fs = fstats[fid]
                    fs[0] += 1
                    fs[2] += dur_ns
                    fs[3] = max(fs[3], dur_ns)
                    if rv:
                        fs[1] += 1
                        failures[(fid, rv)] = failures.get((fid, rv), 0) + 1
                        errors.append(rec)
            else:
                kind = {RecordType.PROCESS: PROCESS, RecordType.MODULE: MODULE,
                        RecordType.MODULE_INFO: MODULE}.get(rtype, WARNING)
                if rtype == RecordType.MODULE:
                    self._module(pid, buf[p + hs:p + length])
                if rtype == RecordType.DROPPED:
                    entered.records_lost(buf[p + 12:p + 16])
                    self.warnings[rec] = p11log.dropped_message(pid, bytes(buf[p:p + length]))
                elif kind == WARNING:
                    self.warnings[rec] = f"byte {base + p}: record of unknown type {rtype}"
                offsets.append(base + p)
                kinds.append(kind)
                funcs.append(self._names[kind])
                threads.append(thread)
                sessions.append(NO_ID)
                rvs.append(self.rv_id(None))
                rows.append(rec)
            p += length
        return p, False

    @property
    def stats(self) -> Summary:
        """The scan's raw counters as a Summary (about a hundred functions: cheap)."""
        st = Summary(top=SLOWEST)
        names = self.func_names
        for fid, (count, errs, total, most) in enumerate(list(self._fstats)):
            if count:
                fs = st.functions[names[fid]] = FunctionStats(count, errs, total / 1000.0,
                                                              most / 1000.0, count)
                if count > errs:
                    fs.rvs["CKR_OK" if fid < self._pcsc_base else "SCARD_S_SUCCESS"] = \
                        count - errs
                st.calls += count
                st.errors += errs
        for fid, n in list(self._never_returned.items()):
            fs = st.functions.setdefault(names[fid], FunctionStats())
            fs.count += n
            fs.errors += n
            fs.rvs[NEVER_RETURNED] += n
            st.calls += n
            st.errors += n
        for (fid, rv), n in list(self._failures.items()):
            fs = st.functions.setdefault(names[fid], FunctionStats())
            name = rv_name(rv) if fid < self._pcsc_base else pcsc_rv_name(rv)
            fs.rvs[name or f"0x{rv:x}"] += n
        for sw, n in list(self._sws.items()):
            st.status_words[sw or "none"] = n
            st.apdus += n
        st.slowest_calls = [(d / 1000.0, r, self.function(r)) for d, r in list(self._slowest)]
        return st

    def inside(self, older_than_s: float) -> list[tuple[str, int | None, float]]:
        """The oldest entries the scan holds open (called from the UI while a followed scan
        runs, so only a few keys are copied; the key says function, thread and start:
        logformat.call_key)."""
        try:
            keys = list(islice(self._entered.items, 8))
        except RuntimeError:  # changed while copied: next time
            return []
        now = time.time()
        out = []
        for key in keys:
            fidx, tid, start_us = (int.from_bytes(key[0:2], "little"),
                                   int.from_bytes(key[6:14], "little"),
                                   int.from_bytes(key[14:22], "little"))
            since = now - start_us / 1e6
            if since >= older_than_s:
                out.append((_FN[fidx].name if fidx < len(_FN) else f"function #{fidx}", tid,
                            since))
        return out

    def _unreturned(self, offset: int, lost: bool = False) -> None:
        """A row for a call that entered and never returned (its ENTRY record at offset), with
        the PC/SC records made under it; lost: its return may be among records that went
        missing (p11log.read says the same)."""
        first = RECORD.size + FIELD.size + 8  # the header and a first ULONG field
        head = os.pread(self._fd, first, offset)
        if len(head) < RECORD.size:
            return
        _m, length, _t, _mod, fidx, pid, tid, _start, _dur, _rv, number = RECORD.unpack(
            head[:RECORD.size])
        rec = len(self.kinds)
        fid = fidx if fidx < len(_FN) else self._unknown
        session = NO_ID
        if fidx in _SESSION_FIRST and length >= first and len(head) == first:
            param, _ph, kind, _fl, _n = FIELD.unpack_from(head, RECORD.size)
            if param == 0 and kind == _ULONG:
                session = self.session_id(pid, ULONG.unpack_from(head, first - 8)[0])
        self.offsets.append(offset)
        self.kinds.append(CALL if lost else CALL | ERROR)
        self.funcs.append(fid)
        self.threads.append(self.thread_id(pid, tid))
        self.sessions.append(session)
        self.rvs.append(self.rv_id(None))
        if lost:
            self._return_lost.add(rec)
        else:
            self.errors.append(rec)
            self._never_returned[fid] = self._never_returned.get(fid, 0) + 1
        kids = self._pending.take((pid, number))
        if kids:
            self._adopt(rec, kids)
        self.rows.append(rec)

    def _opened_session(self, buf: bytes, p: int, length: int, pid: int) -> int:
        for param, phase, kind, _flags, data_off, _n in frames.fields(buf, p, p + length):
            if param == _OPEN_SESSION_OUT and phase == Phase.OUT and kind == Kind.ULONG:
                return self.session_id(pid, ULONG.unpack_from(buf, data_off)[0])
        return NO_ID

    @staticmethod
    def _pcsc_fields(buf: bytes, p: int, length: int, fidx: int) -> tuple[int, str | None]:
        parent, sw = 0, None
        for param, phase, kind, _flags, data_off, n in frames.fields(buf, p, p + length):
            if param == pcsc.PARENT_PARAM and n >= 8:
                parent = ULONG.unpack_from(buf, data_off)[0]
            elif (fidx == _TRANSMIT and param == _RESPONSE_PARAM and phase == Phase.OUT
                  and kind == Kind.BYTES and n >= 2):
                sw = buf[data_off + n - 2:data_off + n].hex().upper()
        return parent, sw

    def _adopt(self, rec: int, kids: list[int]) -> None:
        start = len(self.kid_list)
        self.kid_list.extend(kids)
        self.kid_start.append(start)
        self.kid_end.append(len(self.kid_list))
        self.kid_owner.append(rec)  # last: publishes the group

    def _warn(self, offset: int, message: str) -> int:
        rec = len(self.kinds)
        self.warnings[rec] = f"byte {offset}: {message}"
        self.offsets.append(offset)
        self.kinds.append(WARNING)
        self.funcs.append(self._names[WARNING])
        self.threads.append(NO_ID)
        self.sessions.append(NO_ID)
        self.rvs.append(self.rv_id(None))
        self.rows.append(rec)
        return rec

    def _orphans(self) -> None:
        """Calls that entered and never returned, then PC/SC records of calls that never
        returned in a trace without entry records (under a warning), as p11log.read does."""
        for offset, lost in self._entered.drain():
            self._unreturned(offset, lost)
        for (pid, number), kids in self._pending.drain():
            rec = self._warn(self.offsets[kids[0]], p11log.never_returned(pid, number))
            self._adopt(rec, kids)

    # -- reading one record ------------------------------------------------------------------

    def record_bytes(self, rec: int) -> bytes:
        off = self.offsets[rec]
        head = os.pread(self._fd, 4096, off)
        if self.kinds[rec] == WARNING or head[:4] != MAGIC:
            return b""
        length = int.from_bytes(head[4:8], "little")
        return head[:length] if length <= len(head) else os.pread(self._fd, length, off)

    def _module(self, pid: int, body: bytes) -> None:
        """Which module path a call record's module index names, in this process."""
        try:
            info = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return
        if isinstance(info, dict) and isinstance(info.get("index"), int) and info.get("path"):
            self._module_paths.named(pid, info["index"], str(info["path"]))
            self.modules.add(str(info["path"]))

    def _decode(self, rec: int) -> Event:
        kind = self.kind(rec)
        if kind == WARNING:
            return TraceWarning(seq=rec, message=self.warnings.get(rec, "?"))
        data = self.record_bytes(rec)
        off = self.offsets[rec]
        if kind == CALL:
            call = p11log.decode_call(data, rec, off)
            call.never_returned = call.never_returned and rec not in self._return_lost
            call.module = self._module_paths.get(call.pid or 0, data[9])
            return call
        if kind in (APDU, PCSC):
            return p11log.decode_pcsc(data, rec, off)[1]
        for e in p11log.read(io.BytesIO(data)):
            e.seq = rec
            return e
        return TraceWarning(seq=rec, message=f"byte {off}: unreadable record")

    def record_of_seq(self, seq: int) -> int | None:
        """p11log.read numbers a call's PC/SC records right after the call (they come before
        it in the file): seq order is each row followed by its children."""
        order = self._orders()
        return order[seq] if 0 <= seq < len(order) else None

    def seq_of(self, rec: int) -> int:
        self._orders()
        return self._record_seqs.get(rec, rec)

    def _orders(self) -> array:
        """seq -> record and, where they differ, record -> seq; rebuilt when records were
        added (while the trace is being indexed)."""
        if self._seq_order is None or self._orders_for != len(self.kinds):
            self._orders_for = len(self.kinds)
            order = self._seq_order = self._build_seq_order()
            self._record_seqs = {rec: seq for seq, rec in enumerate(order) if rec != seq}
        return self._seq_order

    def _build_seq_order(self) -> array:
        order = array("I")
        owners, starts, ends, kids = self.kid_owner, self.kid_start, self.kid_end, self.kid_list
        i, n = 0, len(owners)
        for rec in list(self.rows):
            order.append(rec)
            while i < n and owners[i] < rec:
                i += 1
            if i < n and owners[i] == rec:
                order.extend(kids[starts[i]:ends[i]])
        return order

    def kids(self, rec: int) -> Sequence[int]:
        owners = self.kid_owner
        i = bisect_left(owners, rec)
        if i < len(owners) and owners[i] == rec:
            return self.kid_list[self.kid_start[i]:self.kid_end[i]]
        return ()

    def call_of(self, rec: int) -> int:
        owner = self.owner(rec)
        return rec if owner is None else owner

    def owner(self, rec: int) -> int | None:
        """The call a child record belongs to (a linear search: used only by search hits)."""
        kind = self.kind(rec)
        if kind not in (APDU, PCSC):
            return None
        i = self.kid_list.index(rec) if rec in self.kid_list else -1
        if i < 0:
            return None
        j = bisect_right(self.kid_start, i) - 1
        return self.kid_owner[j] if 0 <= j < len(self.kid_owner) else None

    def time_of(self, rec: int) -> float | None:
        if self.kinds[rec] == WARNING:
            return None
        head = os.pread(self._fd, RECORD.size, self.offsets[rec])
        if len(head) < RECORD.size or head[:4] != MAGIC:
            return None
        return RECORD.unpack(head)[7] / 1e6

    def raw(self, rec: int) -> list[str]:
        off = self.offsets[rec]
        if self.kinds[rec] == WARNING:
            return [f"byte {off}: {self.warnings.get(rec, '')}"]
        data = self.record_bytes(rec)
        if len(data) < RECORD.size:
            return [f"byte {off}: unreadable"]
        (_m, length, rtype, mod, fidx, pid, tid, start_us, dur_ns, rv,
         number) = RECORD.unpack_from(data)
        try:
            tname = RecordType(rtype).name
        except ValueError:
            tname = str(rtype)
        lines = [f"record {rec} at byte {off}: {length} bytes, type {tname}, module {mod}, "
                 f"function {fidx}",
                 f"pid {pid} tid {tid} start {format_time(start_us / 1e6)} "
                 f"duration {dur_ns} ns rv 0x{rv:x} call #{number}"]
        for param, phase, kind, _flags, _data_off, n in frames.fields(data):
            try:
                kname = Kind(kind).name
            except ValueError:
                kname = str(kind)
            ph = "in" if phase == Phase.IN else "out"
            lines.append(f"  field param {param} {ph} {kname} ({n} bytes)")
        lines.append("")
        lines += hexdump(data[:RAW_LIMIT], off)
        if len(data) > RAW_LIMIT:
            lines.append(f"... {len(data) - RAW_LIMIT} more bytes")
        return lines

    def raw_find(self, pattern: re.Pattern[bytes] | bytes, start_rec: int,
                 cancelled: Callable[[], bool]) -> int | None:
        if isinstance(pattern, bytes):
            pattern = re.compile(re.escape(pattern))
        if start_rec >= len(self.offsets):
            return None
        pos = self.offsets[start_rec]
        end = self.done_bytes
        while pos < end and not cancelled():
            buf = os.pread(self._fd, min(CHUNK, end - pos), pos)
            if not buf:
                return None
            m = pattern.search(buf)
            if m is not None:
                return bisect_right(self.offsets, pos + m.start()) - 1
            if len(buf) <= OVERLAP or pos + len(buf) >= end:
                return None
            pos += len(buf) - OVERLAP
        return None


def hexdump(data: bytes, base: int = 0, width: int = 16) -> list[str]:
    """Offset, hex and ASCII columns, the way hexdump -C shows bytes."""
    lines = []
    for i in range(0, len(data), width):
        chunk = data[i:i + width]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{base + i:08x}  {chunk.hex(' '):<{width * 3 - 1}}  {text}")
    return lines


__all__ = ["ERROR", "P11Index", "hexdump"]
