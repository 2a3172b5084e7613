"""`p11spy diagnose` on real card traces: OpenSC's pkcs11-tool under `p11spy run` against the
virtual PIV card of the card bench (tests/card/bench.py), through a real pcscd.

One bench for the module (it serialises on a lock and takes seconds to start), one trace per
situation, made in this order: the right PIN in EBCDIC; a healthy signature; a card no
configured driver takes; the card pulled in the middle of a signature; wrong PINs until the
PIN is blocked (63C2, 63C1, 63C0, then 6983), the last one also logged with OPENSC_DEBUG=9.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from p11spy.decoder.commands import open_events
from p11spy.decoder.diagnose import Finding, diagnose
from p11spy.decoder.events import Apdu, Call, Event

from .card import bench

P11SPY = str(Path(sys.executable).parent / "p11spy")
WRONG = "999999"


@dataclass
class CardTraces:
    ebcdic: Path
    healthy: Path
    unknown: Path
    unknown_debug: Path
    removed: Path
    long_pin: Path
    pins: Path
    debug_log: Path
    atr: str
    card_pin_tries: int


def _run(b: bench.CardBench, out: Path, *args: str, **env: str):
    return b.run([P11SPY, "run", "-o", str(out), "--", "pkcs11-tool", "--module", b.module,
                  *args], **env)


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CardTraces]:
    w = tmp_path_factory.mktemp("diagnose-card")
    data = w / "data"
    data.write_bytes(b"sign me" * 8)
    sign = ("--sign", "--id", "01", "-m", "SHA256-RSA-PKCS", "-i", str(data), "-o",
            str(w / "sig"))
    with bench.card_bench(w / "bench") as b:
        # the right digits in EBCDIC, as a z/OS program would hand them over
        ebcdic = os.fsdecode(b.pin.encode("cp037"))
        r = _run(b, w / "ebcdic.p11", "--login", "--pin", ebcdic, "-O")
        assert "CKR_PIN_INCORRECT" in r.stderr, r.stderr
        # the right PIN (which also resets the retry counter)
        r = _run(b, w / "healthy.p11", "--login", "--pin", b.pin, *sign)
        assert r.returncode == 0, r.stderr
        # OpenSC limited to a driver that does not take a PIV card
        conf = w / "openpgp-only.conf"
        conf.write_text("app default {\n\tcard_drivers = openpgp;\n"
                        "\tframework pkcs15 {\n\t\tuse_file_caching = false;\n\t}\n}\n")
        r = _run(b, w / "unknown.p11", "-L", OPENSC_CONF=str(conf), OPENSC_DEBUG="7")
        assert r.returncode == 0, r.stderr[-2000:]
        (w / "unknown-debug7.log").write_text(r.stderr)
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
                          w / "unknown-debug7.log", w / "removed.p11", w / "long.p11",
                          w / "pins.p11", debug, b.card.atr.hex().upper(), b.card.pin_tries)
    yield made  # the bench is down again: its lock is free for the other tests


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
    assert above_info(findings) == {"pin-incorrect", "pin-encoding"}
    enc = one(findings, "pin-encoding")
    assert enc.title == "The PIN's bytes look wrongly encoded: EBCDIC digits (F0-F9), not ASCII"
    [login] = [by_seq[s] for s in enc.seqs]
    assert login.function == "C_Login" and login.args["pPin"]["masked"] is True
    wrong = one(findings, "pin-incorrect")
    assert wrong.data["tries_left"] == [3, 2]


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


def test_card_pulled_mid_signature(traces: CardTraces) -> None:
    findings, by_seq = diagnosed(traces.removed)
    assert "card-removed" in above_info(findings), [f.title for f in findings]
    f = one(findings, "card-removed")
    cited = [by_seq[s] for s in f.seqs]
    assert any(isinstance(e, Apdu) and e.command[1] == 0x87 for e in cited)
    assert any(isinstance(e, Call) and e.function in ("C_Sign", "C_SignFinal") and e.rv
               for e in cited)


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


@contextlib.contextmanager
def pcscd_without_readers(workdir: Path) -> Iterator[None]:
    """A real pcscd with an empty reader configuration, under the card bench's lock (pcscd's
    socket is fixed, so no bench may run meanwhile)."""
    conf = workdir / "reader.conf.d"
    conf.mkdir(parents=True)
    with bench.bench_lock():
        if bench._pcscd_answers():
            pytest.skip("a pcscd not started by the tests is running")
        for stale in (bench.PCSCD_SOCKET, bench.PCSCD_SOCKET.with_name("pcscd.pid")):
            stale.unlink(missing_ok=True)
        with (workdir / "pcscd.log").open("wb") as log:
            proc = subprocess.Popen([bench.PCSCD, "--foreground", "--config", str(conf)],
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT,
                                    preexec_fn=bench._die_with_parent)
        try:
            deadline = time.monotonic() + 15
            while not bench._pcscd_answers():
                assert proc.poll() is None and time.monotonic() < deadline, \
                    (workdir / "pcscd.log").read_text()
                time.sleep(0.05)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def test_pcscd_without_readers(tmp_path: Path) -> None:
    out = tmp_path / "noreaders.p11"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("P11SPY_", "OPENSC", "PCSCLITE"))}
    with pcscd_without_readers(tmp_path / "pcscd"):
        r = subprocess.run([P11SPY, "run", "-o", str(out), "--", "pkcs11-tool", "--module",
                            bench.OPENSC_MODULE, "-L"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert "No slots." in r.stdout + r.stderr, r.stdout + r.stderr
    findings, by_seq = diagnosed(out)
    assert above_info(findings) == {"no-readers", "no-token"}
    f = one(findings, "no-readers")
    assert {by_seq[s].rv_name for s in f.seqs} == {"SCARD_E_NO_READERS_AVAILABLE"}
    assert "lists no reader" in one(findings, "no-token").explanation
