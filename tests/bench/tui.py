"""How fast `p11spy show` opens big traces: `python -m tests.bench.tui`.

Why a separate process per measurement: peak RSS (getrusage) only ever grows, so each size is
opened by a fresh `python -m tests.bench.tui --measure FILE`, which runs the app headless at
120x40 and reports when the first rows were rendered, when the index was complete, how long an
errors-only filter took, and its peak RSS.

The traces are real: a small one is recorded by running tests/clients/exercise.py through the
shim over a throw-away SoftHSM2 token (a synthetic card session when that is not possible),
then its records are repeated with only the call numbers rewritten (sample_trace.grow).
Sizes come from P11SPY_BENCH_SIZES (default "100M,1G"); the files go to P11SPY_BENCH_DIR
(default /tmp) and are deleted afterwards.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # first thing: the first screen is timed from the process start

import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    t = text.strip().upper().removesuffix("B")
    if t and t[-1] in UNITS:
        return int(float(t[:-1]) * UNITS[t[-1]])
    return int(t)


def small_trace(dest: Path) -> str:
    """A real trace of exercise.py on SoftHSM2 when possible; says which it made."""
    exercise = REPO / "tests" / "clients" / "exercise.py"
    if exercise.is_file() and Path(SOFTHSM).is_file() and shutil.which("softhsm2-util"):
        try:
            from p11spy.spy.shims import shim_path

            with tempfile.TemporaryDirectory(prefix="p11spy-bench-hsm-") as tmp:
                tokens = Path(tmp) / "tokens"
                tokens.mkdir()
                conf = Path(tmp) / "softhsm2.conf"
                conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                                "log.level = ERROR\n")
                env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
                subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench",
                                "--pin", "1234", "--so-pin", "5678"], env=env, check=True,
                               capture_output=True)
                env |= {"P11SPY_MODULE": SOFTHSM, "P11SPY_OUTPUT": str(dest)}
                subprocess.run([sys.executable, str(exercise), str(shim_path(SOFTHSM)), "1234",
                                "5678"], env=env, check=True, capture_output=True, timeout=120)
            if dest.stat().st_size:
                return "exercise.py over SoftHSM2"
        except (OSError, subprocess.SubprocessError, ImportError):
            pass
    from tests.traces import login_story

    login_story(dest, extra_calls=200)
    return "synthetic card session"


async def _measure(path: Path) -> dict[str, float]:
    from p11spy.tui.app import ShowApp
    from p11spy.tui.call_list import CallList

    first: list[float] = []
    original = CallList.render_line

    def render_line(self: CallList, y: int):  # noqa: ANN202 - the Strip of the original
        strip = original(self, y)
        if not first and len(self.view) and y + int(self.scroll_offset.y) < len(self.view):
            first.append(time.perf_counter())
        return strip

    CallList.render_line = render_line  # type: ignore[method-assign]
    app = ShowApp.for_paths([path])
    out: dict[str, float] = {}
    async with app.run_test(size=(120, 40)) as pilot:
        while not first:
            await pilot.pause(0.005)
        out["first_screen_s"] = first[0] - T0
        tv = app.active()
        while not tv.index.complete:
            await pilot.pause(0.05)
        out["index_s"] = time.perf_counter() - T0
        out["records"] = len(tv.index.kinds)
        t = time.perf_counter()
        await pilot.press("G")  # the last row: decodes the end of the file
        await pilot.pause(0.05)
        out["last_row_s"] = time.perf_counter() - t
        t = time.perf_counter()
        from p11spy.tui.view import Filter

        tv.set_filter(Filter(errors=True))
        while not tv.view.caught_up:
            await pilot.pause(0.02)
        out["errors_filter_s"] = time.perf_counter() - t
        out["error_rows"] = len(tv.view)
        await pilot.press("q")
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def measure(path: Path) -> dict[str, float]:
    return asyncio.run(_measure(path))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--measure"]:
        print(json.dumps(measure(Path(args[1]))))
        return 0
    sizes = [parse_size(s) for s in os.environ.get("P11SPY_BENCH_SIZES", "100M,1G").split(",")
             if s.strip()]
    where = Path(os.environ.get("P11SPY_BENCH_DIR", "/tmp"))
    from tests.traces import grow

    rows = []
    with tempfile.TemporaryDirectory(prefix="p11spy-bench-", dir=where) as tmp:
        small = Path(tmp) / "small.p11"
        source = small_trace(small)
        print(f"source: {source}, {small.stat().st_size} bytes", flush=True)
        for size in sizes:
            big = Path(tmp) / f"big-{size}.p11"
            t = time.perf_counter()
            count = grow(small, big, size)
            made = time.perf_counter() - t
            res = subprocess.run([sys.executable, "-m", "tests.bench.tui", "--measure",
                                  str(big)], capture_output=True, text=True, timeout=3600, cwd=REPO)
            big.unlink()
            if res.returncode:
                print(res.stderr, file=sys.stderr)
                return 1
            m = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append((size, count, made, m))
    print()
    print(f"{'size':>8} {'records':>10} {'first screen':>13} {'full index':>11} "
          f"{'rec/s':>9} {'last row':>9} {'errors filter':>14} {'peak RSS':>9}")
    for size, count, _made, m in rows:
        print(f"{size / (1 << 20):>6.0f}MB {count:>10,} {m['first_screen_s']:>12.2f}s "
              f"{m['index_s']:>10.1f}s {count / m['index_s']:>9,.0f} {m['last_row_s']:>8.2f}s "
              f"{m['errors_filter_s']:>13.2f}s {m['peak_rss_mb']:>7.0f}MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
