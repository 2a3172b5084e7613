"""`p11spy show`: `r` shows the trace as `p11spy redact` writes it (and back), `x` exports it
next to the trace; both on a real pkcs11-spy log with a PIN and an OpenSC log with a VERIFY."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from p11spy.decoder import redact
from tests.conftest import REPO

pytest.importorskip("textual")

from p11spy.tui.app import ShowApp  # noqa: E402
from tests.test_tui import ready, screen_text, settle, sync, utc  # noqa: E402, F401 - fixtures

SPY_WRONG_PIN = REPO / "fixtures" / "pkcs11-spy" / "real-0.23-login-wrong-pin.log"
OPENSC_WRONG_PIN = REPO / "fixtures" / "opensc-debug" / "written-0.24-linux-wrong-pin.log"
SIZE = (100, 30)


def copy(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / src.name
    dest.write_bytes(src.read_bytes())
    return dest


@sync
async def _redacted_view_and_back(trace: Path, secret: str,
                                  keys: str | tuple[str, ...] = "e") -> None:
    app = ShowApp.for_paths([trace])
    async with app.run_test(size=SIZE) as pilot:
        tv = await ready(pilot)
        await pilot.press(*keys)  # the failed login, its PIN in the detail pane
        await settle(pilot, tv)
        assert secret in tv.detail_text()
        await pilot.press("r")
        for _ in range(300):
            await pilot.pause(0.01)
            if app.active() is not tv:
                break
        red = await ready(pilot)
        assert red is not tv and red.index.path.name == trace.stem + ".redacted.log"
        assert "redacted view" in screen_text(app)
        assert red.index.stats.calls == tv.index.stats.calls  # the same calls
        await pilot.press(*keys)
        await settle(pilot, red)
        assert secret not in red.detail_text()
        assert "CKR_PIN_INCORRECT" in red.detail_text() or "2A 2A 2A 2A 2A 2A" in \
            red.detail_text()
        await pilot.press("r")
        for _ in range(300):
            await pilot.pause(0.01)
            if app.active() is not red:
                break
        back = await ready(pilot)
        assert back.index.path == trace
        await pilot.press(*keys)
        await settle(pilot, back)
        assert secret in back.detail_text()


def test_redacted_view_of_a_pkcs11_spy_log(tmp_path: Path) -> None:
    # pkcs11-spy dumped the wrong PIN 000000; decoded, it shows as its hex
    _redacted_view_and_back(copy(SPY_WRONG_PIN, tmp_path), "303030303030")


def test_redacted_view_of_an_opensc_log(tmp_path: Path) -> None:
    # OpenSC logged the VERIFY with the PIN 123459 in clear: the raw record (r) shows it
    _redacted_view_and_back(copy(OPENSC_WRONG_PIN, tmp_path), "31 32 33 34 35 39",
                            ("e", "enter", "down", "o"))


@sync
async def test_x_exports_the_redacted_trace_next_to_it(tmp_path: Path) -> None:
    trace = copy(SPY_WRONG_PIN, tmp_path)
    app = ShowApp.for_paths([trace])
    async with app.run_test(size=SIZE) as pilot:
        tv = await ready(pilot)
        await pilot.press("x")
        out = tmp_path / "real-0.23-login-wrong-pin.redacted.log"
        for _ in range(300):
            await pilot.pause(0.01)
            if "wrote" in tv.message:
                break
        assert "1 place(s) masked" in tv.message
    assert out.is_file() and stat.S_IMODE(out.stat().st_mode) == 0o600
    with out.open("rb") as f:
        assert redact.check("pkcs11-spy", f) == []
    assert trace.read_bytes() == SPY_WRONG_PIN.read_bytes()
