"""`make bench`, export part: how fast `export --format perfetto|parquet` and `query` go, side
by side with the reader they start from, on one big real trace.

The trace is a real card run (fixtures/p11spy/real-card-sign.p11: calls, APDUs, PC/SC calls)
repeated up to P11SPY_BENCH_EXPORT_MB (default 100) with tests/traces.grow. Each command runs in
a fresh process, P11SPY_BENCH_EXPORT_ROUNDS times (default 2) interleaved, and the best round
counts (the machine is shared and noisy; the best is the least disturbed). The ratios to a plain
reader pass are the targets (an export does the reader's work and writes the rows: it should
cost a small multiple of it).

Run alone: `python -m tests.bench.exports`; prints rows `name  value`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "fixtures" / "p11spy" / "real-card-sign.p11"
P11SPY = str(Path(sys.executable).parent / "p11spy")
READ = ("import sys\nfrom pathlib import Path\n"
        "from p11spy.decoder.formats.registry import open_events\n"
        "for _ in open_events(Path(sys.argv[1])): pass\n")


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - started


def rows(workdir: Path) -> list[tuple[str, str]]:
    sys.path.insert(0, str(REPO))
    from tests.traces import grow

    mb = 1 << 20
    trace = workdir / "big.p11"
    grow(SOURCE, trace, int(os.environ.get("P11SPY_BENCH_EXPORT_MB", "100")) * mb)
    size = trace.stat().st_size / mb
    label = f"p11spy trace {size:.0f} MB"
    sql = ("SELECT function, rv_name, count(*) FROM events WHERE type = 'call' AND failed "
           "GROUP BY ALL")
    commands = {
        "read": [sys.executable, "-c", READ, str(trace)],
        "perfetto": [P11SPY, "export", "--format", "perfetto", str(trace), "-o",
                     str(workdir / "big.json")],
        "parquet": [P11SPY, "export", "--format", "parquet", str(trace), "-o",
                    str(workdir / "big.parquet")],
        "query_pq": [P11SPY, "query", sql, str(workdir / "big.parquet")],
        "query_trace": [P11SPY, "query", sql, str(trace)],
    }
    best = dict.fromkeys(commands, float("inf"))
    for _ in range(int(os.environ.get("P11SPY_BENCH_EXPORT_ROUNDS", "2"))):
        for name, cmd in commands.items():
            best[name] = min(best[name], timed(cmd))
    read, perfetto, parquet = best["read"], best["perfetto"], best["parquet"]
    query_pq, query_trace = best["query_pq"], best["query_trace"]
    return [
        (f"{label}: reader, MB/s", f"{size / read:.1f}"),
        (f"{label}: export perfetto, MB/s ({(workdir / 'big.json').stat().st_size / mb:.0f} "
         "MB JSON)", f"{size / perfetto:.1f}"),
        (f"{label}: export parquet, MB/s ({(workdir / 'big.parquet').stat().st_size / mb:.1f} "
         "MB Parquet)", f"{size / parquet:.1f}"),
        (f"{label}: export perfetto / reader time (target <= 4.0)", f"{perfetto / read:.2f}"),
        (f"{label}: export parquet / reader time (target <= 4.0)", f"{parquet / read:.2f}"),
        (f"{label}: query over its Parquet, seconds", f"{query_pq:.2f}"),
        (f"{label}: query over the trace itself, seconds", f"{query_trace:.2f}"),
    ]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="p11spy-bench-", dir=os.environ.get(
            "P11SPY_BENCH_DIR")) as tmp:
        table = rows(Path(tmp))
    width = max(len(k) for k, _ in table)
    for k, v in table:
        print(f"  {k:<{width}}  {v:>14}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
