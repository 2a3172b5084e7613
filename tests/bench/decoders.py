"""`make bench`, decoder part: how fast the readers go, against a floor measured in the same run.

The floor is what the issue names: one compiled regular expression matched on every line of
the file in Python (a reader can hardly do less). Each reader reads the whole file into events
(what `decode`, the summary and the viewer all start from) in a fresh process, which reports
its time and peak RSS, so memory is measured per reader and streaming shows as a flat RSS.

The traces are real fixtures repeated up to the size: OpenSC debug logs over the virtual card
(levels 3 and 9, APDU dumps, VERIFY, GENERAL AUTHENTICATE), and pkcs11-spy logs over SoftHSM2
and the card. Sizes: P11SPY_BENCH_DEBUG_MB (default 100) and P11SPY_BENCH_SPY_MB (default 630,
about what a python-pkcs11 test run through pkcs11-spy writes). When `p11spy redact` exists,
its speed on the same files is measured too (it must be at least as fast as decoding).

Run alone: `python tests/bench/decoders.py`; prints rows `name  value`.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "fixtures"
DEBUG_SOURCES = [FIX / "opensc-debug" / f"real-0.23-card-{n}.log"
                 for n in ("list-debug3", "wrong-pin-debug9", "sign-debug9")]
SPY_SOURCES = sorted((FIX / "pkcs11-spy").glob("real-0.23-*.log"))
FLOOR = re.compile(rb"^(\S+) (\S+) \[([^\]]*)\] ([^:]+):(\d+):(\w+): (.*)")


def build(dest: Path, sources: list[Path], size: int) -> Path:
    """sources concatenated, over and over, to at least size bytes (whole files only)."""
    chunk = b"".join(p.read_bytes() for p in sources)
    with dest.open("wb") as f:
        written = 0
        while written < size:
            f.write(chunk)
            written += len(chunk)
    return dest


def _child(kind: str, fmt: str, path: Path) -> dict[str, float]:
    """In this process (a fresh one): time one pass, and the peak RSS."""
    started = time.perf_counter()
    n = 0
    if kind == "floor":
        with path.open("rb") as f:
            for line in f:
                FLOOR.match(line)
                n += 1
    elif kind == "read":
        from p11spy.decoder.formats.registry import formats

        with path.open("rb") as f:
            for _ in formats()[fmt].read(f):
                n += 1
    elif kind == "redact":  # what `p11spy redact` does, in this process like the reader
        from p11spy.decoder import redact

        out = path.with_name(path.name + ".redacted")
        with path.open("rb") as fin, out.open("wb") as fout:
            redact.redact(fmt, fin, fout, report=lambda _finding: None)
        out.unlink()
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "items": n, "rss_mb": rss}


def measure(kind: str, fmt: str, path: Path) -> dict[str, float]:
    res = subprocess.run([sys.executable, __file__, "--child", kind, fmt, str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def redact_available() -> bool:
    res = subprocess.run([str(Path(sys.executable).parent / "p11spy"), "redact", "--help"],
                         capture_output=True, text=True)
    return res.returncode == 0


def rows(workdir: Path) -> list[tuple[str, str]]:
    mb = 1 << 20
    sizes = {"opensc-debug": int(os.environ.get("P11SPY_BENCH_DEBUG_MB", "100")) * mb,
             "pkcs11-spy": int(os.environ.get("P11SPY_BENCH_SPY_MB", "630")) * mb}
    sources = {"opensc-debug": DEBUG_SOURCES, "pkcs11-spy": SPY_SOURCES}
    with_redact = redact_available()
    out: list[tuple[str, str]] = []
    for fmt, size in sizes.items():
        path = build(workdir / f"bench-{fmt}.log", sources[fmt], size)
        real = path.stat().st_size
        label = f"{fmt} {real / mb:.0f} MB"
        floor = measure("floor", fmt, path)
        ours = measure("read", fmt, path)
        out.append((f"{label}: regex floor, MB/s", f"{real / mb / floor['seconds']:.0f}"))
        out.append((f"{label}: reader, MB/s ({ours['items']:,} events)",
                    f"{real / mb / ours['seconds']:.1f}"))
        out.append((f"{label}: reader / floor time (target <= 3.0)",
                    f"{ours['seconds'] / floor['seconds']:.2f}"))
        out.append((f"{label}: reader peak RSS, MB", f"{ours['rss_mb']:.0f}"))
        if with_redact:
            red = measure("redact", fmt, path)
            out.append((f"{label}: redact, MB/s (written to a file)",
                        f"{real / mb / red['seconds']:.1f}"))
            out.append((f"{label}: redact / reader time (target <= 1.0)",
                        f"{red['seconds'] / ours['seconds']:.2f}"))
        path.unlink()
    return out


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        kind, fmt, path = sys.argv[2:5]
        print(json.dumps(_child(kind, fmt, Path(path))))
        return 0
    with tempfile.TemporaryDirectory(prefix="p11spy-bench-", dir=os.environ.get(
            "P11SPY_BENCH_DIR")) as tmp:
        table = rows(Path(tmp))
    width = max(len(k) for k, _ in table)
    for k, v in table:
        print(f"  {k:<{width}}  {v:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
