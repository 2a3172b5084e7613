"""OpenSC's debug log writes the time of day and no date; the reader takes the day from the
file's modification time. That day is a guess: decode's text and the viewer leave it out,
decode's JSON marks it (date_guessed). On a real log: pkcs11-tool over opensc-pkcs11 with
OPENSC_DEBUG=3 and no PC/SC service, the file then dated years back, as a copied log is."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from p11spy.tui.app import ShowApp
from tests.test_tui import ready

P11SPY = str(Path(sys.executable).parent / "p11spy")
OPENSC_MODULE = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
COPIED = 1262347200  # 2010-01-01 12:00 UTC: the day the reader would take


def real_log(tmp_path: Path) -> Path:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P11SPY_", "OPENSC"))}
    env.update(PCSCLITE_CSOCK_NAME=str(tmp_path / "no-such-socket"), OPENSC_DEBUG="3")
    r = subprocess.run(["pkcs11-tool", "--module", OPENSC_MODULE, "-L"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert "C_Initialize" in r.stderr, r.stderr[-1000:]
    log = tmp_path / "opensc.log"
    log.write_text(r.stderr)
    os.utime(log, (COPIED, COPIED))
    return log


def test_no_guessed_date_in_decode(tmp_path: Path) -> None:
    log = real_log(tmp_path)
    text = subprocess.run([P11SPY, "decode", str(log)], capture_output=True, text=True,
                          env={**os.environ, "TZ": "UTC"}).stdout
    heads = [line for line in text.splitlines() if line.startswith("#")]
    assert heads and "2010-" not in text
    assert all("(no date in the trace)" in line for line in heads if " C_" in line)
    rows = [json.loads(line) for line in subprocess.run(
        [P11SPY, "decode", "--json", str(log)], capture_output=True, text=True).stdout.splitlines()]
    timed = [r for r in rows if r.get("time") is not None]
    assert timed and all(r["date_guessed"] is True for r in timed)


def test_no_guessed_date_in_the_viewer(tmp_path: Path, monkeypatch) -> None:
    log = real_log(tmp_path)
    monkeypatch.setenv("TZ", "UTC")

    async def run() -> str:
        app = ShowApp.for_paths([log])
        async with app.run_test(size=(100, 30)) as pilot:
            tv = await ready(pilot)
            return tv.detail_text()

    detail = asyncio.run(run())
    assert "C_" in detail and "2010-" not in detail and "(no date in the trace)" in detail
