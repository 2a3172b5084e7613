"""`p11spy diagnose` on real card traces: OpenSC's pkcs11-tool under `p11spy run` against the
virtual PIV card of the card station (testbed/card_station.py), through a real pcscd.

One station for the module (it serialises on a lock and takes seconds to start), one trace per
situation, made in this order: the right PIN in EBCDIC; a healthy signature; a card no
configured driver takes; a logged-in session held open while another process resets the card
(SCardDisconnect with SCARD_RESET_CARD), once with OpenSC's PIN cache (it recovers), once
without (the next signature fails), and once held without a reset; the card pulled in the
middle of a signature; wrong PINs until the PIN is blocked (63C2, 63C1, 63C0, then 6983), the
last one also logged with OPENSC_DEBUG=9.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from p11spy.decoder import codes
from p11spy.decoder.diagnose import Finding, diagnose
from p11spy.decoder.events import Apdu, Call, Event, LogLine, PcscCall
from p11spy.decoder.formats.registry import open_events
from testbed import card_station as station
from testbed import pcsc

P11SPY = str(Path(sys.executable).parent / "p11spy")
WRONG = "999999"
SESSION_CLIENT = Path(__file__).parent / "clients" / "session_client.py"
SCARD_RESET_CARD = 1


@dataclass
class CardTraces:
    ebcdic: Path
    healthy: Path
    unknown: Path
    unknown_debug: Path
    unknown_listing: Path
    unknown_listing_debug: Path
    removed: Path
    reset_recovered: Path
    reset_failed: Path
    held: Path
    held_answers: dict[str, list[str]]
    long_pin: Path
    pins: Path
    debug_log: Path
    atr: str
    card_pin_tries: int


def _run(b: station.CardStation, out: Path, *args: str, **env: str):
    return b.run([P11SPY, "run", "-o", str(out), "--", "pkcs11-tool", "--module", b.module,
                  *args], **env)


def reset_card(reader: str) -> None:
    """What another program does to the card: connect (shared) and disconnect resetting it."""
    with pcsc.Context() as ctx:
        card, proto = pcsc.LONG(), pcsc.DWORD()
        rv = ctx.lib.SCardConnect(ctx.handle, reader.encode(), pcsc.SCARD_SHARE_SHARED,
                                  pcsc.SCARD_PROTOCOL_T0 | pcsc.SCARD_PROTOCOL_T1,
                                  ctypes.byref(card), ctypes.byref(proto))
        if rv:
            raise pcsc.PcscError("SCardConnect", rv)
        rv = ctx.lib.SCardDisconnect(card, SCARD_RESET_CARD)
        if rv:
            raise pcsc.PcscError("SCardDisconnect", rv)


def held_session(b: station.CardStation, out: Path, reset: bool, **env: str) -> list[str]:
    """tests/clients/session_client.py under `p11spy run`: logs in and signs, holds the session
    while the card is reset (if reset), signs again; returns what it printed."""
    p = subprocess.Popen([P11SPY, "run", "-o", str(out), "--", sys.executable,
                          str(SESSION_CLIENT), b.module, b.token_label, b.pin],
                         env={**b.env, **env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        first = p.stdout.readline().strip()
        assert first == "ready", (first, p.communicate(timeout=30))
        if reset:
            reset_card(b.reader)
        stdout, stderr = p.communicate("\n", timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, stderr[-2000:]
    return [first, *stdout.splitlines()]


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CardTraces]:
    w = tmp_path_factory.mktemp("diagnose-card")
    data = w / "data"
    data.write_bytes(b"sign me" * 8)
    sign = ("--sign", "--id", "01", "-m", "SHA256-RSA-PKCS", "-i", str(data), "-o",
            str(w / "sig"))
    with station.card_station(w / "station") as b:
        # the right digits in EBCDIC, as a z/OS program would hand them over
        ebcdic = os.fsdecode(b.pin.encode("cp037"))
        r = _run(b, w / "ebcdic.p11", "--login", "--pin", ebcdic, "-O")
        assert "CKR_PIN_INCORRECT" in r.stderr, r.stderr
        # the right PIN (which also resets the retry counter)
        r = _run(b, w / "healthy.p11", "--login", "--pin", b.pin, *sign)
        assert r.returncode == 0, r.stderr
        # OpenSC limited to a driver that does not take a PIV card
        conf = station.write_opensc_conf(w / "openpgp-only.conf", {"card_drivers": "openpgp"})
        r = _run(b, w / "unknown.p11", "-L", OPENSC_CONF=str(conf), OPENSC_DEBUG="7")
        assert r.returncode == 0, r.stderr[-2000:]
        (w / "unknown-debug7.log").write_text(r.stderr)
        # the same card, listed by a client that asks only for slots with a token
        r = _run(b, w / "unknown-T.p11", "-I", "-T", OPENSC_CONF=str(conf), OPENSC_DEBUG="3")
        assert "Available slots:" in r.stdout and "Slot 0" not in r.stdout, r.stdout
        (w / "unknown-T-debug3.log").write_text(r.stderr)
        # a session held open while another program resets the card
        answers = {"recovered": held_session(b, w / "reset.p11", reset=True)}
        nocache = station.write_opensc_conf(w / "no-pin-cache.conf",
                                          pkcs15={"use_pin_caching": "false"})
        answers["failed"] = held_session(b, w / "reset-no-pin-cache.p11", reset=True,
                                         OPENSC_CONF=str(nocache))
        answers["held"] = held_session(b, w / "held.p11", reset=False)
        # pulled when the signature command (GENERAL AUTHENTICATE) arrives
        b.remove_when(lambda apdu: apdu.ins == 0x87)
        r = _run(b, w / "removed.p11", "--login", "--pin", b.pin, *sign)
        assert r.returncode != 0
        b.wait_removed()
        b.insert()
        # nine digits: longer than the token's ulMaxPinLen, refused before reaching the card
        r = _run(b, w / "long.p11", "--login", "--pin", "123456789", "-O")
        assert "CKR_PIN_LEN_RANGE" in r.stderr, r.stderr
        for _ in range(3):
            r = _run(b, w / "pins.p11", "--login", "--pin", WRONG, "-O")
            assert "CKR_PIN_INCORRECT" in r.stderr, r.stderr
        r = _run(b, w / "pins.p11", "--login", "--pin", b.pin, "-O", OPENSC_DEBUG="9")
        assert "CKR_PIN_LOCKED" in r.stderr, r.stderr[-2000:]
        debug = w / "locked-debug9.log"
        debug.write_text(r.stderr)
        made = CardTraces(w / "ebcdic.p11", w / "healthy.p11", w / "unknown.p11",
                          w / "unknown-debug7.log", w / "unknown-T.p11",
                          w / "unknown-T-debug3.log", w / "removed.p11", w / "reset.p11",
                          w / "reset-no-pin-cache.p11", w / "held.p11", answers,
                          w / "long.p11",
                          w / "pins.p11", debug, b.card.atr.hex().upper(), b.card.pin_tries)
    yield made  # the station is down again: its lock is free for the other tests


def diagnosed(path: Path) -> tuple[list[Finding], dict[int, Event]]:
    events = list(open_events(path))
    findings = diagnose(events)
    by_seq = {e.seq: e for e in events}
    for f in findings:
        assert all(s in by_seq for s in f.seqs), f
    return findings, by_seq


def above_info(findings: list[Finding]) -> set[str]:
    return {f.rule for f in findings if f.severity != "info"}


def one(findings: list[Finding], rule: str) -> Finding:
    [f] = [f for f in findings if f.rule == rule]
    return f


def test_healthy_card_signature_has_no_finding(traces: CardTraces) -> None:
    findings, _ = diagnosed(traces.healthy)
    assert above_info(findings) == set(), [f.title for f in findings]
    # where the time went: the slowest calls, with the APDUs under them
    f = one(findings, "where-time-went")
    assert f.data["apdu_us"] > 0 and any(s["apdus"] for s in f.data["slowest"])


def test_ebcdic_pin_to_the_card(traces: CardTraces) -> None:
    """A masked trace still tells the PIN was EBCDIC digits; the card counted it as wrong."""
    findings, by_seq = diagnosed(traces.ebcdic)
    assert above_info(findings) == {"pin-encoding"}
    enc = one(findings, "pin-encoding")
    assert enc.title == ("The PIN's bytes look wrongly encoded: EBCDIC digits (F0-F9), not ASCII"
                         " (1 failed login(s); 2 tries left)")
    [login] = [by_seq[s] for s in enc.seqs if isinstance(by_seq[s], Call)]
    assert login.function == "C_Login" and login.args["pPin"]["masked"] is True
    # the wrong-PIN facts are inside the encoding finding: the card's counter fell 3 -> 2
    assert enc.data["tries_left"] == [3, 2]
    assert [by_seq[s].sw for s in enc.seqs if isinstance(by_seq[s], Apdu)] == ["63C3", "63C2"]


def test_card_no_driver_takes(traces: CardTraces) -> None:
    findings, by_seq = diagnosed(traces.unknown)
    assert above_info(findings) == {"card-not-recognised"}, [f.title for f in findings]
    f = one(findings, "card-not-recognised")
    assert f.data["atr"].upper() == traces.atr
    assert traces.atr in f.title
    assert f.data["refused_selects"] and f.data["apdus"] > 0
    assert any(isinstance(by_seq[s], Call) and by_seq[s].rv_name == "CKR_TOKEN_NOT_RECOGNIZED"
               for s in f.seqs)


def test_card_no_driver_takes_in_an_opensc_debug_log(traces: CardTraces) -> None:
    """The same run's OPENSC_DEBUG=7 log names the drivers OpenSC tried and the ATR."""
    findings, _ = diagnosed(traces.unknown_debug)
    assert above_info(findings) == {"card-not-recognised"}, [f.title for f in findings]
    f = one(findings, "card-not-recognised")
    assert f.data["drivers"] == ["openpgp"]
    assert f.data["atr"].upper() == traces.atr
    assert "Drivers tried: openpgp." in f.explanation
    # codes: those the log shows, apart from those it does not (SC_ERROR_WRONG_CARD is not in it)
    log = traces.unknown_debug.read_text()
    wrong_card = codes.lookup("SC_ERROR_WRONG_CARD")[0].code.value
    assert f"{wrong_card} " not in log and "SC_ERROR_WRONG_CARD" not in log
    assert "SC_ERROR_WRONG_CARD" in f.related_codes and "SC_ERROR_WRONG_CARD" not in f.codes
    assert "CKR_TOKEN_NOT_RECOGNIZED" in f.codes


def test_card_no_driver_takes_without_a_failing_call(traces: CardTraces) -> None:
    """`pkcs11-tool -I -T` lists only slots with a token: no call fails, the list is empty.
    The cause, a card no driver takes, leads with the empty slot list inside it (no separate
    "No token"): in the p11spy trace from the card's ATR beside the empty list, in OpenSC's
    debug log from its own words (unable to find driver, -1210)."""
    findings, by_seq = diagnosed(traces.unknown_listing)
    assert [f.rule for f in findings if f.severity != "info"] == ["card-not-recognised"], \
        [f.title for f in findings]
    f = one(findings, "card-not-recognised")
    assert f.title == f"Card not recognised (ATR {traces.atr})"
    assert "no call fails" in f.explanation and "AMQ9669E" in f.explanation
    cited = [by_seq[s] for s in f.seqs]
    assert not any(isinstance(e, Call) and e.rv for e in cited)
    [listing] = [e for e in cited if isinstance(e, Call)]
    assert listing.function == "C_GetSlotList" and listing.args["tokenPresent"] in (1, True)
    assert "CKR_TOKEN_NOT_RECOGNIZED" in f.related_codes
    findings, by_seq = diagnosed(traces.unknown_listing_debug)
    assert [f.rule for f in findings if f.severity != "info"] == ["card-not-recognised"], \
        [f.title for f in findings]
    f = one(findings, "card-not-recognised")
    assert f.data["drivers"] == ["openpgp"] and "Drivers tried: openpgp." in f.explanation
    assert any("unable to find driver" in by_seq[s].text for s in f.seqs
               if hasattr(by_seq[s], "text"))
    assert f.codes == ("SC_ERROR_INVALID_CARD",)  # the log's -1210


def test_card_pulled_mid_signature(traces: CardTraces) -> None:
    findings, by_seq = diagnosed(traces.removed)
    assert "card-removed" in above_info(findings), [f.title for f in findings]
    f = one(findings, "card-removed")
    cited = [by_seq[s] for s in f.seqs]
    assert any(isinstance(e, Apdu) and e.command[1] == 0x87 for e in cited)
    assert any(isinstance(e, Call) and e.function in ("C_Sign", "C_SignFinal") and e.rv
               for e in cited)


def _reset_call(f: Finding, by_seq: dict[int, Event]) -> PcscCall:
    """The PC/SC call that met the reset, among the finding's evidence."""
    [reset] = [by_seq[s] for s in f.seqs if isinstance(by_seq[s], PcscCall)
               and by_seq[s].rv_name == "SCARD_W_RESET_CARD"]
    assert reset.function in ("SCardTransmit", "SCardBeginTransaction")
    return reset


def test_card_reset_under_a_held_session_opensc_recovers(traces: CardTraces) -> None:
    """Another program resets the card between two signatures of one logged-in session.
    OpenSC meets SCARD_W_RESET_CARD, reconnects, sends the cached PIN again and signs: the
    client sees CKR_OK. Not an error then, but a warning: someone resets the card, and only
    the PIN cache saved the call."""
    assert traces.held_answers["recovered"] == ["ready", "ok", "closed"]
    findings, by_seq = diagnosed(traces.reset_recovered)
    assert above_info(findings) == {"card-removed"}, [f.title for f in findings]
    f = one(findings, "card-removed")
    assert f.severity == "warning"
    reset = _reset_call(f, by_seq)
    sign = by_seq[reset.parent]
    assert sign.function == "C_Sign" and sign.rv_name == "CKR_OK" and sign.seq in f.seqs
    assert f.title == (f"Card reset during the operation; the module recovered and C_Sign "
                       f"#{sign.seq} returned CKR_OK")
    assert f.data["what"] == ["reset"] and f.data["recovered"] is True
    # how: SCardReconnect, then the PIN sent again, both under that C_Sign
    cited = [by_seq[s] for s in f.seqs]
    [reconnect] = [e for e in cited if isinstance(e, PcscCall) and e.function == "SCardReconnect"]
    [verify] = [e for e in cited if isinstance(e, Apdu) and e.command[1] == 0x20]
    assert reconnect.parent == verify.parent == sign.seq and verify.sw == "9000"
    assert reset.seq < reconnect.seq < verify.seq
    assert f"VERIFY #{verify.seq}" in f.explanation and "use_pin_caching" in f.explanation


def test_card_reset_under_a_held_session_without_pin_cache(traces: CardTraces) -> None:
    """The same reset with OpenSC's PIN cache off: the card lost the login, the signature fails
    with CKR_USER_NOT_LOGGED_IN. Errors: the reset, and the lost login blamed on it (not on a
    missing C_Login)."""
    assert traces.held_answers["failed"] == ["ready", "error UserNotLoggedIn",
                                             "close error UserNotLoggedIn"]
    findings, by_seq = diagnosed(traces.reset_failed)
    assert above_info(findings) == {"card-removed", "not-logged-in"}, \
        [f.title for f in findings]
    f = one(findings, "card-removed")
    assert f.severity == "error"
    reset = _reset_call(f, by_seq)
    sign = by_seq[reset.parent]
    assert sign.function == "C_Sign" and sign.seq in f.seqs
    assert f.title == (f"Card reset during the operation: C_Sign #{sign.seq} failed "
                       "(CKR_USER_NOT_LOGGED_IN)")
    assert f.data["recovered"] is False
    # the reset is the cause: it comes before the refusals it led to
    assert [x.rule for x in findings if x.severity != "info"] == [
        "card-removed", "not-logged-in", "not-logged-in"]
    lost = [x for x in findings if x.rule == "not-logged-in"]
    assert {x.title for x in lost} == {
        f"{fn} needs a login: the card was reset at #{reset.seq}"
        for fn in ("C_Sign", "C_Logout")}
    for x in lost:
        [login] = [by_seq[s] for s in x.seqs if getattr(by_seq[s], "function", "") == "C_Login"]
        assert login.rv_name == "CKR_OK" and login.seq < reset.seq
        assert reset.seq in x.seqs


def test_session_held_without_a_reset_has_no_card_finding(traces: CardTraces) -> None:
    """The same client holding its session the same way, the card left alone."""
    assert traces.held_answers["held"] == ["ready", "ok", "closed"]
    findings, by_seq = diagnosed(traces.held)
    assert above_info(findings) == set(), [f.title for f in findings]
    assert not any(isinstance(e, PcscCall) and e.rv_name == "SCARD_W_RESET_CARD"
                   for e in by_seq.values())


def test_pin_longer_than_the_token_takes(traces: CardTraces) -> None:
    findings, by_seq = diagnosed(traces.long_pin)
    assert above_info(findings) == {"pin-length"}, [f.title for f in findings]
    f = one(findings, "pin-length")
    info = by_seq[f.seqs[0]]
    assert info.function == "C_GetTokenInfo"
    assert f.title == (f"PIN of 9 bytes, outside the token's {info.args['pInfo']['ulMinPinLen']}"
                       f"-{info.args['pInfo']['ulMaxPinLen']}")
    assert by_seq[f.seqs[-1]].rv_name == "CKR_PIN_LEN_RANGE"


def test_wrong_pins_count_down_to_blocked(traces: CardTraces) -> None:
    assert traces.card_pin_tries == 0
    findings, by_seq = diagnosed(traces.pins)
    assert above_info(findings) == {"pin-incorrect", "pin-locked"}
    wrong = one(findings, "pin-incorrect")
    assert wrong.data["failed_logins"] == 3
    assert [t for t in wrong.data["tries_left"]][-1] == 0
    attempts = [by_seq[s].sw for s in wrong.seqs
                if isinstance(by_seq[s], Apdu) and len(by_seq[s].command) > 5]
    assert attempts == ["63C2", "63C1", "63C0"]
    assert wrong.title == "Wrong PIN: 3 failed login(s); no tries left"
    assert "3 (#" in wrong.explanation and "-> 0 (#" in wrong.explanation
    locked = one(findings, "pin-locked")
    assert locked.title == "PIN blocked on token 'p11spy PIV Authentication'"
    assert "used up the last tries" in locked.explanation
    cited = [by_seq[s] for s in locked.seqs]
    assert any(isinstance(e, Apdu) and e.sw == "6983" for e in cited)
    assert any(isinstance(e, Call) and e.rv_name == "CKR_PIN_LOCKED" for e in cited)
    assert wrong.severity == locked.severity == "error"


def test_blocked_pin_in_an_opensc_debug_log(traces: CardTraces) -> None:
    """The same card, OPENSC_DEBUG=9 of the run that met the blocked PIN: already blocked when
    that log began."""
    findings, _ = diagnosed(traces.debug_log)
    assert "pin-locked" in above_info(findings), [f.title for f in findings]
    locked = one(findings, "pin-locked")
    assert "already was when the trace began" in locked.explanation


def test_verify_answered_6300_without_a_counter(tmp_path: Path) -> None:
    """A card that answers a wrong PIN with 6300 (verification failed, no tries left given), as
    many do: OpenSC's PIV driver passes it up as CKR_GENERAL_ERROR, so pkcs11-tool says
    "general error". The finding names the refused PIN, the VERIFY and the call, and leads."""
    out = tmp_path / "6300.p11"
    with station.card_station(tmp_path / "station", reports_tries=False) as b:
        r = _run(b, out, "--login", "--pin", WRONG, "-O")
        tries = b.card.pin_tries
        logged = b.run(["pkcs11-tool", "--module", b.module, "--login", "--pin", WRONG, "-O"],
                       OPENSC_DEBUG="3")
    assert r.returncode != 0 and tries == b.card.retries - 1, r.stderr[-2000:]
    findings, by_seq = diagnosed(out)
    [first, *rest] = [f for f in findings if f.severity != "info"]
    assert first.rule == "pin-verify-failed" and first.severity == "error", \
        [f.title for f in findings]
    assert rest == [], [f.title for f in rest]
    cited = [by_seq[s] for s in first.seqs]
    [verify] = [e for e in cited if isinstance(e, Apdu)]
    assert verify.command[1] == 0x20 and verify.sw == "6300" and len(verify.command) > 5
    [login] = [e for e in cited if isinstance(e, Call)]
    assert login.function == "C_Login" and login.seq == verify.parent
    assert f"rv = {login.rv_name}" in r.stderr
    assert first.data == {"verify_failed": 1, "answers": [login.rv_name],
                          "stopped_at": login.seq}
    assert "6300" in first.codes and "63Cx" not in first.codes
    if login.rv_name != "CKR_PIN_INCORRECT":
        assert f"passed it up as {login.rv_name}" in first.explanation
    # OpenSC's debug log at level 3 has no APDUs: the call the program stopped on leads, with
    # the first error OpenSC logged under it
    debug = tmp_path / "debug3.log"
    debug.write_text(logged.stderr)
    findings, by_seq = diagnosed(debug)
    [first, *rest] = [f for f in findings if f.severity != "info"]
    assert first.rule == "client-stopped" and rest == [], [f.title for f in findings]
    assert first.title.startswith(f"The program gave up after C_Login -> {login.rv_name}")
    [origin] = [by_seq[s] for s in first.seqs if isinstance(by_seq[s], LogLine)]
    assert "returning with: -" in origin.text and origin.parent == first.data["stopped_at"]
    assert "OpenSC's log shows where it started" in first.explanation


@contextlib.contextmanager
def pcscd_without_readers(workdir: Path) -> Iterator[None]:
    """A real pcscd with an empty reader configuration, under the card station's lock (pcscd's
    socket is fixed, so no station may run meanwhile)."""
    conf = workdir / "reader.conf.d"
    conf.mkdir(parents=True)
    with station.station_lock():
        if station._pcscd_answers():
            pytest.skip("a pcscd not started by the tests is running")
        for stale in (station.PCSCD_SOCKET, station.PCSCD_SOCKET.with_name("pcscd.pid")):
            stale.unlink(missing_ok=True)
        with (workdir / "pcscd.log").open("wb") as log:
            proc = subprocess.Popen([station.PCSCD, "--foreground", "--config", str(conf)],
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT,
                                    preexec_fn=station._die_with_parent)
        try:
            deadline = time.monotonic() + 15
            while not station._pcscd_answers():
                assert proc.poll() is None and time.monotonic() < deadline, \
                    (workdir / "pcscd.log").read_text()
                time.sleep(0.05)
            yield
        finally:
            station.stop_process(proc)


def test_pcscd_without_readers(tmp_path: Path) -> None:
    out = tmp_path / "noreaders.p11"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("P11SPY_", "OPENSC", "PCSCLITE"))}
    with pcscd_without_readers(tmp_path / "pcscd"):
        r = subprocess.run([P11SPY, "run", "-o", str(out), "--", "pkcs11-tool", "--module",
                            station.OPENSC_MODULE, "-L"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert "No slots." in r.stdout + r.stderr, r.stdout + r.stderr
    findings, by_seq = diagnosed(out)
    assert above_info(findings) == {"no-readers", "no-token"}
    f = one(findings, "no-readers")
    assert {by_seq[s].rv_name for s in f.seqs} == {"SCARD_E_NO_READERS_AVAILABLE"}
    assert "lists no reader" in one(findings, "no-token").explanation


def test_opensc_debug_log_of_a_program_killed_inside_c_login(tmp_path: Path) -> None:
    """The card takes the VERIFY and does not answer (it hangs); pkcs11-tool waits inside
    C_Login until it is killed, as a user or a timeout kills a hung program. OPENSC_DEBUG=9
    logged C_Login's entry line and the VERIFY going out, and no result: the finding names
    C_Login, its thread, and that the program crashed, was killed or hung in it."""
    log = tmp_path / "killed.log"
    with station.card_station(tmp_path / "station") as b:
        arrived, release = threading.Event(), threading.Event()
        verify = b.card._verify

        def hang(apdu):  # type: ignore[no-untyped-def]
            if apdu.data:  # the PIN itself, not the query of the tries left
                arrived.set()
                release.wait(60)
            return verify(apdu)

        b.card._verify = hang
        with log.open("w") as err:
            p = subprocess.Popen(["pkcs11-tool", "--module", b.module, "--login", "--pin",
                                  b.pin, "-O"], env={**b.env, "OPENSC_DEBUG": "9"},
                                 stdout=subprocess.DEVNULL, stderr=err,
                                 stdin=subprocess.DEVNULL)
            try:
                assert arrived.wait(30), "the VERIFY never reached the card"
                time.sleep(0.3)
                assert p.poll() is None  # still waiting inside C_Login
            finally:
                p.kill()
                p.wait(10)
                release.set()
    text = log.read_text()
    assert "C_Login(" in text and "fLogin() rv" not in text, text[-2000:]
    findings, by_seq = diagnosed(log)
    [first, *rest] = [f for f in findings if f.severity != "info"]
    assert first.rule == "call-never-returned" and first.severity == "error", \
        [f.title for f in findings]
    assert rest == [], [f.title for f in rest]
    [call] = [by_seq[s] for s in first.seqs if isinstance(by_seq[s], Call)]
    assert call.function == "C_Login" and call.rv is None
    assert first.title == (f"C_Login in thread {call.tid} never returned: the program crashed, "
                           "was killed or hung inside it")


def test_no_card_in_the_reader(tmp_path: Path) -> None:
    """The card pulled before pkcs11-tool lists the slots with a token (-T): none. PC/SC said
    each reader was empty, so the no-token finding says no card was in them and cites that."""
    out = tmp_path / "nocard.p11"
    with station.card_station(tmp_path / "station") as b:
        b.remove()
        r = _run(b, out, "-T", "-L")
    assert "No slots." in r.stdout + r.stderr, r.stdout + r.stderr
    findings, by_seq = diagnosed(out)
    assert above_info(findings) == {"no-token"}, [f.title for f in findings]
    f = one(findings, "no-token")
    assert f.severity == "error" and f.data["empty_readers"]
    assert " because no card was in any reader (" in f.explanation or \
        " because no card was in the reader " in f.explanation
    empty = [by_seq[s] for s in f.seqs if isinstance(by_seq[s], PcscCall)]
    assert empty and all(e.function == "SCardGetStatusChange" for e in empty)


def test_tries_left_asked_before_a_login_whose_verify_is_not_logged(tmp_path: Path) -> None:
    """OPENSC_DEBUG=3 logs the card's answer to the tries-left question (63C3) but not the
    VERIFY that carries the wrong PIN: the count the log shows is from before the login. The
    finding must not say 3 tries are left when the card now holds 2."""
    log = tmp_path / "debug3.log"
    with station.card_station(tmp_path / "station") as b:
        r = b.pkcs11_tool("--login", "--pin", WRONG, "-O", OPENSC_DEBUG="3")
        left = b.card.pin_tries
    log.write_text(r.stderr)
    assert r.returncode != 0 and left == b.card.retries - 1 == 2, r.stderr[-1000:]
    findings, by_seq = diagnosed(log)
    wrong = one(findings, "pin-incorrect")
    asked = [by_seq[s] for s in wrong.seqs if isinstance(by_seq[s], Apdu)]
    assert asked and all(a.sw == "63C3" and len(a.command) <= 5 for a in asked)
    assert wrong.title == f"Wrong PIN: 1 failed login(s); at most {left} tries left"
    assert "its VERIFY is not in the trace: it used up one more try" in wrong.explanation


def test_card_pulled_mid_signature_in_an_opensc_debug_log(tmp_path: Path) -> None:
    """The card pulled at GENERAL AUTHENTICATE, logged with OPENSC_DEBUG=3: OpenSC writes
    "SCardTransmit/Control failed: 0x80100016" (SCARD_E_NOT_TRANSACTED) after the card had
    answered. The removal leads, citing those lines and the signing call that failed, rather
    than a bare "gave up after C_SignFinal"."""
    log = tmp_path / "pulled.log"
    data = tmp_path / "data"
    data.write_bytes(b"to sign")
    with station.card_station(tmp_path / "station") as b:
        b.remove_when(lambda apdu: apdu.ins == 0x87)
        r = b.pkcs11_tool("--login", "--pin", b.pin, "--sign", "--id", "01", "-m",
                          "SHA256-RSA-PKCS", "-i", str(data), "-o", str(tmp_path / "sig"),
                          OPENSC_DEBUG="3")
    log.write_text(r.stderr)
    assert r.returncode != 0 and "SCardTransmit/Control failed: 0x80100016" in r.stderr
    findings, by_seq = diagnosed(log)
    [first, *rest] = [f for f in findings if f.severity != "info"]
    assert first.rule == "card-removed" and first.severity == "error" and rest == [], \
        [f.title for f in findings]
    cited = [by_seq[s] for s in first.seqs]
    assert any(isinstance(e, LogLine) and "0x80100016" in e.text for e in cited)
    assert any(isinstance(e, Call) and e.function.startswith("C_Sign") and e.rv for e in cited)


def test_wrong_pin_in_an_opensc_debug_log_without_calls(tmp_path: Path) -> None:
    """OPENSC_DEBUG=2 logs neither the PKCS#11 calls nor the APDUs, only OpenSC's card layer:
    a wrong PIN is its "sc_pin_cmd: returning with: -1214" line. That is the evidence of the
    wrong-PIN finding; the same run with the right PIN has none."""
    with station.card_station(tmp_path / "station") as b:
        wrong = b.pkcs11_tool("--login", "--pin", WRONG, "-O", OPENSC_DEBUG="2")
        right = b.pkcs11_tool("--login", "--pin", b.pin, "-O", OPENSC_DEBUG="2")
    assert "CKR_PIN_INCORRECT" in wrong.stderr and right.returncode == 0, right.stderr[-500:]
    for name, r in (("wrong", wrong), ("right", right)):
        (tmp_path / f"{name}.log").write_text(r.stderr)
    findings, by_seq = diagnosed(tmp_path / "wrong.log")
    assert not any(isinstance(e, Call | Apdu) for e in by_seq.values())  # the card layer only
    assert above_info(findings) == {"pin-incorrect"}, [f.title for f in findings]
    f = one(findings, "pin-incorrect")
    [line] = [by_seq[s] for s in f.seqs]
    assert isinstance(line, LogLine) and "sc_pin_cmd: returning with: -1214" in line.text
    assert f.title == "Wrong PIN: 1 failed login(s)" and f.severity == "error"
    findings, _ = diagnosed(tmp_path / "right.log")
    assert above_info(findings) == set(), [f.title for f in findings]
