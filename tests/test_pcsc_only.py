"""Traces of PC/SC calls alone, made for real: opensc-tool under `p11spy run` with no PC/SC
service, and on the card station with the card pulled in the middle (every later exchange
fails), and libpcscspy's log of the same kind of run (fixtures/pcsc-spy). Their calls carry
the #seq numbers diagnose cites, and their failed calls count for `decode --errors`,
`decode --summary` and the viewer's `e`, as PKCS#11 calls do."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from p11spy.decoder.diagnose import diagnose
from p11spy.decoder.events import Apdu, Call, Event, PcscCall
from p11spy.decoder.formats.registry import open_events
from p11spy.tui.app import ShowApp
from testbed import card_station as station
from tests.test_tui import ready, screen_text, settle

REPO = Path(__file__).resolve().parents[1]
P11SPY = str(Path(sys.executable).parent / "p11spy")
PULLED_SPY = REPO / "fixtures" / "pcsc-spy" / "real-1.9.9-card-pulled-at-verify.raw"
GET_DATA = 0xCB


def p11spy(*args: str) -> str:
    r = subprocess.run([P11SPY, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 1), r.stderr
    return r.stdout


def failed(e: Event) -> bool:
    """A PC/SC call that did not return SCARD_S_SUCCESS, or an exchange whose transmit
    failed (counted plainly, from the events)."""
    return (isinstance(e, PcscCall) and bool(e.rv)) or (isinstance(e, Apdu) and bool(e.error))


def numbers(text: str) -> list[int]:
    """The #seq each block of decode's text starts with."""
    return [int(m) for m in re.findall(r"^\s*#(\d+) ", text, re.MULTILINE)]


def check(path: Path) -> list[Event]:
    """decode, --errors and --summary against the events, and diagnose's citations."""
    events = list(open_events(path))
    assert events and not any(isinstance(e, Call) for e in events)  # PC/SC alone
    shown = numbers(p11spy("decode", str(path)))
    calls = [e for e in events if isinstance(e, PcscCall | Apdu)]
    assert shown == [e.seq for e in calls]
    for f in diagnose(events):
        assert set(f.seqs) <= {e.seq for e in events}
        assert {s for s in f.seqs if s in {c.seq for c in calls}} <= set(shown), f.title
    bad = [e.seq for e in calls if failed(e)]
    assert bad
    assert numbers(p11spy("decode", "--errors", str(path))) == bad
    summary = p11spy("decode", "--summary", str(path))
    assert summary.splitlines()[0] == f"{len(calls)} calls, " \
        f"{sum(isinstance(e, Apdu) for e in calls)} APDUs"
    table = summary[:summary.index("\nreturn values of failing functions:")]
    errors = sum(int(line.split()[2]) for line in table.splitlines()[3:])
    assert errors == len(bad)
    return events


def viewer(path: Path, presses: int) -> tuple[list[int], str]:
    """The records `e` visits, and the screen after the last press."""
    async def run() -> tuple[list[int], str]:
        app = ShowApp.for_paths([path])
        async with app.run_test(size=(100, 30)) as pilot:
            tv = await ready(pilot)
            seen = []
            for _ in range(presses):
                await pilot.press("e")
                await settle(pilot, tv)
                seen.append(tv.index.seq_of(tv.current_record()))
            return seen, screen_text(app)
    return asyncio.run(run())


def test_opensc_tool_without_pcscd(tmp_path: Path) -> None:
    out = tmp_path / "nopcscd.p11"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P11SPY_", "OPENSC"))}
    env["PCSCLITE_CSOCK_NAME"] = str(tmp_path / "no-such-socket")
    r = subprocess.run([P11SPY, "run", "-o", str(out), "--", "opensc-tool", "-l"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert "No smart card readers found." in r.stdout + r.stderr, r.stdout + r.stderr
    events = check(out)
    [bad] = [e for e in events if failed(e)]
    assert bad.function == "SCardEstablishContext" and bad.rv_name == "SCARD_E_NO_SERVICE"
    [f] = [f for f in diagnose(events) if f.severity != "info"]
    assert f.rule == "no-pcsc-service" and f.seqs == [bad.seq]
    assert f"#{bad.seq} SCardEstablishContext(" in p11spy("decode", str(out))
    seen, screen = viewer(out, 2)
    assert seen == [bad.seq, bad.seq] and "1 failed" in screen


@pytest.fixture(scope="module")
def station_traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """opensc-tool -n on the card station under `p11spy run`: once left alone, once with the
    card pulled when GET DATA arrives."""
    w = tmp_path_factory.mktemp("pcsc-only")
    out = {"healthy": w / "name.p11", "pulled": w / "pulled.p11"}
    with station.card_station(w / "station") as b:
        tool = ["opensc-tool", "--reader", b.reader, "-n"]
        r = b.run([P11SPY, "run", "-o", str(out["healthy"]), "--", *tool])
        assert "Personal Identity Verification Card" in r.stdout, r.stdout + r.stderr
        b.remove_when(lambda apdu: apdu.ins == GET_DATA)
        r = b.run([P11SPY, "run", "-o", str(out["pulled"]), "--", *tool])
        assert "Personal Identity Verification Card" not in r.stdout, r.stdout + r.stderr
    return out


def test_opensc_tool_with_the_card_pulled(station_traces: dict[str, Path]) -> None:
    path = station_traces["pulled"]
    events = check(path)
    findings = [f for f in diagnose(events) if f.severity != "info"]
    assert [f.rule for f in findings] == ["card-removed"], [f.title for f in findings]
    # the failure the program gave up on (the last one but polls that timed out) is cited, so
    # no "gave up after" finding stands apart from its cause
    last = [e.seq for e in events if failed(e) and getattr(e, "rv_name", "") != "SCARD_E_TIMEOUT"]
    assert last[-1] in findings[0].seqs
    bad = [e.seq for e in events if failed(e)]
    seen, screen = viewer(path, 3)
    assert seen == bad[:3]
    assert f"{len(bad)} failed" in screen


def test_opensc_tool_on_the_card_is_healthy(station_traces: dict[str, Path]) -> None:
    events = list(open_events(station_traces["healthy"]))
    assert any(isinstance(e, Apdu) and e.sw == "9000" for e in events)
    assert [f.title for f in diagnose(events) if f.severity != "info"] == []


def test_libpcscspy_log_of_a_pulled_card() -> None:
    """fixtures/pcsc-spy: libpcscspy 1.9.9's log of pkcs11-tool's login, the card pulled at
    VERIFY (fixtures/pcsc-spy/regenerate.sh)."""
    events = check(PULLED_SPY)
    [f, *_] = [f for f in diagnose(events) if f.severity != "info"]
    assert f.rule == "card-removed"
    text = p11spy("decode", str(PULLED_SPY))
    for seq in f.seqs:
        assert re.search(rf"^\s*#{seq} ", text, re.MULTILINE), seq
    bad = [e.seq for e in events if failed(e)]
    seen, _ = viewer(PULLED_SPY, 2)
    assert seen == bad[:2]


def test_function_picks_pc_sc_calls_by_name_under_pkcs11_calls() -> None:
    """--function SCardTransmit on pkcs11-tool's wrong PIN on the card station (fixtures/p11spy):
    every exchange, though each was made under a PKCS#11 call, with the #seq diagnose cites."""
    path = REPO / "fixtures" / "p11spy" / "real-card-wrong-pin.p11"
    apdus = [e.seq for e in open_events(path) if isinstance(e, Apdu)]
    assert apdus and numbers(p11spy("decode", "--function", "SCardTransmit", str(path))) == apdus
    login = [e.seq for e in open_events(path) if isinstance(e, Call) and e.function == "C_Login"]
    assert numbers(p11spy("decode", "--function", "C_Login", str(path)))[0] == login[0]
