"""A damaged record length costs only that record (review C-1): decode and redact resynchronise
at the next record and keep everything after it, with bounded memory, however large the
length claimed."""

from __future__ import annotations

import resource
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from p11spy.decoder.events import Call
from tests.conftest import REPO, read_trace

P11SPY = str(Path(sys.executable).parent / "p11spy")
TRACE = REPO / "fixtures" / "p11spy" / "real-card-sign.p11"


def _offsets(data: bytes) -> list[int]:
    """Where each record of an intact trace starts."""
    out, off = [], 0
    while off < len(data):
        out.append(off)
        off += struct.unpack_from("<I", data, off + 4)[0]
    return out


def _damaged(tmp_path: Path, index: int, length: int, tail: int = 0) -> tuple[Path, int]:
    """The trace with record `index`'s length set to `length`, and `tail` zero bytes after the
    file (sparse); the seq of the call spoiled, if it was one."""
    data = bytearray(TRACE.read_bytes())
    off = _offsets(bytes(data))[index]
    struct.pack_into("<I", data, off + 4, length)
    path = tmp_path / "damaged.p11"
    path.write_bytes(data)
    if tail:
        with path.open("r+b") as f:
            f.truncate(len(data) + tail)
    return path, off


def _calls(path: Path) -> list[str]:
    return [e.function for e in read_trace(path) if isinstance(e, Call)]


@pytest.mark.parametrize("claim", [0x3FFFFFFF, 0xFFFFFF, +200, +1])
def test_a_damaged_length_loses_only_its_record(tmp_path: Path, claim: int) -> None:
    whole = _calls(TRACE)
    data = TRACE.read_bytes()
    index = 6
    offs = _offsets(data)
    real = offs[index + 1] - offs[index]
    path, _ = _damaged(tmp_path, index, claim if claim > 1000 else real + claim)
    got = _calls(path)
    assert len(got) >= len(whole) - 1, (got, whole)
    assert got == [f for f in whole if f in got] and whole[-1] == got[-1]
    res = subprocess.run([P11SPY, "decode", str(path)], capture_output=True, text=True)
    assert res.returncode == 0 and "unreadable bytes" in res.stdout


def test_redact_keeps_the_records_after_a_damaged_length(tmp_path: Path) -> None:
    path, _ = _damaged(tmp_path, 6, 0x3FFFFFFF)
    out = tmp_path / "red.p11"
    res = subprocess.run([P11SPY, "redact", str(path), "-o", str(out)], capture_output=True)
    assert res.returncode == 0, res.stderr
    assert _calls(out) == _calls(path)
    assert len(out.read_bytes()) == len(path.read_bytes())


def _limited() -> None:
    limit = 400 << 20  # far less than the gigabyte the length claims
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_a_gigabyte_claimed_and_present_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """The length claims 1 GiB and a gigabyte (of zeros, sparse) follows: every command runs
    with its address space limited to 400 MB, and says where the bytes could not be read."""
    path, off = _damaged(tmp_path, 6, 0x3FFFFFFF, tail=1 << 30)
    for cmd in (["decode"], ["diagnose"], ["redact", "--check"]):
        res = subprocess.run([P11SPY, *cmd, str(path)], capture_output=True, text=True,
                             preexec_fn=_limited, timeout=300)
        assert res.returncode in (0, 1), (cmd, res.stderr[-2000:])
        assert "Traceback" not in res.stderr and "MemoryError" not in res.stderr


def _indexed(path: Path) -> tuple[list[str], list[str]]:
    """The calls the viewer's index lists, and its warnings."""
    from p11spy.tui.p11_index import P11Index
    from p11spy.tui.trace_index import CALL

    index = P11Index(path)
    try:
        index.scan(lambda: False)
        return ([index.func_names[index.funcs[i]] for i, k in enumerate(index.kinds)
                 if k & 0xF == CALL], sorted(index.warnings.values()))
    finally:
        index.close()


@pytest.mark.parametrize("claim", [0x3FFFFFFF, 0xFFFFFF, +200, +1, -3])
def test_the_viewer_index_resynchronises_as_the_reader_does(tmp_path: Path, claim: int) -> None:
    """The viewer's index (which reads record headers only) loses the same one record as
    decode, lists the same calls, and says where the bytes could not be read."""
    data = TRACE.read_bytes()
    offs = _offsets(data)
    real = offs[7] - offs[6]
    path, off = _damaged(tmp_path, 6, claim if claim > 1000 else real + claim)
    calls, warnings = _indexed(path)
    assert calls == _calls(path) and len(calls) >= len(_calls(TRACE)) - 1
    assert len(warnings) == 1 and "unreadable bytes" in warnings[0]


def test_the_viewer_index_of_a_gigabyte_claim_is_bounded(tmp_path: Path) -> None:
    path, _ = _damaged(tmp_path, 6, 0x3FFFFFFF, tail=1 << 30)
    code = ("import sys; from pathlib import Path; from tests.test_damaged_lengths import _indexed;"
            "calls, warnings = _indexed(Path(sys.argv[1])); print(len(calls), len(warnings))")
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, preexec_fn=_limited, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == [str(len(_calls(path))), "2"]  # the claim, the zeros at the end


def test_a_large_record_while_a_call_is_open(tmp_path: Path) -> None:
    """A record over a megabyte comes out of the framing as a bytearray; while an entry record
    waits for its return, a large record of a call (real: a 16 MiB buffer; hostile: any) once
    made every reader fail on an unhashable key. It reads, and so does what follows it."""
    entries = (REPO / "fixtures" / "p11spy" / "real-thread-crashed-in-module.p11").read_bytes()
    entry = next(o for o in _offsets(entries) if entries[o + 8] == 7)
    big = bytearray(entries[entry:entry + struct.unpack_from("<I", entries, entry + 4)[0]])
    big[8] = 2  # a call record (the entry's own return, so it closes it)
    big += bytes((2 << 20) - len(big))  # two megabytes: past the framing's chunk
    struct.pack_into("<I", big, 4, len(big))
    path = tmp_path / "big.p11"
    after = entry + struct.unpack_from("<I", entries, entry + 4)[0]  # the entry is open here
    path.write_bytes(entries[:after] + bytes(big) + entries[after:])
    for args in (["decode"], ["decode", "--json"], ["diagnose"], ["redact", "--check"]):
        r = subprocess.run([P11SPY, *args, str(path)], capture_output=True, text=True)
        assert "Traceback" not in r.stderr and r.returncode in (0, 1), (args, r.stderr)
    calls = [e for e in read_trace(path) if isinstance(e, Call)]
    assert len(calls) >= 3
