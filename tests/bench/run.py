"""`make bench`: what p11spy costs a client, side by side with OpenSC's pkcs11-spy, in one run.

A C client (tests/bench/loop.c) calls SoftHSM2 in a tight loop: directly, through pkcs11-spy
writing to a file, and through p11spy writing to a file (two records per call: the entry before
the module is called, the call when it returns). Each configuration runs ROUNDS times,
interleaved, and the best round counts (the machine is noisy; the best is the least disturbed).
Also measured: throughput with 2 threads against 1, bytes of trace per call, and the wall time
and trace size of a whole exercise run (tests/clients/exercise.py: every function, valid and
invalid calls) under each tracer; the exercise runs only its valid calls there, since
pkcs11-spy crashes on some of the invalid ones (NULL arguments).

Then the decoders (tests/bench/decoders.py: each reader and decode against a regex floor, with
issue 15's targets judged PASS or FAIL, and redact against the reader) and the viewer
(tests/bench/tui.py: first screen, full index and memory for 100 MB and 1 GB traces), the HTML
report (tests/bench/report.py: making it, its size, and its first paint in Chromium for a 100 MB
trace), start-up (tests/bench/startup.py: `p11spy --version` against `python -c pass`,
`p11spy run -- pkcs11-tool -L` against the bare client), and export (tests/bench/exports.py:
perfetto and parquet export, and query, beside a reader pass), and the readers' peak memory on a
hostile trace (tests/bench/hostile.py).
P11SPY_BENCH_ONLY=startup,shim,decoders,tui,report,exports,hostile picks parts (default: all).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
PKCS11_SPY = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so"
CALLS = int(os.environ.get("BENCH_CALLS", "200000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


def shim() -> str:
    from p11spy.spy.shims import shim_path

    return str(shim_path(SOFTHSM))


def setup(root: Path) -> tuple[Path, dict[str, str]]:
    loop = root / "loop"
    subprocess.run(["gcc", "-O2", "-o", str(loop), str(REPO / "tests/bench/loop.c"), "-ldl",
                    "-lpthread"], check=True)
    return loop, token_env(root)


def token_env(root: Path) -> dict[str, str]:
    """The environment of a client of a fresh SoftHSM2 token under root (PIN 1234)."""
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P11SPY", "PKCS11SPY"))}
    env["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin",
                    "1234", "--so-pin", "5678"], check=True, capture_output=True, env=env)
    return env


def configs(root: Path, env: dict[str, str]) -> dict[str, tuple[str, dict[str, str], Path | None]]:
    spy_log = root / "pkcs11-spy.log"
    p11_log = root / "p11spy.p11"
    return {
        "direct": (SOFTHSM, env, None),
        "pkcs11-spy": (PKCS11_SPY, {**env, "PKCS11SPY": SOFTHSM,
                                    "PKCS11SPY_OUTPUT": str(spy_log)}, spy_log),
        "p11spy": (shim(), {**env, "P11SPY_MODULE": SOFTHSM, "P11SPY_OUTPUT": str(p11_log)},
                   p11_log),
    }


def rate(loop: Path, module: str, env: dict[str, str], func: str, threads: int) -> float:
    res = subprocess.run([str(loop), module, "1234", func, str(CALLS), str(threads)], env=env,
                         capture_output=True, text=True, check=True)
    return float(res.stdout)


def main() -> int:
    every = "startup,shim,decoders,tui,report,exports,hostile"
    parts = os.environ.get("P11SPY_BENCH_ONLY", every).split(",")
    if "startup" in parts:
        subprocess.run([sys.executable, str(REPO / "tests/bench/startup.py")], check=True)
        print(flush=True)
    if "shim" in parts:
        shim_table()
    if "decoders" in parts:
        sys.path.insert(0, str(Path(__file__).parent))
        import decoders

        print("\np11spy decoders (one pass per reader or decode in a fresh process, CPU time; "
              "floor: one regex per line)", flush=True)
        with tempfile.TemporaryDirectory(prefix="p11spy-bench-",
                                         dir=os.environ.get("P11SPY_BENCH_DIR")) as tmp:
            table = decoders.rows(Path(tmp))
        print("\n".join(table.lines()), flush=True)
    if "tui" in parts:
        print("\np11spy show (headless at 120x40, a fresh process per size)", flush=True)
        subprocess.run([sys.executable, "-m", "tests.bench.tui"], cwd=REPO, check=True)
    if "report" in parts:
        print("\np11spy report (the page of a 100 MB trace, opened in Debian's chromium)",
              flush=True)
        subprocess.run([sys.executable, "-m", "tests.bench.report"], cwd=REPO, check=True)
    if "exports" in parts:
        print("\np11spy export and query (a fresh process each, beside a plain reader pass)",
              flush=True)
        subprocess.run([sys.executable, "-m", "tests.bench.exports"], cwd=REPO, check=True)
    if "hostile" in parts:
        print("\np11spy readers on a hostile trace (peak RSS of each command, a fresh process; "
              "P11SPY_BENCH_HOSTILE_SIZE, default 2G)", flush=True)
        subprocess.run([sys.executable, "-m", "tests.bench.hostile"], cwd=REPO, check=True)
    return 0


def shim_table() -> None:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="p11spy-bench-") as tmp:
        root = Path(tmp)
        loop, env = setup(root)
        cfg = configs(root, env)
        for func in ("getsessioninfo", "random32"):
            best = {name: 0.0 for name in cfg}
            size = {}
            for _ in range(ROUNDS):
                for name, (module, e, log) in cfg.items():
                    if log:
                        log.unlink(missing_ok=True)
                    best[name] = max(best[name], rate(loop, module, e, func, 1))
                    if log:
                        size[name] = log.stat().st_size / CALLS
            ns = {name: 1e9 / r for name, r in best.items()}
            added = {name: ns[name] - ns["direct"] for name in ("pkcs11-spy", "p11spy")}
            label = {"getsessioninfo": "C_GetSessionInfo", "random32": "C_GenerateRandom(32)"}[func]
            rows.append((f"{label}: direct, ns/call", f"{ns['direct']:.0f}"))
            rows.append((f"{label}: added by pkcs11-spy, ns/call", f"{added['pkcs11-spy']:.0f}"))
            rows.append((f"{label}: added by p11spy (entry + return records), ns/call",
                         f"{added['p11spy']:.0f}"))
            rows.append((f"{label}: p11spy / pkcs11-spy added cost (target <= 0.50)",
                         f"{added['p11spy'] / added['pkcs11-spy']:.2f}"))
            rows.append((f"{label}: log bytes/call, pkcs11-spy", f"{size['pkcs11-spy']:.0f}"))
            rows.append((f"{label}: log bytes/call, p11spy", f"{size['p11spy']:.0f}"))

        # Two threads against one, with the module's own scaling beside it (SoftHSM2 holds a
        # lock of its own in C_GetSessionInfo, so it does not reach 1.00 untraced either).
        scaling = {}
        for name in ("direct", "pkcs11-spy", "p11spy"):
            module, e, log = cfg[name]
            best = {1: 0.0, 2: 0.0}  # threads -> calls/s
            for _ in range(ROUNDS):
                for threads in best:
                    if log:
                        log.unlink(missing_ok=True)
                    best[threads] = max(best[threads],
                                        rate(loop, module, e, "getsessioninfo", threads))
            one, two = best[1], best[2]
            scaling[name] = two / one
            rows.append((f"{name} C_GetSessionInfo calls/s, 1 thread", f"{one:,.0f}"))
            rows.append((f"{name} C_GetSessionInfo calls/s, 2 threads", f"{two:,.0f}"))
        rows.append(("direct (no tracer) 2 threads / 1 thread throughput",
                     f"{scaling['direct']:.2f}"))
        rows.append(("pkcs11-spy 2 threads / 1 thread throughput", f"{scaling['pkcs11-spy']:.2f}"))
        rows.append(("p11spy 2 threads / 1 thread throughput (target >= 1.00)",
                     f"{scaling['p11spy']:.2f}"))

        wall = {}
        for name, (module, e, log) in cfg.items():
            if log:
                log.unlink(missing_ok=True)
            runs = []
            for _ in range(3):
                if log:
                    log.unlink(missing_ok=True)
                t0 = time.perf_counter()
                subprocess.run([sys.executable, str(REPO / "tests/clients/exercise.py"), module,
                                "1234", "5678", "valid"],
                               env=e, check=True, capture_output=True)
                runs.append(time.perf_counter() - t0)
            wall[name] = min(runs)
            if log:
                rows.append((f"exercise run: trace bytes, {name}", f"{log.stat().st_size:,}"))
        for name in cfg:
            rows.append((f"exercise run: wall time s, {name}", f"{wall[name]:.3f}"))
        rows.append(("exercise run: p11spy / pkcs11-spy wall time",
                     f"{wall['p11spy'] / wall['pkcs11-spy']:.2f}"))

    width = max(len(k) for k, _ in rows)
    print(f"p11spy shim ({CALLS:,} calls per run, best of {ROUNDS}, SoftHSM2)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v:>14}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
