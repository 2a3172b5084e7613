"""`make bench`, start-up part: what p11spy's own start costs, against the floor, in one run.

Issue 12's targets: `p11spy --version` within 60 ms (the floor: `python -c pass` of the same
interpreter, site and all), and `p11spy run` adding at most 60 ms around a client (the floor:
the same client run bare). The client is pkcs11-tool listing SoftHSM2's slots, a real one that
starts in a few milliseconds, so p11spy's share shows. Each command runs ROUNDS times,
interleaved, and the best run counts (the machine is shared; the best is the least disturbed).

Run alone: `python tests/bench/startup.py`; prints rows `name  value`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import token_env  # tests/bench/run.py: `make bench`'s main, beside this file

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
PRELOAD = Path(__file__).resolve().parents[2] / "spy" / "libp11spy-preload.so"
ROUNDS = int(os.environ.get("BENCH_STARTUP_ROUNDS", "20"))
TARGET_MS = 60


def best_ms(commands: dict[str, list[str]], env: dict[str, str]) -> dict[str, float]:
    best = dict.fromkeys(commands, float("inf"))
    for _ in range(ROUNDS):
        for name, argv in commands.items():
            t0 = time.perf_counter()
            subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            best[name] = min(best[name], (time.perf_counter() - t0) * 1000)
    return best


def rows(root: Path) -> list[tuple[str, str]]:
    p11spy = str(Path(sys.executable).parent / "p11spy")
    env = token_env(root)
    client = ["pkcs11-tool", "--module", SOFTHSM, "-L"]
    # The client with the preloaded spy alone (what `run` sets up, without run): the part of
    # the difference that is the shim's, in the client, rather than run's own start.
    preload = ["env", f"LD_PRELOAD={PRELOAD}", f"P11SPY_OUTPUT={root / 'pre-%p.p11'}", *client]
    ms = best_ms({
        "python": [sys.executable, "-c", "pass"],
        "version": [p11spy, "--version"],
        "client": client,
        "preload": preload,
        "env": ["env", *client],
        "run": [p11spy, "run", "-o", str(root / "%n-%p.p11"), "--", *client],
    }, env)
    if not list(root.glob("pkcs11-tool-*.p11")):
        raise SystemExit("startup bench: p11spy run left no trace of pkcs11-tool")
    return [
        ("python -c pass, ms", f"{ms['python']:.1f}"),
        (f"p11spy --version, ms (target <= {TARGET_MS})", f"{ms['version']:.1f}"),
        ("p11spy --version / python -c pass", f"{ms['version'] / ms['python']:.2f}"),
        ("pkcs11-tool -L (SoftHSM2) bare, ms", f"{ms['client']:.1f}"),
        ("p11spy run -- pkcs11-tool -L, ms", f"{ms['run']:.1f}"),
        ("p11spy run: added around the client, ms", f"{ms['run'] - ms['client']:.1f}"),
        ("  of which the preloaded shim in the client (env LD_PRELOAD=... against env), ms",
         f"{ms['preload'] - ms['env']:.1f}"),
        (f"  of which p11spy run's own start and finish, ms (target <= {TARGET_MS})",
         f"{ms['run'] - ms['client'] - (ms['preload'] - ms['env']):.1f}"),
    ]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="p11spy-bench-") as tmp:
        table = rows(Path(tmp))
    width = max(len(k) for k, _ in table)
    print(f"p11spy start-up (best of {ROUNDS}, interleaved)")
    for k, v in table:
        print(f"  {k:<{width}}  {v:>10}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
