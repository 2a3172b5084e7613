"""Peak memory of the readers on a large hostile p11spy trace: `python -m tests.bench.hostile`.

Why: traces come from strangers, and one damaged or hand-made length must not make a reader
hold what it claims (issue 15: at most 100 MB RSS for decode, diagnose, redact and redact
--check on a 2 GB hostile file). The file is built here from the kept corpus's real trace
(tests/hostile_corpus/secrets.p11), in blocks that repeat until the size is reached:

- the trace's records with one length damaged (a few bytes, 16 MiB, the most a record may
  have, 1 GiB);
- a header claiming the largest length a record may have, then that many bytes of zeros with
  record markers in them (every marker a candidate a resynchronisation must try);
- "P11R" and megabytes of zeros, and of random bytes (stretches that are no record);
- records of unknown type and function.

A second file has whole records only, so that `decode --json` reads it with the compiled
decoder too: a real card session's PC/SC calls and a real trace's entry records, repeated
under call numbers that never return, so that every reader would hold all of them if it did
not bound what it keeps waiting.

Each command runs in a fresh process; its peak RSS comes from wait4. The sizes are
P11SPY_BENCH_HOSTILE_SIZE (default 2G; e.g. 200M for a quick run) and
P11SPY_BENCH_WAITING_SIZE (default 200M: those records decode at the reader's speed); the
files go to P11SPY_BENCH_DIR (default /tmp) and are deleted afterwards.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from p11spy.decoder.formats.p11spy import frames
from p11spy.facts import pcsc
from tests.bench.tui import parse_size
from tests.hostile import record_spans

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "tests" / "hostile_corpus" / "secrets.p11"
TARGET_MB = 100
COMMANDS = {
    "decode": ["decode"],
    "decode --json": ["decode", "--json"],
    "diagnose": ["diagnose"],
    "redact": ["redact"],
    "redact --check": ["redact", "--check"],
}


def _damaged(trace: bytes, recs: list[tuple[int, int]], rnd: random.Random) -> bytes:
    """The trace with one record's length, type or function spoiled."""
    out = bytearray(trace)
    off, n = recs[rnd.randrange(1, len(recs))]
    what = rnd.randrange(6)
    if what < 4:
        claim = (n + rnd.choice((-3, 1, 200)), 16 << 20, frames.MAX_RECORD, 0x3FFFFFFF)[what]
        out[off + 4:off + 8] = struct.pack("<I", claim)
    elif what == 4:
        out[off + 8] = rnd.randrange(7, 256)
    else:
        out[off + 10:off + 12] = struct.pack("<H", rnd.randrange(200, 65536))
    return bytes(out)


def _giant_claim(rnd: random.Random) -> bytes:
    """A header claiming MAX_RECORD bytes, and that many zeros with markers every 256 KiB."""
    head = bytearray(64)
    head[0:4] = b"P11R"
    head[4:8] = struct.pack("<I", frames.MAX_RECORD)
    head[8] = 2
    body = bytearray(frames.MAX_RECORD - len(head))
    for at in range(rnd.randrange(1024), len(body) - 8, 256 << 10):
        body[at:at + 4] = b"P11R"
        body[at + 4:at + 8] = struct.pack("<I", rnd.choice((64, 4096, frames.MAX_RECORD)))
    return bytes(head + body)


def build(dest: Path, size: int) -> None:
    trace = BASE.read_bytes()
    recs = record_spans(trace)
    rnd = random.Random(15)
    noise = rnd.randbytes(4 << 20)
    written = 0
    with dest.open("wb") as f:
        f.write(trace)  # a process record first, so the file reads as a p11spy trace
        written += len(trace)
        while written < size:
            parts = [_damaged(trace, recs, rnd) for _ in range(64)]
            parts += [b"P11R" + bytes(8 << 20), trace, b"P11R" + noise, trace]
            parts.append(_giant_claim(rnd))
            parts.append(trace)
            for part in parts:
                f.write(part)
                written += len(part)


CARD = REPO / "fixtures" / "p11spy" / "real-card-sign.p11"
ENTRIES = REPO / "fixtures" / "p11spy" / "real-thread-crashed-in-module.p11"


def _parent_at(rec: bytes) -> int:
    """Where the parent call number of a PC/SC record is (the payload of its PARENT field)."""
    return next(off for param, *_f, off, _n in frames.fields(rec) if param == pcsc.PARENT_PARAM)


def build_waiting(dest: Path, size: int) -> None:
    """Whole records whose calls never return: PC/SC calls and entries, each block under new
    call numbers."""
    card, entries = CARD.read_bytes(), ENTRIES.read_bytes()
    head = b"".join(card[o:o + n] for o, n in record_spans(card) if card[o + 8] in (1, 4))
    pcsc = [bytearray(card[o:o + n]) for o, n in record_spans(card) if card[o + 8] == 5]
    entered = [bytearray(entries[o:o + n]) for o, n in record_spans(entries)
               if entries[o + 8] == 7]
    spots = [_parent_at(r) for r in pcsc]
    number, written = 1 << 40, 0
    with dest.open("wb") as f:
        f.write(head)
        while written < size:
            number += 1
            block = bytearray()
            for rec, at in zip(pcsc, spots, strict=True):
                rec[at:at + 8] = struct.pack("<Q", number)
                block += rec
            for rec in entered:
                rec[48:56] = struct.pack("<Q", number)
                block += rec
            f.write(block)
            written += len(block)


def _peak_kb() -> int:
    """This process's own peak RSS (VmHWM: its address space's high-water mark since exec;
    getrusage would also count what the parent it was forked from held)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _run_measured(out: str, argv: list[str]) -> None:
    """Runs `p11spy ARGV` in this process and writes its peak RSS to out when it ends."""
    import atexit

    from p11spy.cli.main import main

    atexit.register(lambda: Path(out).write_text(str(_peak_kb())))
    sys.exit(main(argv))


def measure(args: list[str], path: Path) -> tuple[float, float, int]:
    """(peak RSS in MB, seconds, exit status) of one command on the file, in a fresh process."""
    with tempfile.NamedTemporaryFile("r", prefix="p11spy-peak-") as peak, \
            open(os.devnull, "wb") as null:
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, "-m", "tests.bench.hostile", "--measure", peak.name,
                             *args, str(path)], stdout=null, stderr=null, cwd=REPO).returncode
        secs = time.perf_counter() - t0
        return int(peak.read() or 0) / 1024, secs, rc


def main() -> int:
    files = (("hostile trace", "hostile.p11", build, "P11SPY_BENCH_HOSTILE_SIZE", "2G"),
             ("calls that never return", "waiting.p11", build_waiting,
              "P11SPY_BENCH_WAITING_SIZE", "200M"))
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="p11spy-hostile-",
                                     dir=os.environ.get("P11SPY_BENCH_DIR")) as tmp:
        for label, name, make, variable, default in files:
            path = Path(tmp) / name
            t0 = time.perf_counter()
            make(path, parse_size(os.environ.get(variable, default)))
            print(f"  {label}: {path.stat().st_size / (1 << 20):,.0f} MiB, built in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
            for command, args in COMMANDS.items():
                rss, secs, rc = measure(args, path)
                worst = max(worst, rss)
                print(f"  {command:<16} peak RSS {rss:7.1f} MB  {secs:7.1f} s  exit {rc}",
                      flush=True)
            path.unlink()
    print(f"  worst peak RSS / {TARGET_MB} MB (target <= 1.00): {worst / TARGET_MB:.2f}",
          flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:
        _run_measured(sys.argv[2], sys.argv[3:])
    sys.exit(main())
