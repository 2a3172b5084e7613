"""The card station: a virtual PIV card behind a real pcscd, driven by OpenSC's stock PIV driver.

The first tests exercise the card's command handler directly (no PC/SC); the rest start pcscd
with a vpcd reader and the card (fixture `piv_card`, see testbed/card_station.py) and run OpenSC's
own tools against opensc-pkcs11.so, so that real APDUs cross PC/SC.
"""

from __future__ import annotations

import re
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from testbed.card_station import CardStation
from testbed.piv import PIV_AID, Apdu, PivCard, parse_tlvs, tlv

SELECT = bytes.fromhex("00A4040009") + PIV_AID[:9] + b"\x00"
CERT_GET = bytes.fromhex("00CB3FFF055C035FC10500")
SESSION_CLIENT = Path(__file__).parent / "clients" / "session_client.py"


def sw(resp: bytes) -> int:
    return int.from_bytes(resp[-2:], "big")


def verify_cmd(pin: str | None, p1: int = 0) -> bytes:
    if pin is None:
        return bytes([0, 0x20, p1, 0x80])
    return bytes([0, 0x20, p1, 0x80, 8]) + pin.encode().ljust(8, b"\xff")


def fetch(send: Callable[[bytes], bytes], first: bytes) -> tuple[bytes, int]:
    """Send a command and follow 61xx with GET RESPONSE; return data and the final SW."""
    resp = send(first)
    data = resp[:-2]
    while resp[-2] == 0x61:
        resp = send(bytes([0, 0xC0, 0, 0, resp[-1]]))
        data += resp[:-2]
    return data, sw(resp)


def cert_from_object(obj: bytes) -> bytes:
    [(tag, body)] = parse_tlvs(obj)
    assert tag == 0x53
    fields = dict(parse_tlvs(body))
    assert fields[0x71] == b"\x00" and fields[0xFE] == b""
    return fields[0x70]


# --- the card alone -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def card_proto() -> PivCard:
    return PivCard()


def fresh(card_proto: PivCard, **kw: object) -> PivCard:
    """A new card sharing the prototype's key and certificate (no key generation per test)."""
    return PivCard(key=card_proto.key, cert=card_proto.cert, **kw)  # type: ignore[arg-type]


def test_apdu_parsing_short_and_extended() -> None:
    assert Apdu.parse(bytes.fromhex("00A40400")) == Apdu(0, 0xA4, 4, 0)
    assert Apdu.parse(bytes.fromhex("00CA010000")).ne == 256
    a = Apdu.parse(bytes.fromhex("00CB3FFF035C017E00"))
    assert (a.data, a.ne) == (bytes.fromhex("5C017E"), 256)
    e = Apdu.parse(bytes.fromhex("008707 9A 000003 7C0182 0000".replace(" ", "")))
    assert (e.data, e.ne) == (bytes.fromhex("7C0182"), 65536)
    with pytest.raises(ValueError):
        Apdu.parse(bytes.fromhex("00A4040005A000"))


def test_card_needs_piv_selected_then_answers_get_data(card_proto: PivCard) -> None:
    card = fresh(card_proto)
    assert sw(card.process(CERT_GET)) == 0x6D00  # nothing selected after power-up
    resp = card.process(SELECT)
    assert sw(resp) == 0x9000 and resp[0] == 0x61
    apt = dict(parse_tlvs(parse_tlvs(resp[:-2])[0][1]))
    assert apt[0x4F] == PIV_AID[5:]
    data, status = fetch(card.process, CERT_GET)
    assert status == 0x9000 and len(data) > 256  # came back in 61xx pieces
    assert cert_from_object(data) == card.cert.public_bytes(serialization.Encoding.DER)
    assert sw(card.process(bytes.fromhex("00CB3FFF055C035FC10A00"))) == 0x6A82
    chuid, _ = fetch(card.process, bytes.fromhex("00CB3FFF055C035FC10200"))
    assert dict(parse_tlvs(parse_tlvs(chuid)[0][1]))[0x34] == card.guid
    assert sw(card.process(bytes.fromhex("00C0000000"))) == 0x6985  # nothing pending


def test_pin_counter_blocks_and_puk_resets_it(card_proto: PivCard) -> None:
    card = fresh(card_proto)
    card.process(SELECT)
    assert sw(card.process(verify_cmd(None))) == 0x63C3
    assert [sw(card.process(verify_cmd("999999"))) for _ in range(4)] == [
        0x63C2, 0x63C1, 0x63C0, 0x6983]
    assert sw(card.process(verify_cmd("123456"))) == 0x6983  # blocked stays blocked
    assert sw(card.process(verify_cmd(None))) == 0x6983
    rrc = bytes.fromhex("002C008010")
    assert sw(card.process(rrc + b"87654321" + b"246813\xff\xff")) == 0x63C2  # wrong PUK
    assert sw(card.process(rrc + b"12345678" + b"246813\xff\xff")) == 0x9000
    assert (card.pin_tries, card.puk_tries) == (3, 3)
    assert sw(card.process(verify_cmd("246813"))) == 0x9000
    assert sw(card.process(verify_cmd(None))) == 0x9000
    assert sw(card.process(verify_cmd(None, p1=0xFF))) == 0x9000  # reset security status
    assert sw(card.process(verify_cmd(None))) == 0x63C3
    crd = bytes.fromhex("0024008010") + b"246813\xff\xff" + b"13579135"
    assert sw(card.process(crd)) == 0x9000
    assert sw(card.process(verify_cmd("13579135"))) == 0x9000


def test_general_authenticate_chained_in_and_out(card_proto: PivCard) -> None:
    """OpenSC sends the 266-byte template in two chained commands and reads 264 bytes back."""
    card = fresh(card_proto)
    card.process(SELECT)
    block = b"\x00\x01" + b"\xff" * 200 + b"\x00" + bytes(range(53))
    template = tlv(0x7C, tlv(0x82, b"") + tlv(0x81, block))
    first, rest = template[:255], template[255:]
    send = bytes([0x10, 0x87, 0x07, 0x9A, len(first)]) + first
    final = bytes([0x00, 0x87, 0x07, 0x9A, len(rest)]) + rest + b"\x00"
    assert sw(card.process(send)) == 0x9000
    assert sw(card.process(final)) == 0x6982  # PIN not verified
    card.process(verify_cmd("123456"))
    assert sw(card.process(send)) == 0x9000
    data, status = fetch(card.process, final)
    assert status == 0x9000
    [(tag, inner)] = parse_tlvs(data)
    signature = dict(parse_tlvs(inner))[0x82]
    n = card.key.public_key().public_numbers()
    assert pow(int.from_bytes(signature, "big"), n.e, n.n) == int.from_bytes(block, "big")


# --- through pcscd and OpenSC -------------------------------------------------------------


def test_opensc_tools_name_the_piv_card(piv_card: CardStation) -> None:
    r = piv_card.opensc_tool("--atr")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == piv_card.card.atr.hex(":")
    r = piv_card.opensc_tool("--name", "-v")
    assert r.returncode == 0, r.stderr
    # The driver is OpenSC's "PIV-II", whose long name is what -n prints.
    assert "Using card driver Personal Identity Verification Card" in r.stdout
    assert r.stdout.strip().endswith("Card name: Personal Identity Verification Card")


def test_pkcs11_token_comes_from_the_card(piv_card: CardStation) -> None:
    r = piv_card.pkcs11_tool("-L")
    assert r.returncode == 0, r.stderr
    slot = r.stdout.split(f"): {piv_card.reader}\n", 1)[1]
    assert re.search(rf"token label\s+: {re.escape(piv_card.token_label)}\n", slot)
    assert re.search(rf"serial num\s+: {piv_card.card.serial_hex}\n", slot)
    assert "PIN initialized" in slot


def test_pkcs11_lists_certificate_and_keys(piv_card: CardStation) -> None:
    r = piv_card.pkcs11_tool("-O")
    assert r.returncode == 0, r.stderr
    assert "Certificate Object; type = X.509 cert" in r.stdout
    assert f"subject:    DN: CN={piv_card.token_label}" in r.stdout
    assert "Public Key Object; RSA 2048 bits" in r.stdout
    assert "Private Key Object" not in r.stdout  # private objects need a login
    r = piv_card.pkcs11_tool("--login", "--pin", piv_card.pin, "-O")
    assert r.returncode == 0, r.stderr
    assert "Private Key Object; RSA" in r.stdout and "ID:         01" in r.stdout
    assert any(c.startswith(CERT_GET[:10]) for c, _ in piv_card.card.log)


def _remaining_tries(stderr: str) -> int:
    return int(re.findall(r"PIN not verified \(remaining tries: (\d)\)", stderr)[-1])


def test_wrong_pin_counts_down_then_locks(piv_card: CardStation) -> None:
    login = ("--login", "--pin", "999999", "-O")
    results = []
    for _ in range(3):
        # Debug level 9 shows the PIN commands (OpenSC 0.21+ hides them below 8).
        r = piv_card.pkcs11_tool(*login, OPENSC_DEBUG="9")
        assert "rv = CKR_PIN_INCORRECT" in r.stderr, r.stderr[-2000:]
        results.append((_remaining_tries(r.stderr), piv_card.card.pin_tries))
    assert results == [(2, 2), (1, 1), (0, 0)]
    r = piv_card.pkcs11_tool(*login)
    assert "rv = CKR_PIN_LOCKED" in r.stderr, r.stderr
    r = piv_card.pkcs11_tool("--login", "--pin", piv_card.pin, "-O")
    assert "rv = CKR_PIN_LOCKED" in r.stderr, r.stderr
    verifies = [sw(resp) for cmd, resp in piv_card.card.log if cmd[:5] == b"\x00\x20\x00\x80\x08"]
    assert verifies == [0x63C2, 0x63C1, 0x63C0, 0x6983, 0x6983]


def test_puk_unblocks_and_pin_changes(piv_card: CardStation) -> None:
    """RESET RETRY COUNTER and CHANGE REFERENCE DATA, as OpenSC's tools send them."""
    for _ in range(3):
        piv_card.pkcs11_tool("--login", "--pin", "999999", "-O")
    assert piv_card.card.pin_tries == 0
    r = piv_card.run(["pkcs15-tool", "--unblock-pin", "--auth-id", "01", "--puk", piv_card.puk,
                      "--new-pin", "24681357"])
    assert r.returncode == 0, r.stdout + r.stderr
    r = piv_card.pkcs11_tool("--change-pin", "--login", "--pin", "24681357",
                             "--new-pin", "135791")
    assert r.returncode == 0, r.stderr
    r = piv_card.pkcs11_tool("--login", "--pin", "135791", "-O")
    assert r.returncode == 0, r.stderr
    ins = [cmd[1] for cmd, resp in piv_card.card.log if sw(resp) == 0x9000]
    assert 0x2C in ins and 0x24 in ins


def test_right_pin_signs_and_signature_verifies(piv_card: CardStation, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"the spy saw this")
    sig = tmp_path / "sig"
    r = piv_card.pkcs11_tool("--login", "--pin", piv_card.pin, "--sign", "--id", "01",
                             "-m", "SHA256-RSA-PKCS", "-i", str(data), "-o", str(sig))
    assert r.returncode == 0, r.stderr
    public = piv_card.card.cert.public_key()
    public.verify(sig.read_bytes(), data.read_bytes(), padding.PKCS1v15(), hashes.SHA256())
    heads = [cmd[:4].hex() for cmd, _ in piv_card.card.log]
    assert "1087079a" in heads and "0087079a" in heads  # command chaining
    assert heads[heads.index("0087079a") + 1] == "00c00000"  # response chaining


@pytest.mark.parametrize("piv_card", [{"pin": "24682468", "puk": "87654321"}], indirect=True)
def test_pins_are_configurable(piv_card: CardStation) -> None:
    assert piv_card.pkcs11_tool("--login", "--pin", "123456", "-O").returncode != 0
    r = piv_card.pkcs11_tool("--login", "--pin", "24682468", "-O")
    assert r.returncode == 0, r.stderr


def test_raw_apdus_through_pcsc(piv_card: CardStation) -> None:
    [resp] = piv_card.transmit(SELECT)
    assert sw(resp) == 0x9000 and resp[0] == 0x61
    data, status = fetch(lambda c: piv_card.transmit(c)[0], CERT_GET)
    assert status == 0x9000
    cert = piv_card.card.cert.public_bytes(serialization.Encoding.DER)
    assert cert_from_object(data) == cert
    assert [sw(r) for r in piv_card.transmit(verify_cmd(None), verify_cmd("123456"),
                                             verify_cmd(None))] == [0x63C3, 0x9000, 0x9000]


def test_card_pulled_during_a_command_fails_fast(piv_card: CardStation, tmp_path: Path) -> None:
    """The card vanishes while GENERAL AUTHENTICATE is in flight: an error, not a hang."""
    data = tmp_path / "data"
    data.write_bytes(b"x")
    piv_card.remove_when(lambda apdu: apdu.ins == 0x87)
    start = time.monotonic()
    r = piv_card.pkcs11_tool("--login", "--pin", piv_card.pin, "--sign", "--id", "01",
                             "-m", "SHA256-RSA-PKCS", "-i", str(data), "-o",
                             str(tmp_path / "sig"), timeout=30)
    assert time.monotonic() - start < 15
    assert r.returncode != 0
    # OpenSC 0.23 maps the failed transmit (SCARD_E_NOT_TRANSACTED) to CKR_GENERAL_ERROR.
    assert re.search(r"C_Sign\w* failed: rv = CKR_(GENERAL_ERROR|DEVICE_ERROR|DEVICE_REMOVED|"
                     r"TOKEN_NOT_PRESENT)", r.stderr), r.stderr
    piv_card.wait_removed()
    r = piv_card.pkcs11_tool("-L")
    assert re.search(rf"{re.escape(piv_card.reader)}\n  \(empty\)", r.stdout), r.stdout
    piv_card.insert()  # and the card comes back
    r = piv_card.pkcs11_tool("--login", "--pin", piv_card.pin, "-O")
    assert r.returncode == 0, r.stderr


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            raise AssertionError(f"no output from the session client in {timeout} s")
    return proc.stdout.readline().strip()


def test_card_pulled_between_calls_of_a_session(piv_card: CardStation) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(SESSION_CLIENT), piv_card.module, piv_card.token_label,
         piv_card.pin], env=piv_card.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert _readline(proc, 20) == "ready"
        piv_card.remove()
        start = time.monotonic()
        out, err = proc.communicate("go\n", timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert time.monotonic() - start < 10
    lines = out.splitlines()
    assert lines[0] in ("error DeviceRemoved", "error TokenNotPresent",
                        "error SessionHandleInvalid"), out + err
