"""`make bench`, decoder part: how fast the readers and `decode` go, against a floor measured
in the same run, with issue 15's targets judged PASS or FAIL.

The floor is what the issue names: one compiled regular expression matched on every line of
the file in Python (a reader can hardly do less). Each measurement runs in a fresh process,
which reports its time and peak RSS, so memory is measured per reader and streaming shows as
a peak RSS that stays the same for a file four times smaller.

Times are CPU seconds (user + system) of that process: the machine is shared, and wall time
there measures the neighbours as much as p11spy; for these one-thread passes the two agree on
an idle machine. A reader's time is its pass over the file (what `decode` reads: a format's
read_blocks when it has one, else read; read() of OpenSC logs, a LogLine per line, is shown
too), without the imports; `decode` is timed as a user runs it, start-up included, writing to
/dev/null.

The traces are real fixtures repeated up to the size: OpenSC debug logs over the virtual card
(levels 3 and 9, APDU dumps, VERIFY, GENERAL AUTHENTICATE), p11spy binary traces of the same
card runs (`decode --json` by the compiled decoder, and by the Python reader as
P11SPY_DECODER=python asks), and pkcs11-spy logs over SoftHSM2 and the card. Sizes in MB:
P11SPY_BENCH_DEBUG_MB (default 100; the p11spy traces are as big), P11SPY_BENCH_SPY_MB
(default 630, about what a python-pkcs11 test run through pkcs11-spy writes; 0 leaves
pkcs11-spy out). The OpenSC
measurements run P11SPY_BENCH_ROUNDS times (default 3), the fastest counting. When `p11spy
redact` exists, its speed on the pkcs11-spy file is measured too.

Run alone: `python tests/bench/decoders.py`; prints rows `name  value`, then the targets.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "fixtures"
RUNS = ("list-debug3", "wrong-pin-debug9", "sign-debug9")
DEBUG_SOURCES = [FIX / "opensc-debug" / f"real-0.23-card-{n}.log" for n in RUNS]
P11_SOURCES = [FIX / "p11spy" / f"real-card-{n.rsplit('-', 1)[0]}.p11" for n in RUNS]
SPY_SOURCES = sorted((FIX / "pkcs11-spy").glob("real-0.23-*.log"))
FLOOR = re.compile(rb"^(\S+) (\S+) \[([^\]]*)\] ([^:]+):(\d+):(\w+): (.*)")
MB = 1 << 20
# Runs of each OpenSC debug log measurement, the fastest counting (those ratios are judged
# against limits; one run of each was seen to move the floor by 20% on a busy machine).
ROUNDS = int(os.environ.get("P11SPY_BENCH_ROUNDS", "3"))
SMALL = 4  # the second size for peak RSS: the file divided by this


def build(dest: Path, sources: list[Path], size: int) -> Path:
    """sources concatenated, over and over, to at least size bytes (whole files only)."""
    chunk = b"".join(p.read_bytes() for p in sources)
    with dest.open("wb") as f:
        written = 0
        while written < size:
            f.write(chunk)
            written += len(chunk)
    return dest


def build_p11(dest: Path, sources: list[Path], size: int) -> Path:
    """p11spy traces: each source's records repeated to a share of size (call numbers renumbered,
    tests/traces.py grow), the processes one after the other as in one trace file."""
    sys.path.insert(0, str(REPO))
    from tests.traces import grow

    with dest.open("wb") as f:
        for src in sources:
            part = dest.with_name(dest.name + ".part")
            grow(src, part, size // len(sources))
            f.write(part.read_bytes())
            part.unlink()
    return dest


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _child(kind: str, fmt: str, path: Path) -> dict[str, float]:
    """In this process (a fresh one): the CPU time of one pass, and the peak RSS."""
    n = 0
    if kind == "floor":
        started = _cpu()
        with path.open("rb") as f:
            for line in f:
                FLOOR.match(line)
                n += 1
    elif kind in ("read", "read-lines"):
        from p11spy.decoder.formats.registry import formats

        reader = formats()[fmt]
        read = reader.read if kind == "read-lines" else getattr(reader, "read_blocks",
                                                                  reader.read)
        started = _cpu()
        with path.open("rb") as f:
            for _ in read(f):
                n += 1
    elif kind == "redact":  # what `p11spy redact` does, in this process like the reader
        from p11spy.decoder import redact

        started = _cpu()
        out = path.with_name(path.name + ".redacted")
        with path.open("rb") as fin, out.open("wb") as fout:
            redact.redact(fmt, fin, fout, report=lambda _finding: None)
        out.unlink()
    seconds = _cpu() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "items": n, "rss_mb": rss}


def measure(kind: str, fmt: str, path: Path, rounds: int = 1) -> dict[str, float]:
    return best(rounds, lambda: json.loads(subprocess.run(
        [sys.executable, __file__, "--child", kind, fmt, str(path)], capture_output=True,
        text=True, check=True).stdout))


def best(rounds: int, once: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The fastest of rounds runs (the least disturbed), with the highest peak RSS."""
    runs = [once() for _ in range(rounds)]
    return {**min(runs, key=lambda r: r["seconds"]), "rss_mb": max(r["rss_mb"] for r in runs)}


def p11spy() -> str:
    return str(Path(sys.executable).parent / "p11spy")


def decode(path: Path, *options: str, rounds: int = 1,
           env: dict[str, str] | None = None) -> dict[str, float]:
    """`p11spy decode [options] path` > /dev/null: its CPU time and peak RSS (from wait4)."""
    return best(rounds, lambda: _decode(path, *options, env=env))


def _decode(path: Path, *options: str, env: dict[str, str] | None = None) -> dict[str, float]:
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen([p11spy(), "decode", *options, str(path)], stdout=null,
                                stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        err = proc.stderr.read().decode() if proc.stderr else ""
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"decode {' '.join(options)} {path} failed: {err.strip()}")
    return {"seconds": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


def redact_available() -> bool:
    res = subprocess.run([p11spy(), "redact", "--help"], capture_output=True, text=True)
    return res.returncode == 0


class Table:
    """Rows `name  value`, and the targets: (name, value, limit, at most or at least)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str]] = []
        self.targets: list[tuple[str, float, float, bool]] = []

    def add(self, name: str, value: str) -> None:
        self.rows.append((name, value))

    def target(self, name: str, value: float, limit: float, at_most: bool = True) -> None:
        self.targets.append((name, value, limit, at_most))

    def lines(self) -> list[str]:
        width = max(len(k) for k, _ in self.rows)
        out = [f"  {k:<{width}}  {v:>14}" for k, v in self.rows]
        if self.targets:
            width = max(len(t[0]) for t in self.targets)
            out += ["", f"  {'target':<{width}}  {'value':>8}  {'limit':>8}  result"]
            for name, value, limit, at_most in self.targets:
                ok = value <= limit if at_most else value >= limit
                sign = "<=" if at_most else ">="
                out.append(f"  {name:<{width}}  {value:>8.2f}  {sign}{limit:>6.1f}  "
                           f"{'PASS' if ok else 'FAIL'}")
        return out


def opensc_debug(workdir: Path, size: int, table: Table) -> float:
    """The OpenSC debug log rows; returns decode --json's rate in MB/s."""
    path = build(workdir / "bench-opensc-debug.log", DEBUG_SOURCES, size)
    small = build(workdir / "bench-opensc-debug-small.log", DEBUG_SOURCES, size // SMALL)
    mb, small_mb = path.stat().st_size / MB, small.stat().st_size / MB
    label = f"opensc-debug {mb:.0f} MB"
    floor = measure("floor", "opensc-debug", path, ROUNDS)
    ours = measure("read", "opensc-debug", path, ROUNDS)
    lines = measure("read-lines", "opensc-debug", path, ROUNDS)
    as_json = decode(path, "--json", rounds=ROUNDS)
    as_text = decode(path, rounds=ROUNDS)
    ours_small = measure("read", "opensc-debug", small)
    json_small = decode(small, "--json")
    f = floor["seconds"]
    table.add(f"{label}: regex floor, MB/s", f"{mb / f:.0f}")
    table.add(f"{label}: reader, MB/s ({ours['items']:,} events)", f"{mb / ours['seconds']:.1f}")
    table.add(f"{label}: decode --json, MB/s", f"{mb / as_json['seconds']:.1f}")
    table.add(f"{label}: decode (text), MB/s", f"{mb / as_text['seconds']:.1f}")
    table.add(f"{label}: reader / floor", f"{ours['seconds'] / f:.2f}")
    table.add(f"{label}: read(), a LogLine per line (diagnose, viewer) / floor",
              f"{lines['seconds'] / f:.2f}")
    table.add(f"{label}: decode --json / floor", f"{as_json['seconds'] / f:.2f}")
    table.add(f"{label}: decode / floor", f"{as_text['seconds'] / f:.2f}")
    table.add(f"{label}: reader peak RSS MB, {mb:.0f} MB / {small_mb:.0f} MB file",
              f"{ours['rss_mb']:.0f} / {ours_small['rss_mb']:.0f}")
    table.add(f"{label}: decode --json peak RSS MB, {mb:.0f} MB / {small_mb:.0f} MB file",
              f"{as_json['rss_mb']:.0f} / {json_small['rss_mb']:.0f}")
    table.target("opensc-debug reader / floor", ours["seconds"] / f, 3.0)
    table.target("opensc-debug decode --json / floor", as_json["seconds"] / f, 4.0)
    table.target("opensc-debug decode (text) / floor", as_text["seconds"] / f, 4.0)
    table.target(f"opensc-debug decode --json peak RSS, {mb:.0f} MB / {small_mb:.0f} MB file",
                 as_json["rss_mb"] / json_small["rss_mb"], 1.2)
    for p in (path, small):
        p.unlink()
    return mb / as_json["seconds"]


def p11spy_binary(workdir: Path, size: int, debug_rate: float, table: Table) -> None:
    path = build_p11(workdir / "bench.p11", P11_SOURCES, size)
    small = build_p11(workdir / "bench-small.p11", P11_SOURCES, size // SMALL)
    mb, small_mb = path.stat().st_size / MB, small.stat().st_size / MB
    label = f"p11spy {mb:.0f} MB"
    ours = measure("read", "p11spy", path)
    as_json = decode(path, "--json", rounds=ROUNDS)
    json_small = decode(small, "--json")
    in_python = decode(path, "--json", env={"P11SPY_DECODER": "python"})
    rate = mb / as_json["seconds"]
    table.add(f"{label}: Python reader, MB/s ({ours['items']:,} events)",
              f"{mb / ours['seconds']:.1f}")
    table.add(f"{label}: decode --json by the Python reader, MB/s",
              f"{mb / in_python['seconds']:.1f}")
    table.add(f"{label}: decode --json (the compiled decoder), MB/s", f"{rate:.1f}")
    table.add(f"{label}: decode --json, the Python reader's time / the compiled decoder's",
              f"{in_python['seconds'] / as_json['seconds']:.1f}")
    table.add(f"{label}: decode --json rate / opensc-debug's", f"{rate / debug_rate:.2f}")
    table.add(f"{label}: decode --json peak RSS MB, {mb:.0f} MB / {small_mb:.0f} MB file",
              f"{as_json['rss_mb']:.0f} / {json_small['rss_mb']:.0f}")
    table.target("p11spy decode --json MB/s / opensc-debug's", rate / debug_rate, 3.0,
                 at_most=False)
    table.target(f"p11spy decode --json peak RSS, {mb:.0f} MB / {small_mb:.0f} MB file",
                 as_json["rss_mb"] / json_small["rss_mb"], 1.2)
    for p in (path, small):
        p.unlink()


def pkcs11_spy(workdir: Path, size: int, table: Table) -> None:
    path = build(workdir / "bench-pkcs11-spy.log", SPY_SOURCES, size)
    mb = path.stat().st_size / MB
    label = f"pkcs11-spy {mb:.0f} MB"
    floor = measure("floor", "pkcs11-spy", path)
    ours = measure("read", "pkcs11-spy", path, ROUNDS)
    table.add(f"{label}: regex floor, MB/s", f"{mb / floor['seconds']:.0f}")
    table.add(f"{label}: reader, MB/s ({ours['items']:,} events)", f"{mb / ours['seconds']:.1f}")
    table.add(f"{label}: reader / floor", f"{ours['seconds'] / floor['seconds']:.2f}")
    table.add(f"{label}: reader peak RSS, MB", f"{ours['rss_mb']:.0f}")
    table.target("pkcs11-spy reader / floor", ours["seconds"] / floor["seconds"], 3.0)
    if redact_available():
        # the best of ROUNDS, as the reader's: a single pass of each was seen 0.97 and 1.22
        red = measure("redact", "pkcs11-spy", path, ROUNDS)
        table.add(f"{label}: redact, MB/s (written to a file)", f"{mb / red['seconds']:.1f}")
        table.add(f"{label}: redact / reader", f"{red['seconds'] / ours['seconds']:.2f}")
        table.target("pkcs11-spy redact / reader", red["seconds"] / ours["seconds"],
                     1.0)
    path.unlink()


def rows(workdir: Path) -> Table:
    table = Table()
    debug = int(os.environ.get("P11SPY_BENCH_DEBUG_MB", "100")) * MB
    spy = int(os.environ.get("P11SPY_BENCH_SPY_MB", "630")) * MB
    rate = opensc_debug(workdir, debug, table)
    p11spy_binary(workdir, debug, rate, table)
    if spy:
        pkcs11_spy(workdir, spy, table)
    return table


def bytecode_cache(workdir: Path) -> None:
    """The measured processes keep the bytecode of p11spy's modules in the work directory, as
    an installed p11spy has its modules compiled: where PYTHONDONTWRITEBYTECODE is set, each
    `decode` would compile p11spy's sources again at its start, some 50 ms, a sixth of the
    floor of a 100 MB OpenSC log. One decode of each kind writes the cache before anything is
    measured."""
    os.environ["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for options in ((), ("--json",)):
        for source in (DEBUG_SOURCES[0], P11_SOURCES[0]):
            _decode(source, *options)


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        kind, fmt, path = sys.argv[2:5]
        print(json.dumps(_child(kind, fmt, Path(path))))
        return 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="p11spy-bench-", dir=os.environ.get(
            "P11SPY_BENCH_DIR")) as tmp:
        bytecode_cache(Path(tmp))
        table = rows(Path(tmp))
    print("\n".join(table.lines()))
    print(f"  ({time.perf_counter() - t0:.0f} s; times are CPU seconds of each process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
