"""`p11spy run` on the card station: real clients, OpenSC, pcscd and the virtual PIV card.

What a smart-card user checks in a trace: the VERIFY under C_Login with its PIN masked and the
card's answer (63Cx counting down, 6983 once blocked); the GENERAL AUTHENTICATE under C_Sign;
the same APDUs OpenSC's own debug log shows, in the same order and under the same calls; what
a pulled card looks like; and that each client a user has is traced without touching its
configuration. Every test starts its own pcscd and card (fixture `piv_card`).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from p11spy.decoder.events import Apdu, Call, Event, PcscCall
from p11spy.decoder.formats.opensc_debug import reader as opensc_debug
from testbed.card_station import CardStation, write_opensc_conf
from tests.conftest import read_trace
from tests.readers import exchanges
from tests.test_clients import keytool_list, need
from tests.test_run import P11SPY, split_message

TIMEOUT = 60
WRONG_PIN = "975312"  # digits that appear nowhere else in a trace (the serial is 0s)
SESSION_CLIENT = Path(__file__).parent / "clients" / "session_client.py"
VERIFY, GENERAL_AUTHENTICATE = 0x20, 0x87


@dataclass
class Traced:
    """A client run under `p11spy run` on the station, and the events of its traces."""

    result: subprocess.CompletedProcess[str]
    traces: list[Path]
    events: list[Event]

    @property
    def calls(self) -> list[Call]:
        return [e for e in self.events if isinstance(e, Call)]

    def under(self, call: Call) -> list[Event]:
        return [e for e in self.events if getattr(e, "parent", None) == call.seq
                and e.pid == call.pid]

    def apdus_under(self, call: Call) -> list[Apdu]:
        return [e for e in self.under(call) if isinstance(e, Apdu)]

    def one(self, function: str) -> Call:
        found = [c for c in self.calls if c.function == function]
        assert len(found) == 1, (function, [c.function for c in self.calls])
        return found[0]


def traced(card: CardStation, out: Path, cmd: list[str], env: dict[str, str] | None = None,
           timeout: float = TIMEOUT) -> Traced:
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    res = subprocess.run([P11SPY, "run", "-o", str(out / "t-%p.p11"), "--", *cmd],
                         env=env or card.env, capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    assert time.monotonic() - start < timeout
    rest, _message, paths = split_message(res.stderr)
    res = subprocess.CompletedProcess(res.args, res.returncode, res.stdout, rest)
    return Traced(res, paths, [e for p in paths for e in read_trace(p)])


def pkcs11_tool(card: CardStation, *args: str) -> list[str]:
    return ["pkcs11-tool", "--module", card.module, *args]


def ins(a: Apdu) -> int:
    return a.command[1]


# --- wrong PIN: 63C2, 63C1, 63C0, then 6983 ---------------------------------------------------

def test_wrong_pin_counts_down_under_login_then_locks(piv_card: CardStation,
                                                      tmp_path: Path) -> None:
    seen = []
    for attempt in range(4):
        t = traced(piv_card, tmp_path / str(attempt),
                   pkcs11_tool(piv_card, "--login", "--pin", WRONG_PIN, "-O"))
        assert t.result.returncode == 1
        login = t.one("C_Login")
        assert login.args["pPin"]["masked"] is True and login.args["pPin"]["length"] == 6
        verifies = [a for a in t.apdus_under(login) if ins(a) == VERIFY and a.masked]
        assert len(verifies) == 1, t.apdus_under(login)
        [v] = verifies
        assert WRONG_PIN.encode() not in v.command and v.command[:5] == bytes.fromhex("0020008008")
        seen.append((v.sw, login.rv_name))
        assert f"C_Login failed: rv = {login.rv_name}" in t.result.stderr
        for p in t.traces:
            assert WRONG_PIN.encode() not in p.read_bytes()
    assert seen == [("63C2", "CKR_PIN_INCORRECT"), ("63C1", "CKR_PIN_INCORRECT"),
                    ("63C0", "CKR_PIN_INCORRECT"), ("6983", "CKR_PIN_LOCKED")]


def test_decode_shows_the_verify_under_the_failed_login(piv_card: CardStation,
                                                        tmp_path: Path) -> None:
    """What a user reads: `p11spy decode --errors` prints the failed C_Login with its VERIFY,
    masked, and the card's 63C2."""
    t = traced(piv_card, tmp_path, pkcs11_tool(piv_card, "--login", "--pin", WRONG_PIN, "-O"))
    out = subprocess.run([P11SPY, "decode", "--errors", *map(str, t.traces)],
                         capture_output=True, text=True, timeout=TIMEOUT, check=True).stdout
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if " C_Login " in line)
    block = lines[first:first + 12]
    assert "  -> CKR_PIN_INCORRECT (0xa0)" in block
    # the APDU under the call carries its #seq (the number diagnose cites), its answer below it
    [verify] = [i for i, line in enumerate(block) if re.fullmatch(
        r"    #\d+ >> 00 20 00 80 08 2A 2A 2A 2A 2A 2A 2A 2A  \[VERIFY\]  \(PIN masked\)",
        line)]
    assert block[verify + 1].strip() == "<< 63 C2  SW 63C2"


# --- the same APDUs as OpenSC's own debug log -------------------------------------------------

def _debug_conf(card: CardStation, d: Path) -> tuple[dict[str, str], Path]:
    """The user's own OPENSC_CONF with the debug log switched on, as OpenSC documents it."""
    log = d / "opensc-debug.log"
    conf = write_opensc_conf(d / "opensc-debug.conf", {"debug": 9, "debug_file": log})
    return {**card.env, "OPENSC_CONF": str(conf)}, log


def test_every_apdu_of_opensc_debug_log_is_in_the_trace(piv_card: CardStation,
                                                       tmp_path: Path) -> None:
    """Login, find, sign: every exchange OpenSC logs at debug 9 is in the trace with the same
    bytes, in the same order, under a call of the same function. The one difference allowed
    is the PIN: the debug log has it in clear, the trace masks it (same header and length)."""
    data = tmp_path / "data"
    data.write_bytes(b"sign me")
    env, log = _debug_conf(piv_card, tmp_path)
    t = traced(piv_card, tmp_path / "traces", pkcs11_tool(
        piv_card, "--login", "--pin", piv_card.pin, "--sign", "--id", "01", "-m",
        "SHA256-RSA-PKCS", "-i", str(data), "-o", str(tmp_path / "sig")), env)
    assert t.result.returncode == 0, t.result.stderr
    with log.open("rb") as f:
        logged = exchanges(list(opensc_debug.read(f)))
    spied = exchanges(t.events)
    assert len(logged) > 20 and len(spied) == len(logged), (len(spied), len(logged))
    pins = 0
    for i, ((lf, lc, lr), (sf, sc, sr)) in enumerate(zip(logged, spied, strict=True)):
        assert (sf, sr) == (lf, lr), (i, sf, lf)
        if sc != lc:  # only a masked PIN may differ, and only in its data
            assert sc[1] == VERIFY and sc[:5] == lc[:5] and len(sc) == len(lc), i
            assert piv_card.pin.encode() in lc and piv_card.pin.encode() not in sc
            pins += 1
    assert pins == 1
    functions = {f for f, _c, _r in spied}
    assert {"C_Login", "C_Sign"} <= functions and None not in functions


def test_signature_apdus_are_under_c_sign(piv_card: CardStation, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"sign me")
    t = traced(piv_card, tmp_path, pkcs11_tool(
        piv_card, "--login", "--pin", piv_card.pin, "--sign", "--id", "01", "-m",
        "SHA256-RSA-PKCS", "-i", str(data), "-o", str(tmp_path / "sig")))
    assert t.result.returncode == 0, t.result.stderr
    sign = t.one("C_Sign")
    assert sign.rv_name == "CKR_OK"
    under = t.apdus_under(sign)
    auth = [a for a in under if ins(a) == GENERAL_AUTHENTICATE]
    # a 2048-bit RSA block goes out as a chain (CLA 10, then 00); the card answers 9000 last
    assert [a.command[0] for a in auth] == [0x10, 0x00], [a.command[:2].hex() for a in auth]
    assert under[-1].sw == "9000"
    signature = (tmp_path / "sig").read_bytes()
    assert signature.hex() == sign.args["pSignature"]


# --- a pulled card ------------------------------------------------------------------------------

def test_card_pulled_during_the_signature(piv_card: CardStation, tmp_path: Path) -> None:
    """The card vanishes while GENERAL AUTHENTICATE is in flight: the trace shows the failed
    exchange and its PC/SC error under C_Sign, the module's return value, and the client ends
    at once. (pcscd answers SCARD_E_NOT_TRANSACTED for an exchange cut off in flight; a card
    already gone when a call starts is SCARD_W_REMOVED_CARD, see the next test.)"""
    data = tmp_path / "data"
    data.write_bytes(b"x")
    piv_card.remove_when(lambda apdu: apdu.ins == GENERAL_AUTHENTICATE)
    t = traced(piv_card, tmp_path, pkcs11_tool(
        piv_card, "--login", "--pin", piv_card.pin, "--sign", "--id", "01", "-m",
        "SHA256-RSA-PKCS", "-i", str(data), "-o", str(tmp_path / "sig")), timeout=30)
    assert t.result.returncode == 1
    sign = next(c for c in t.calls if c.function == "C_Sign")
    assert sign.rv_name == "CKR_GENERAL_ERROR"
    failed = [a for a in t.apdus_under(sign) if a.error]
    assert failed and failed[-1].error == "SCARD_E_NOT_TRANSACTED"
    assert ins(failed[-1]) == GENERAL_AUTHENTICATE and failed[-1].response is None


def test_card_pulled_between_calls_of_a_live_session(piv_card: CardStation,
                                                    tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [P11SPY, "run", "-o", str(tmp_path / "t-%p.p11"), "--", sys.executable,
         str(SESSION_CLIENT), piv_card.module, piv_card.token_label, piv_card.pin],
        env=piv_card.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        piv_card.remove()
        out, err = proc.communicate("go\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and out.splitlines()[0] == "error DeviceRemoved", out + err
    _rest, _message, paths = split_message(err)
    events = [e for p in paths for e in read_trace(p)]
    last_sign = [e for e in events if isinstance(e, Call) and e.function == "C_Sign"][-1]
    assert last_sign.rv_name == "CKR_DEVICE_REMOVED"
    under = [e for e in events if getattr(e, "parent", None) == last_sign.seq]
    assert any(isinstance(e, PcscCall) and e.rv_name == "SCARD_W_REMOVED_CARD" for e in under)


# --- every client, configured as its user has it ------------------------------------------------

def _nss(card: CardStation, d: Path) -> list[str]:
    need("certutil", "libnss3-tools")
    db = d / "nssdb"
    db.mkdir()
    for cmd in (["certutil", "-N", "-d", f"sql:{db}", "--empty-password"],
                ["modutil", "-dbdir", f"sql:{db}", "-add", "opensc", "-libfile", card.module,
                 "-force"]):
        subprocess.run(cmd, env=card.env, check=True, capture_output=True, timeout=TIMEOUT,
                       stdin=subprocess.DEVNULL)
    return ["certutil", "-d", f"sql:{db}", "-L", "-h", "all"]


def _keytool(card: CardStation, d: Path) -> list[str]:
    need("keytool", "openjdk-17-jdk-headless")
    return keytool_list(card.module, card.pin, d, "Card")


CLIENTS = {
    # client: (command, what its output must show, the function whose APDUs the trace shows)
    "pkcs11-tool": (lambda c, d: pkcs11_tool(c, "--login", "--pin", c.pin, "-O"),
                    "Certificate for PIV Authentication", "C_Login"),
    "python-pkcs11": (lambda c, d: [sys.executable, "-c", (
        "import pkcs11, sys; t = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2]); "
        "s = t.open(user_pin=sys.argv[3]); print(len(list(s.get_objects())), 'objects')"),
        c.module, c.token_label, c.pin], " objects", "C_Login"),
    "p11tool": (lambda c, d: [need("p11tool", "gnutls-bin"), "--list-tokens"],
                "Module: opensc-pkcs11.so", "C_GetTokenInfo"),
    "certutil": (_nss, "Certificate for PIV Authentication", "C_GetTokenInfo"),
    "keytool": (_keytool, "PrivateKeyEntry", "C_Login"),
}


@pytest.mark.parametrize("client", list(CLIENTS))
def test_client_traced_with_its_apdus(client: str, piv_card: CardStation, tmp_path: Path) -> None:
    """Each client, configured only as its user has it (pkcs11-tool and python-pkcs11 given
    the module path, p11tool from p11-kit's registry, certutil from its NSS database, keytool
    from a SunPKCS11 file), does its job under `p11spy run` and its trace has OpenSC's calls
    with APDUs under them."""
    make, expect, function = CLIENTS[client]
    cmd = make(piv_card, tmp_path)
    t = traced(piv_card, tmp_path / "traces", cmd, timeout=120)
    assert t.result.returncode == 0, t.result.stdout + t.result.stderr
    assert expect in t.result.stdout
    apdus = [e for e in t.events if isinstance(e, Apdu)]
    assert apdus and all(a.parent is not None for a in apdus)
    assert any(t.apdus_under(c) for c in t.calls if c.function == function), function
    for p in t.traces:
        assert piv_card.pin.encode() not in p.read_bytes()


# --- programs linked to libpcsclite directly ----------------------------------------------------

def test_opensc_tool_linked_to_pcsclite_is_traced(piv_card: CardStation, tmp_path: Path) -> None:
    """opensc-tool calls libpcsclite itself (no PKCS#11 module): its PC/SC calls and APDUs are
    recorded, outside any call, also with the user's own OPENSC_DEBUG on."""
    env = {**piv_card.env, "OPENSC_DEBUG": "3"}
    t = traced(piv_card, tmp_path, ["opensc-tool", "--reader", piv_card.reader, "--name",
                                    "--send-apdu", "00CB3FFF055C035FC10200"], env)
    assert t.result.returncode == 0, t.result.stderr
    assert "Personal Identity Verification Card" in t.result.stdout
    assert "[opensc-tool]" in t.result.stderr  # the user's debug log still goes where it went
    assert not t.calls
    functions = {e.function for e in t.events if isinstance(e, PcscCall)}
    assert {"SCardEstablishContext", "SCardConnect"} <= functions
    sent = [a for a in t.events if isinstance(a, Apdu)
            and a.command == bytes.fromhex("00CB3FFF055C035FC10200")]
    assert len(sent) == 1 and sent[0].parent is None and sent[0].sw is not None


# --- a PIN-pad reader ---------------------------------------------------------------------------

IOCTL_VERIFY_PIN_DIRECT = 0x42330006  # what testbed/pinpad.c announces, as CCID does


def _pinpad_login(card: CardStation, out: Path) -> tuple[Traced, Call, PcscCall]:
    t = traced(card, out, pkcs11_tool(card, "--login", "-O"))
    login = t.one("C_Login")
    assert login.args["pPin"] is None and login.args["ulPinLen"] == 0  # the keypad has it
    [control] = [e for e in t.under(login) if isinstance(e, PcscCall)
                 and e.function == "SCardControl"
                 and e.args["dwControlCode"] == IOCTL_VERIFY_PIN_DIRECT]
    assert not [a for a in t.apdus_under(login) if ins(a) == VERIFY]  # no VERIFY APDU sent
    return t, login, control


@pytest.mark.parametrize("piv_card", [{"pinpad": WRONG_PIN}], indirect=True)
def test_pin_pad_verify_structure_is_masked(piv_card: CardStation, tmp_path: Path) -> None:
    """OpenSC sees the reader's VERIFY_PIN_DIRECT feature and lets the keypad take the PIN:
    C_Login has no PIN, the PIN_VERIFY_STRUCTURE goes by SCardControl, masked like a PIN, and
    the card's answer comes back through it."""
    t, login, control = _pinpad_login(piv_card, tmp_path)
    assert control.args["pbSendBuffer"]["masked"] is True
    assert control.args["pbRecvBuffer"] == "63c2" and login.rv_name == "CKR_PIN_INCORRECT"
    assert piv_card.card.pin_tries == 2
    assert t.result.returncode == 1


@pytest.mark.parametrize("piv_card", [{"pinpad": "123456"}], indirect=True)
def test_pin_pad_right_pin_and_structure_in_clear_on_request(piv_card: CardStation,
                                                            tmp_path: Path) -> None:
    t = traced(piv_card, tmp_path, ["env", "P11SPY_LOG_SECRETS=1", *pkcs11_tool(
        piv_card, "--login", "-O")])
    login = t.one("C_Login")
    assert login.rv_name == "CKR_OK" and "Certificate for PIV Authentication" in t.result.stdout
    [control] = [e for e in t.under(login) if isinstance(e, PcscCall)
                 and e.function == "SCardControl"]
    structure = bytes.fromhex(control.args["pbSendBuffer"])
    # PIN_VERIFY_STRUCTURE: 19 bytes of settings, then the VERIFY template the keypad fills
    assert structure[19:24] == bytes.fromhex("0020008008") and b"123456" not in structure
    assert control.args["pbRecvBuffer"] == "9000"
