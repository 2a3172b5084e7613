"""`make bench`, report part: `p11spy report` on a 100 MB trace, and that page in Chromium.

Issue 17's target: a 100 MB trace still gives a usable page, first paint within 2 s in headless
Chromium. Measured side by side in one run: the time to make the report against `p11spy decode`
of the same file (the floor: reading every event once), the page's size against the trace's,
and in Debian's chromium (playwright with executable_path, as the tests) the first contentful
paint, when the call lists are drawn, when the timeline is drawn, and how long a click on
"first failure" takes to show the call decoded.

Two traces, real ones repeated to the size (tests/traces.grow): the card station's signature
(every call with its APDUs and PC/SC calls under it, fixtures/p11spy/real-card-sign.p11) and
exercise.py over SoftHSM2 (calls only, most of them failing on purpose). Repeated records
decode to the same texts, which the page stores once: a real trace of that size has more
distinct texts, so its page is larger (up to the detail budget, decoder/report/collect.py).
Size: P11SPY_BENCH_REPORT_MB (default 100); files in P11SPY_BENCH_DIR (default /tmp).

Run alone: `python -m tests.bench.report`; prints rows `name  value`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
TARGET_PAINT_MS = 2000
RSS = ("import resource, sys; from p11spy.cli.main import main; rc = main(sys.argv[1:]); "
       "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr); "
       "sys.exit(rc)")


def timed(args: list[str], stdout: int | None = subprocess.DEVNULL) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one p11spy command in a fresh process."""
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", RSS, *args], stdout=stdout,
                         stderr=subprocess.PIPE, text=True, check=True)
    return time.perf_counter() - t, float(res.stderr.strip().splitlines()[-1])


def in_browser(page_path: Path) -> dict[str, float]:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(page_path.as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=120_000)
        marks = {e["name"]: e["startTime"] for e in page.evaluate(
            "performance.getEntriesByType('paint').concat(performance.getEntriesByType('mark'))"
            ".map(e => ({name: e.name, startTime: e.startTime}))")}
        page.check("#failures-only")
        failed = int(page.inner_text("#count").split()[0].replace(",", ""))
        page.uncheck("#failures-only")
        t = time.perf_counter()
        page.click("#first-failure" if failed else "#call-list .row >> nth=0")
        page.wait_for_selector("#detail h3.title")
        click = (time.perf_counter() - t) * 1000
        before = page.inner_text("#count")
        t = time.perf_counter()
        page.fill("#search", "C_Sign")  # filtered 200 ms after the last key, as typed
        expect(page.locator("#count")).not_to_have_text(before, timeout=60_000)
        search = (time.perf_counter() - t) * 1000
        browser.close()
    return {"paint": marks.get("first-contentful-paint", float("nan")),
            "lists": marks.get("p11spy-lists", float("nan")),
            "ready": marks.get("p11spy-ready", float("nan")), "click": click, "search": search}


def rows(root: Path, size: int) -> list[tuple[str, str]]:
    from tests.bench.tui import small_trace
    from tests.traces import grow

    sources = {"card (APDUs)": REPO / "fixtures" / "p11spy" / "real-card-sign.p11"}
    exercise = root / "exercise.p11"
    if small_trace(exercise) == "exercise.py over SoftHSM2":
        sources["SoftHSM2 (calls)"] = exercise
    out: list[tuple[str, str]] = []
    for label, source in sources.items():
        big = root / "big.p11"
        big.unlink(missing_ok=True)
        grow(source, big, size)
        mb = big.stat().st_size / 1e6
        decode_s, decode_rss = timed(["decode", str(big)])
        page = root / "report.html"
        page.unlink(missing_ok=True)
        report_s, report_rss = timed(["report", str(big), "-o", str(page)])
        html_mb = page.stat().st_size / 1e6
        b = in_browser(page)
        out += [
            (f"{label}: trace MB", f"{mb:.1f}"),
            (f"{label}: p11spy decode s", f"{decode_s:.1f}"),
            (f"{label}: p11spy report s", f"{report_s:.1f}"),
            (f"{label}: report / decode time", f"{report_s / decode_s:.2f}"),
            (f"{label}: report peak RSS MB (decode: {decode_rss:.0f})", f"{report_rss:.0f}"),
            (f"{label}: page MB", f"{html_mb:.1f}"),
            (f"{label}: page / trace size", f"{html_mb / mb:.2f}"),
            (f"{label}: first paint ms (target <= {TARGET_PAINT_MS})", f"{b['paint']:.0f}"),
            (f"{label}: call lists drawn ms", f"{b['lists']:.0f}"),
            (f"{label}: timeline drawn ms", f"{b['ready']:.0f}"),
            (f"{label}: click 'first failure' to its detail ms", f"{b['click']:.0f}"),
            (f"{label}: search 'C_Sign' (typed) to the list ms", f"{b['search']:.0f}"),
        ]
        page.unlink()
    return out


def main() -> int:
    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"report bench: {CHROMIUM} is missing (`make setup` installs chromium)")
    size = int(float(os.environ.get("P11SPY_BENCH_REPORT_MB", "100")) * (1 << 20))
    where = os.environ.get("P11SPY_BENCH_DIR", "/tmp")
    with tempfile.TemporaryDirectory(prefix="p11spy-bench-report-", dir=where) as tmp:
        table = rows(Path(tmp), size)
    width = max(len(k) for k, _ in table)
    for k, v in table:
        print(f"  {k:<{width}}  {v:>14}", flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--page"]:  # one page already made: its browser timings
        print(json.dumps(in_browser(Path(sys.argv[2]).resolve())))
    else:
        sys.exit(main())
