"""Mutated real traces, in every format, through every reader: events or warnings, never an
exception, a hang or an event that cannot be rendered.

Why mutate real traces rather than make random ones: damage users meet (a file cut by a full
disk, two writers appending at once, a bit flipped by a transfer, a log pasted with a line
lost) keeps most of a trace's structure, and that is where readers take paths that random
bytes never reach. Each format's reader also gets the other formats' traces (the wrong
`--format`).
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p11spy.decoder import render
from p11spy.decoder.events import Event
from p11spy.decoder.formats import registry as commands
from tests.conftest import REPO

FIX = REPO / "fixtures"
# Real traces of each format, small enough to decode many times over.
SAMPLES = {
    "p11spy": [FIX / "p11spy" / "real-card-wrong-pin.p11", FIX / "p11spy" / "real-card-sign.p11",
               FIX / "p11spy" / "cross-s390x.p11"],  # big-endian
    "pkcs11-spy": [FIX / "pkcs11-spy" / "real-0.23-login-wrong-pin.log",
                   FIX / "pkcs11-spy" / "real-0.23-card-wrong-pin.log",
                   FIX / "pkcs11-spy" / "written-0.24-windows-pt-crlf.log",
                   FIX / "pkcs11-spy" / "written-0.13-linux-old-style.log"],
    "opensc-debug": [FIX / "opensc-debug" / "written-0.24-linux-wrong-pin.log",
                     FIX / "opensc-debug" / "written-0.15-linux-old-apdu-dumps.log",
                     FIX / "opensc-debug" / "ref-0.23-windows-cardmod.log",
                     FIX / "opensc-debug" / "written-0.20-linux-two-threads.log"],
}
# The real card logs are large; their first 40 KB (the C_Login with its VERIFY is in the
# wrong-PIN one's last part, so take that) keep hypothesis fast.
CARD_LOG = FIX / "opensc-debug" / "real-0.23-card-wrong-pin-debug9.log"
PCSC_SPY = sorted((FIX / "pcsc-spy").glob("*")) if (FIX / "pcsc-spy").is_dir() else []
SECONDS = 20  # a reader that takes longer on a sample of at most ~40 KB is hanging


def sample_bytes() -> list[tuple[str, bytes]]:
    out = [(fmt, p.read_bytes()) for fmt, paths in SAMPLES.items() for p in paths]
    out.append(("opensc-debug", CARD_LOG.read_bytes()[-40000:]))
    out += [("pcsc-spy", p.read_bytes()[:40000]) for p in PCSC_SPY
            if p.suffix in (".log", ".txt", ".raw")]
    return out


SAMPLE_DATA = sample_bytes()


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def hung(_sig, _frame):
        raise AssertionError(f"reader still busy after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def read_all(fmt: str, data: bytes) -> list[Event]:
    with deadline(SECONDS):
        events = list(commands.formats()[fmt].read(io.BytesIO(data)))
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    for e in events:
        json.dumps(e.to_json())
    render.text(iter(events), io.StringIO())  # what `decode` prints must print
    return events


# One mutation: (kind, position as a fraction of the length, size, filler byte)
MUTATION = st.tuples(st.sampled_from(["flip", "cut", "delete", "insert", "repeat", "swap"]),
                     st.floats(0, 1), st.integers(1, 300), st.integers(0, 255))


def mutate(data: bytes, steps: list[tuple[str, float, int, int]]) -> bytes:
    b = bytearray(data)
    for kind, where, size, filler in steps:
        if not b:
            break
        i = min(int(where * len(b)), len(b) - 1)
        if kind == "flip":
            b[i] ^= 1 << (filler % 8)
        elif kind == "cut":
            del b[i:]
        elif kind == "delete":
            del b[i:i + size]
        elif kind == "insert":
            b[i:i] = bytes([filler]) * size
        elif kind == "repeat":
            b[i:i] = b[i:i + size]
        elif kind == "swap":  # two writers: a block moved elsewhere
            block = b[i:i + size]
            del b[i:i + size]
            j = int((1 - where) * len(b))
            b[j:j] = block
    return bytes(b)


@settings(max_examples=1000, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sample=st.sampled_from(range(len(SAMPLE_DATA))), steps=st.lists(MUTATION, max_size=6))
def test_mutated_trace_reads_in_its_own_format(sample: int, steps) -> None:
    fmt, data = SAMPLE_DATA[sample]
    read_all(fmt, mutate(data, steps))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sample=st.sampled_from(range(len(SAMPLE_DATA))), steps=st.lists(MUTATION, max_size=3),
       other=st.sampled_from(sorted(commands.formats())))
def test_mutated_trace_read_as_another_format(sample: int, steps, other: str) -> None:
    """The wrong --format: whatever comes out is events and warnings."""
    _fmt, data = SAMPLE_DATA[sample]
    read_all(other, mutate(data, steps))


def test_every_format_has_samples() -> None:
    assert set(SAMPLES) | ({"pcsc-spy"} if PCSC_SPY else set()) >= \
        set(commands.formats()) - ({"pcsc-spy"} if not PCSC_SPY else set())


@pytest.mark.parametrize("damage", ["cut", "flip-header", "garbage-middle"])
@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_decode_command_on_damaged_traces(fmt: str, damage: str, tmp_path: Path) -> None:
    """Through the command, as a user runs it: exit 0 with what could be read (and warnings),
    or one line on stderr and a non-zero exit; never a traceback."""
    data = SAMPLES[fmt][0].read_bytes()
    if damage == "cut":
        data = data[: len(data) * 2 // 3 + 7]
    elif damage == "flip-header":
        data = bytes([data[0] ^ 0xFF]) + data[1:]
    else:
        mid = len(data) // 2
        data = data[:mid] + bytes(range(256)) * 4 + data[mid:]
    path = tmp_path / "damaged"
    path.write_bytes(data)
    res = subprocess.run([str(Path(sys.executable).parent / "p11spy"), "decode", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert "Traceback" not in res.stderr + res.stdout
    if res.returncode:
        assert res.stderr.count("\n") == 1 and res.stdout == "", res.stderr
    else:
        assert res.stdout
