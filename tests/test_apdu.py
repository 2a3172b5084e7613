"""APDU and BER-TLV decoding: real command bytes (OpenSC debug samples, PIV, OpenPGP,
GlobalPlatform), every Lc/Le case, folding of GET RESPONSE / 6Cxx / chaining, and malformed
input that must never raise."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p11spy.decoder.apdu.decode import decode_command, decode_response, fold_exchanges
from p11spy.decoder.apdu.framing import parse_cla
from p11spy.decoder.apdu.names import ins_name
from p11spy.decoder.apdu.pin import carries_pin, pin_field
from p11spy.decoder.apdu.sw import sw_meaning, sw_status
from p11spy.decoder.apdu.tlv import is_clean, parse_tlv, render_tlv, walk
from p11spy.decoder.events import Apdu


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def tlv(tag: int, value: bytes) -> bytes:
    """Encode one BER-TLV object (test helper, so sample data has right lengths)."""
    t = tag.to_bytes((tag.bit_length() + 7) // 8 or 1, "big")
    n = len(value)
    if n < 0x80:
        ln = bytes([n])
    elif n < 0x100:
        ln = b"\x81" + bytes([n])
    else:
        ln = b"\x82" + n.to_bytes(2, "big")
    return t + ln + value


def text(lines: list[str]) -> str:
    return "\n".join(lines)


# Real samples: OpenSC debug logs and what PIV / OpenPGP / GP tools send.
SELECT_PIV = h("00 A4 04 00 09 A0 00 00 03 08 00 00 10 00 00")
VERIFY_PIV = h("00 20 00 80 08 31 32 33 34 35 36 FF FF")
GET_CERT_9A = h("00 CB 3F FF 05 5C 03 5F C1 05 00")
PGP_APP_DATA = h("00 CA 00 6E 00")
GP_INIT_UPDATE = h("80 50 00 00 08 11 22 33 44 55 66 77 88 00")
DISCOVERY = h("7E 12 4F 0B A0 00 00 03 08 00 00 10 00 01 00 5F 2F 02 40 00")
PIV_SELECT_RESPONSE = h("61 11 4F 06 00 00 10 00 01 00 79 07 4F 05 A0 00 00 03 08 90 00")


# --------------------------------------------------------------------------------------------
# Commands


def test_select_piv_aid():
    c = decode_command(SELECT_PIV)
    assert (c.name, c.case, c.lc, c.le) == ("SELECT", "4S", 9, 256)
    assert c.data == h("A0 00 00 03 08 00 00 10 00")
    assert c.app == "piv"
    assert c.summary() == "SELECT PIV card application"
    out = text(c.describe())
    assert "select by DF name (AID)" in out
    assert "first or only occurrence; return FCI template" in out
    r = decode_response(PIV_SELECT_RESPONSE, c)
    assert r.sw == 0x9000 and r.meaning == "success"
    rendered = text(r.describe())
    assert "61 application template" in rendered
    assert "79 coexistent tag allocation authority" in rendered
    assert "NIST PIV" in rendered


def test_select_by_file_id_and_path():
    assert decode_command(h("00 A4 00 0C 02 3F 00")).details == ["file id 3F00 (MF)"]
    p = decode_command(h("00 A4 08 04 04 50 15 44 01"))
    assert "select by path from the MF" in text(p.describe())
    assert "return FCP template" in text(p.describe())
    assert p.details == ["path 5015 / 4401"]
    nxt = decode_command(h("00 A4 04 02 05 A0 00 00 03 08"))
    assert "next occurrence" in text(nxt.describe())


def test_verify_pin_answered_63c2_masks_the_pin():
    c = decode_command(VERIFY_PIV)
    assert c.name == "VERIFY" and c.case == "3S" and c.lc == 8
    assert c.carries_pin and carries_pin(VERIFY_PIV)
    out = text(c.describe())
    assert "PIV application PIN" in out
    assert "6 ASCII digits + 2 bytes FF padding" in out
    assert "31" not in out.split(":", 1)[1].split("\n")[0]  # header line hex is masked
    assert "** ** ** ** ** ** ** **" in out
    js = json.dumps(c.to_json())
    assert "313233" not in js and '"masked": true' in js
    r = decode_response(h("63 C2"), c)
    assert r.meaning == "verification failed, 2 tries left"
    assert sw_status(r.sw) == "error"
    shown = text(c.describe(secrets=True))
    assert "31 32 33 34 35 36 FF FF" in shown


def test_verify_without_data_is_a_status_query():
    c = decode_command(h("00 20 00 80"))
    assert c.case == "1" and not c.carries_pin
    assert "status query" in c.summary()
    assert decode_response(h("90 00"), c).meaning == "success (already verified)"
    assert decode_response(h("63 C3"), c).meaning == "verification failed, 3 tries left"


def test_change_and_reset_retry_counter():
    change = decode_command(h("00 24 00 80 10 31 32 33 34 35 36 FF FF 36 35 34 33 32 31 FF FF"))
    assert change.name == "CHANGE REFERENCE DATA" and change.carries_pin
    assert "first block 6 ASCII digits" in text(change.describe())
    reset = decode_command(h("00 2C 00 80 10 31 32 33 34 35 36 37 38 31 32 33 34 FF FF FF FF"))
    assert reset.name == "RESET RETRY COUNTER" and reset.carries_pin
    assert "resetting code and new reference data" in text(reset.describe())
    no_data = decode_command(h("00 2C 03 81"))
    assert not no_data.carries_pin and "no data" in text(no_data.describe())


def test_pin_detection_respects_secure_messaging():
    assert not carries_pin(h("0C 20 00 80 0B 87 09 01 11 22 33 44 55 66 77 88"))
    sm = decode_command(h("0C 20 00 80 0B 87 09 01 11 22 33 44 55 66 77 88"))
    assert sm.cla is not None and sm.cla.secure_messaging
    assert "padding indicator + cryptogram" in text(sm.describe())
    assert carries_pin(h("00 20 00 81 06 31 32 33 34 35 36"))  # OpenPGP PW1
    assert carries_pin(h("00 20 00 80 00 00 08 31 32 33 34 35 36 FF FF"))  # extended
    assert pin_field(h("00 20 00 80 00 00 08 31 32 33 34 35 36 FF FF")) == (7, 8)
    assert pin_field(VERIFY_PIV) == (5, 8)
    assert not carries_pin(GET_CERT_9A)
    assert not carries_pin(h("00 20 00 80"))
    assert not carries_pin(h("FF 20 00 80 02 31 32"))  # reader pseudo-APDU class


def test_malformed_verify_still_hides_the_pin():
    raw = h("00 20 00 80 08 31 32 33")  # Lc says 8, 3 bytes follow
    c = decode_command(raw)
    assert not c.ok
    assert pin_field(raw) == (5, 3)
    out = text(c.describe()) + json.dumps(c.to_json())
    assert "31 32 33" not in out and "313233" not in out
    assert any("Lc=8 but 3 bytes follow" in n for n in c.notes)


def test_get_data_piv_certificate_object():
    c = decode_command(GET_CERT_9A)
    assert c.name == "GET DATA" and c.app == "piv"
    assert c.summary() == "GET DATA X.509 Certificate for PIV Authentication (9A)"
    assert "5C tag list" in text(c.describe())
    cert = tlv(0x30, b"\x30\x03\x02\x01\x02" + b"\x00" * 20)
    resp = tlv(0x53, tlv(0x70, cert) + tlv(0x71, b"\x00") + tlv(0xFE, b"")) + h("90 00")
    r = decode_response(resp, c)
    out = text(r.describe())
    assert "53 PIV data container" in out
    assert "70 certificate" in out and "71 CertInfo" in out
    assert "FE error detection code" in out


def test_get_data_piv_discovery_and_chuid():
    c = decode_command(h("00 CB 3F FF 03 5C 01 7E 00"))
    assert "Discovery Object" in c.summary()
    r = decode_response(DISCOVERY + h("90 00"), c)
    out = text(r.describe())
    assert "7E discovery object" in out
    assert "4F PIV card application AID [11]" in out
    assert "PIN usage policy" in out and "satisfied by PIV PIN" in out
    chuid = tlv(0x53, tlv(0x30, b"\xd4" * 25) + tlv(0x34, b"\x11" * 16)
                + tlv(0x35, b"20300101") + tlv(0x3E, b"") + tlv(0xFE, b""))
    r = decode_response(chuid + h("90 00"), h("00 CB 3F FF 05 5C 03 5F C1 02 00"))
    out = text(r.describe())
    assert "30 FASC-N" in out and "34 GUID" in out and "35 expiration date [8]: '20300101'" in out


def test_general_authenticate_piv():
    c = decode_command(h("00 87 03 9B 04 7C 02 80 00"))
    assert c.name == "GENERAL AUTHENTICATE"
    out = text(c.describe())
    assert "P1 03: algorithm 3DES-ECB" in out
    assert "Card Application Administration (management) key" in out
    assert "asks for: witness" in out
    r = decode_response(h("7C 0A 80 08 01 02 03 04 05 06 07 08 90 00"), c)
    assert "80 witness [8]: 01 02 03 04 05 06 07 08" in text(r.describe())
    sign = decode_command(h("00 87 11 9A 26 7C 24 82 00 81 20") + bytes(32) + h("00"))
    assert "ECC P-256" in sign.summary() and "PIV Authentication key" in sign.summary()


def test_generate_key_piv_and_openpgp():
    piv = decode_command(h("00 47 00 9A 05 AC 03 80 01 11 00"))
    assert piv.summary() == "GENERATE ASYMMETRIC KEY PAIR PIV Authentication key (ECC P-256)"
    point = b"\x04" + bytes(64)
    r = decode_response(tlv(0x7F49, tlv(0x86, point)) + h("90 00"), piv)
    assert "86 EC point [65]" in text(r.describe())
    pgp = decode_command(h("00 47 80 00 02 B6 00 00"), app="openpgp")
    assert "generate a key pair: signature key" in pgp.summary()
    rsa = tlv(0x7F49, tlv(0x81, b"\xc1" * 256) + tlv(0x82, h("01 00 01")))
    out = text(decode_response(rsa + h("90 00"), pgp).describe())
    assert "81 modulus [256]" in out and "82 public exponent [3]: 01 00 01" in out
    read = decode_command(h("00 47 81 00 02 B8 00 00"))
    assert "read the existing public key: decryption key" in read.summary()


def test_openpgp_get_data_application_related_data():
    c = decode_command(PGP_APP_DATA)
    assert (c.case, c.le, c.app) == ("2S", 256, "openpgp")
    assert "application related data" in c.summary()
    disc = (tlv(0xC0, h("7D 00 0B FE 08 00 00 FF 00 00")) + tlv(0xC1, h("01 08 00 00 11 00"))
            + tlv(0xC2, h("12 2B 81 04 00 22")) + tlv(0xC3, h("16 2B 06 01 04 01 DA 47 0F 01"))
            + tlv(0xC4, h("00 7F 7F 7F 03 00 03")) + tlv(0xC5, bytes(60))
            + tlv(0xCD, h("5F 00 00 00") + bytes(8)))
    data = tlv(0x6E, tlv(0x4F, h("D2 76 00 01 24 01 03 04 00 06 12 34 56 78 00 00"))
               + tlv(0x5F52, h("00 73 00 00 E0 05 90 00")) + tlv(0x73, disc))
    r = decode_response(data + h("90 00"), c)
    out = text(r.describe())
    assert "4F application identifier (AID) [16]" in out and "OpenPGP card application" in out
    assert "C1 algorithm attributes: signature [6]: RSA 2048 bits" in out
    assert "C2 algorithm attributes: decryption [6]: ECDH NIST P-384" in out
    assert "EdDSA Ed25519" in out
    assert "tries left PW1 3, RC 0, PW3 3" in out
    assert "CD key generation dates [12]: 2020-07-04 04:05:20Z" in out
    assert is_clean(r.tlv or [])


def test_openpgp_pso_and_internal_authenticate():
    sign = decode_command(h("00 2A 9E 9A 13 30 11 30 0D 06 09 60 86 48 01 65 03 04 02 01 05 00"
                            "04 00 00"))
    assert sign.summary() == "PERFORM SECURITY OPERATION compute digital signature"
    dec = decode_command(h("00 2A 80 86 05 00 01 02 03 04 00"))
    assert "decipher" in dec.summary()
    assert "padding indicator 00 (RSA cryptogram)" in text(dec.describe())
    auth = decode_command(h("00 88 00 00 04 01 02 03 04 00"))
    assert auth.name == "INTERNAL AUTHENTICATE"
    assert ins_name(0x00, 0x44, "openpgp") == "ACTIVATE FILE"
    assert ins_name(0x00, 0xE6, "openpgp") == "TERMINATE DF"
    assert decode_command(h("00 E6 00 00")).case == "1"


def test_openpgp_key_import_is_masked():
    body = tlv(0x4D, h("B6 00") + tlv(0x7F48, h("91 03 92 81 80")) + tlv(0x5F48, b"\x42" * 20))
    c = decode_command(h("00 DB 3F FF") + bytes([len(body)]) + body, app="openpgp")
    assert c.secret
    out = text(c.describe()) + json.dumps(c.to_json())
    assert "42 42 42" not in out and "424242" not in out
    assert "5F48 private key data [20]: 20 bytes (not shown)" in out


def test_mse_and_get_response_and_challenge():
    mse = decode_command(h("00 22 41 B6 06 80 01 00 84 01 01"))
    out = text(mse.describe())
    assert "P1 41: SET for computation" in out and "CRT digital signature" in out
    assert "84 key reference (private/session)" in out
    restore = decode_command(h("00 22 F3 03"))
    assert restore.summary() == "MANAGE SECURITY ENVIRONMENT RESTORE SE 3"
    gr = decode_command(h("00 C0 00 00 1C"))
    assert (gr.name, gr.le, gr.summary()) == ("GET RESPONSE", 28, "GET RESPONSE 28 bytes")
    ch = decode_command(h("00 84 00 00 08"))
    assert ch.summary() == "GET CHALLENGE 8 bytes"


def test_read_binary_and_record():
    assert decode_command(h("00 B0 00 10 80")).summary() == "READ BINARY offset 16, 128 bytes"
    assert decode_command(h("00 B0 85 00 00")).summary() == "READ BINARY SFI 5 offset 0, 256 bytes"
    odd = decode_command(h("00 B1 00 00 04 54 02 01 00 00"))
    assert "54 offset [2]: 256" in text(odd.describe())
    rec = decode_command(h("00 B2 01 0C 00"))
    assert "P2 0C: short EF identifier 1; record number P1" in text(rec.describe())


def test_globalplatform_commands():
    iu = decode_command(GP_INIT_UPDATE)
    assert (iu.name, iu.case, iu.app) == ("INITIALIZE UPDATE", "4S", "gp")
    assert "host challenge: 11 22 33 44 55 66 77 88" in text(iu.describe())
    scp02 = bytes(range(10)) + h("FF 02") + h("00 2A") + bytes(6) + b"\xcc" * 8 + h("90 00")
    out = text(decode_response(scp02, iu).describe())
    assert "key version FF, SCP02" in out and "sequence counter: 00 2A" in out
    scp03 = bytes(10) + h("30 03 00") + b"\xaa" * 8 + b"\xbb" * 8 + h("00 00 05 90 00")
    out = text(decode_response(scp03, iu).describe())
    assert "SCP03" in out and "card challenge: AA" in out and "sequence counter: 00 00 05" in out
    ea = decode_command(h("84 82 33 00 10") + b"\x01" * 16)
    assert ea.cla is not None and ea.cla.secure_messaging
    assert "C-MAC + C-DECRYPTION + R-MAC + R-ENCRYPTION" in text(ea.describe())
    st_ = decode_command(h("80 F2 40 02 02 4F 00 00"))
    assert st_.summary() == "GET STATUS applications and security domains"
    entry = tlv(0xE3, tlv(0x4F, h("A0 00 00 01 51 00 00 00")) + tlv(0x9F70, b"\x0f")
                + tlv(0xC5, b"\x9e"))
    out = text(decode_response(entry + h("90 00"), st_).describe())
    assert "E3 GlobalPlatform registry entry" in out and "PERSONALIZED" in out
    assert ins_name(0x80, 0xE6) == "INSTALL" and ins_name(0x00, 0xE6) == "TERMINATE DF"
    assert ins_name(0x80, 0xE8) == "LOAD" and ins_name(0x84, 0xE4) == "DELETE"
    assert ins_name(0x80, 0xF0) == "SET STATUS" and ins_name(0x80, 0xE2) == "STORE DATA"
    assert ins_name(0x00, 0xE2) == "APPEND RECORD"
    inst = decode_command(h("80 E6 0C 00 1A 05 A0 00 00 00 01 06 A0 00 00 00 01 01 06 A0 00"
                            "00 00 01 01 01 00 02 C9 00 00 00"))
    assert "for install + for make selectable" in inst.summary()
    assert "application aid: A0 00 00 00 01 01" in text(inst.describe())
    load = decode_command(h("80 E8 80 03 04 C4 02 01 02"))
    assert load.summary() == "LOAD block 3 (last)"
    cplc = tlv(0x9F7F, bytes(range(42)))
    out = text(decode_response(cplc + h("90 00"), h("80 CA 9F 7F 00")).describe())
    assert "CPLC fields:" in out and "ic serial number: 0C0D0E0F" in out
    key = decode_command(h("80 D8 01 81 05 01 02 03 04 05"))
    assert key.secret and "01 02 03" not in text(key.describe())


def test_yubikey_vendor_instructions_inside_piv():
    assert ins_name(0x00, 0xFD, "piv") == "GET VERSION (YubiKey)"
    assert ins_name(0x00, 0xFD) is None
    mgm = decode_command(h("00 FF FF FF 1B 03 9B 18") + b"\x01" * 24, app="piv")
    assert mgm.name == "SET MANAGEMENT KEY (YubiKey)" and mgm.secret
    assert "01 01 01" not in text(mgm.describe())
    retries = decode_command(h("00 FA 05 03"), app="piv")
    assert retries.summary() == "SET PIN RETRIES (YubiKey) PIN 5, PUK 3"


# --------------------------------------------------------------------------------------------
# Lc/Le cases and the class byte

CASES = [
    ("00 44 00 00", "1", None, None, 0),
    ("00 B0 00 00 10", "2S", None, 16, 0),
    ("00 B0 00 00 00", "2S", None, 256, 0),
    ("00 DA 00 5B 03 41 42 43", "3S", 3, None, 3),
    ("00 A4 04 00 02 3F 00 00", "4S", 2, 256, 2),
    ("00 B0 00 00 00 10 00", "2E", None, 4096, 0),
    ("00 B0 00 00 00 00 00", "2E", None, 65536, 0),
    ("00 DB 3F FF 00 01 00" + " 53" * 256, "3E", 256, None, 256),
    ("00 2A 9E 9A 00 00 20" + " AB" * 32 + " 00 00", "4E", 32, 65536, 32),
    ("00 2A 80 86 00 01 01" + " 00" * 257 + " 02 00", "4E", 257, 512, 257),
]


@pytest.mark.parametrize(("raw", "case", "lc", "le", "n"), CASES)
def test_every_lc_le_case(raw, case, lc, le, n):
    c = decode_command(h(raw))
    assert (c.case, c.lc, c.le, len(c.data)) == (case, lc, le, n)
    assert c.ok and not c.notes
    assert c.extended == case.endswith("E")
    json.dumps(c.to_json())


CLAS = [
    (0x00, "interindustry", 0, False, False),
    (0x01, "interindustry", 1, False, False),
    (0x03, "interindustry", 3, False, False),
    (0x10, "interindustry", 0, True, False),
    (0x13, "interindustry", 3, True, False),
    (0x0C, "interindustry", 0, False, True),
    (0x04, "interindustry", 0, False, True),
    (0x40, "interindustry", 4, False, False),
    (0x4F, "interindustry", 19, False, False),
    (0x50, "interindustry", 4, True, False),
    (0x6A, "interindustry", 14, False, True),
    (0x80, "proprietary", 0, False, False),
    (0x84, "proprietary", 0, False, True),
    (0x81, "proprietary", 1, False, False),
    (0xC1, "proprietary", 5, False, False),
    (0xE0, "proprietary", 4, False, True),
]


@pytest.mark.parametrize(("cla", "kind", "channel", "chaining", "sm"), CLAS)
def test_class_byte(cla, kind, channel, chaining, sm):
    c = parse_cla(cla)
    assert (c.kind, c.channel, c.chaining, c.secure_messaging) == (kind, channel, chaining, sm)


def test_invalid_and_reserved_classes():
    assert parse_cla(0xFF).kind == "invalid"
    assert parse_cla(0x20).kind == "reserved" and parse_cla(0x3F).channel is None
    assert "header authenticated" in parse_cla(0x0C).describe()
    assert "command chaining" in parse_cla(0x10).describe()


def test_invalid_ins_is_noted():
    c = decode_command(h("00 61 00 00"))
    assert any("procedure bytes" in n for n in c.notes)


# --------------------------------------------------------------------------------------------
# Status words


@pytest.mark.parametrize("n", range(16))
def test_63cx_counts_tries(n):
    text_ = sw_meaning(0x63C0 | n)
    if n == 0:
        assert "no tries left" in text_ and "blocked" in text_
    else:
        assert f"{n} {'try' if n == 1 else 'tries'} left" in text_


@pytest.mark.parametrize(("sw", "words", "status"), [
    (0x9000, "success", "ok"),
    (0x6110, "16 more bytes available: use GET RESPONSE", "more"),
    (0x6100, "256 or more bytes", "more"),
    (0x6C10, "exact length is 16", "more"),
    (0x6C00, "exact length is 256", "more"),
    (0x6983, "blocked", "error"),
    (0x6982, "security status not satisfied", "error"),
    (0x6A82, "file or application not found", "error"),
    (0x6A86, "incorrect parameters P1-P2", "error"),
    (0x6A88, "referenced data", "error"),
    (0x6D00, "instruction not supported", "error"),
    (0x6E00, "class not supported", "error"),
    (0x6700, "wrong length", "error"),
    (0x6283, "deactivated", "warning"),
    (0x6A99, "wrong parameters", "error"),
    (0x6F12, "no precise diagnosis", "error"),
    (0x9110, "application-specific", "app"),
    (0x6010, "invalid", "error"),
    (0x1234, "unknown status word", "error"),
])
def test_sw_meanings(sw, words, status):
    assert words in sw_meaning(sw)
    assert sw_status(sw) == status


def test_response_without_sw():
    for raw in (b"", b"\x90"):
        r = decode_response(raw)
        assert r.sw is None and not r.ok and r.notes
        json.dumps(r.to_json())
        assert r.describe()


# --------------------------------------------------------------------------------------------
# Folding


def test_get_response_chain_is_folded_keeping_raw():
    cert = tlv(0x53, tlv(0x70, bytes(range(256)) * 2))  # 520 bytes
    raw = [
        (GET_CERT_9A, h("61 00")),
        (h("00 C0 00 00 00"), cert[:256] + h("61 00")),
        (h("00 C0 00 00 00"), cert[256:512] + h("61 08")),
        (h("00 C0 00 00 08"), cert[512:] + h("90 00")),
    ]
    (ex,) = fold_exchanges(raw)
    assert ex.raw == raw and len(ex.sources) == 4
    assert ex.response is not None and ex.response.data == cert and ex.sw == 0x9000
    assert ex.folded == ["3 GET RESPONSE after 61xx"]
    assert ex.command.raw == GET_CERT_9A
    out = text(ex.describe())
    assert "70 certificate [512]" in out and "4 raw exchanges" in out
    js = ex.to_json()
    assert len(js["raw"]) == 4 and js["response"]["sw"] == "9000"
    json.dumps(js)


def test_6cxx_resend_is_folded():
    raw = [
        (h("00 CA 00 C4 00"), h("6C 07")),
        (h("00 CA 00 C4 07"), h("00 7F 7F 7F 03 00 03 90 00")),
        (h("00 20 00 81 00"), h("63 C3")),
    ]
    first, second = fold_exchanges(raw, app="openpgp")
    assert first.command.le == 7 and first.response is not None
    assert first.response.data == h("00 7F 7F 7F 03 00 03")
    assert first.folded == ["re-sent with Le=07 after 6C07"] and len(first.raw) == 2
    assert second.raw == [raw[2]] and not second.folded


def test_6cxx_on_get_response_and_t1_data_with_61xx():
    raw = [
        (h("00 CB 3F FF 03 5C 01 7E 00"), DISCOVERY[:10] + h("61 0A")),
        (h("00 C0 00 00 00"), h("6C 0A")),
        (h("00 C0 00 00 0A"), DISCOVERY[10:] + h("90 00")),
    ]
    (ex,) = fold_exchanges(raw)
    assert ex.response is not None and ex.response.data == DISCOVERY
    assert "GET RESPONSE re-sent with Le=0A" in ex.folded
    assert "PIN usage policy" in text(ex.describe())


def test_command_chaining_joined_then_get_response():
    sig = b"\x5a" * 256
    data = tlv(0x7C, h("82 00") + tlv(0x81, sig))
    assert len(data) == 266
    response = tlv(0x7C, tlv(0x82, b"\x99" * 256))
    raw = [
        (h("10 87 07 9A FF") + data[:255], h("90 00")),
        (h("00 87 07 9A 0B") + data[255:] + h("00"), h("61 00")),
        (h("00 C0 00 00 00"), response[:256] + h("61 08")),
        (h("00 C0 00 00 08"), response[256:] + h("90 00")),
    ]
    (ex,) = fold_exchanges(raw)
    assert ex.command.data == data and ex.command.extended
    assert ex.command.cla is not None and not ex.command.cla.chaining
    assert ex.folded == ["command chaining: 2 parts joined", "2 GET RESPONSE after 61xx"]
    assert ex.response is not None and ex.response.data == response
    assert "PIV Authentication key (RSA 2048)" in ex.command.summary()
    assert ex.raw == raw


def test_chain_stopped_by_an_error():
    raw = [
        (h("10 DB 3F FF 03 5C 01 7E"), h("6A 80")),
        (h("00 CB 3F FF 03 5C 01 7E 00"), h("6A 82")),
    ]
    a, b = fold_exchanges(raw)
    assert a.sw == 0x6A80 and len(a.raw) == 1 and not a.folded
    assert b.sw == 0x6A82


def test_folding_apdu_events_tracks_the_selected_application():
    events = [
        Apdu(seq=1, command=h("00 A4 04 00 06 D2 76 00 01 24 01 00"), response=h("90 00")),
        Apdu(seq=2, command=h("00 20 00 81 06 31 32 33 34 35 36"), response=h("90 00")),
        Apdu(seq=3, command=h("00 F1 00 00 00"), response=h("05 04 03 90 00")),
        Apdu(seq=4, command=h("01 A4 04 00 09 A0 00 00 03 08 00 00 10 00 00"),
             response=h("90 00")),
        Apdu(seq=5, command=h("01 20 00 81"), response=h("63 C3")),
        Apdu(seq=6, command=h("00 20 00 81"), response=None),
    ]
    exs = fold_exchanges(events)
    assert [e.app for e in exs] == ["openpgp", "openpgp", "openpgp", "piv", "piv", "openpgp"]
    assert exs[1].command.brief.startswith("PW1 (user PIN, for signing)")
    assert exs[2].command.name == "GET VERSION (YubiKey)"
    assert exs[4].command.brief.startswith("PIN unblocking key (PUK)")
    assert exs[5].response is None and "no response recorded" in text(exs[5].describe())
    assert exs[0].sources == [events[0]]
    js = json.dumps([e.to_json() for e in exs])
    assert "313233" not in js
    assert "** ** **" in text(exs[1].describe())


def test_apdu_event_json_uses_the_name_table():
    ev = Apdu(seq=0, command=h("80 E6 0C 00 00"), response=h("90 00"))
    assert ev.to_json()["ins_name"] == "INSTALL"
    assert Apdu(seq=0, command=SELECT_PIV).to_json()["ins_name"] == "SELECT"


# --------------------------------------------------------------------------------------------
# BER-TLV


def test_tlv_piv_discovery_tree():
    nodes = parse_tlv(DISCOVERY, "piv")
    assert is_clean(nodes)
    (top,) = nodes
    assert top.tag == 0x7E and top.constructed and top.name == "discovery object"
    assert [c.tag for c in top.children] == [0x4F, 0x5F2F]
    assert top.children[1].tag_hex == "5F2F"
    lines = render_tlv(nodes)
    assert lines[0] == "7E discovery object [18]"
    assert lines[1].startswith("  4F PIV card application AID [11]: A0 00 00 03 08")
    assert lines[2].startswith("  5F2F PIN usage policy [2]: 40 00: satisfied by PIV PIN")
    json.dumps([n.to_json() for n in nodes])


def test_tlv_fci_and_fcp_templates():
    fci = h("6F 1A 84 0E 31 50 41 59 2E 53 59 53 2E 44 44 46 30 31 A5 08 88 01 02 5F 2D 02 65 6E")
    (top,) = parse_tlv(fci)
    assert top.name == "FCI template (file control information)"
    names = [n.name for n in walk([top])]
    assert "DF name (AID)" in names and "short file identifier" in names
    out = text(render_tlv([top]))
    assert "EMV payment system environment" in out and "5F2D language preference [2]: 'en'" in out
    fcp = h("62 0E 82 01 38 83 02 3F 00 8A 01 05 80 02 01 00")
    out = text(render_tlv(parse_tlv(fcp)))
    assert "82 file descriptor [1]: 38: DF" in out
    assert "83 file identifier [2]: 3F 00" in out
    assert "8A life cycle status [1]: 05: operational, activated" in out
    assert "80 number of data bytes in the file [2]: 256" in out
    ef = text(render_tlv(parse_tlv(h("62 03 82 01 01"))))
    assert "working EF, transparent" in ef


def test_tlv_multibyte_tags_and_long_lengths():
    value = bytes(300)
    data = tlv(0x5FC105, b"\x01") + tlv(0x9F7F, bytes(200)) + tlv(0x53, value)
    nodes = parse_tlv(data)
    assert [n.tag for n in nodes] == [0x5FC105, 0x9F7F, 0x53]
    assert [n.length for n in nodes] == [1, 200, 300]
    assert nodes[1].offset == 5 and nodes[2].offset == 5 + 2 + 2 + 200
    assert is_clean(nodes)


def test_tlv_malformed_never_raises():
    cases = {
        "indefinite": h("7C 80 81 00 00 00"),
        "truncated value": h("53 05 01 02"),
        "truncated length": h("53 82 01"),
        "length of 5 bytes": h("53 85 00 00 00 00 01"),
        "tag truncated": h("5F"),
        "tag too long": h("5F 81 81 81 81 01 00"),
    }
    for label, raw in cases.items():
        nodes = parse_tlv(raw)
        assert nodes[-1].kind == "raw" and nodes[-1].error, label
        assert not is_clean(nodes)
        assert render_tlv(nodes)
        json.dumps([n.to_json() for n in nodes])
    assert "indefinite" in (parse_tlv(cases["indefinite"])[-1].error or "")
    # what parsed before the problem is kept
    nodes = parse_tlv(h("4F 02 A0 00 53 05 01"))
    assert nodes[0].tag == 0x4F and nodes[1].kind == "raw" and nodes[1].value == h("53 05 01")
    # nested problem marks the parent
    nodes = parse_tlv(h("7C 04 81 05 00 00"))
    assert nodes[0].error and nodes[0].children[-1].kind == "raw"
    # filler bytes between objects
    nodes = parse_tlv(h("4F 01 AA 00 00 FF 50 01 41"))
    assert [n.kind for n in nodes] == ["tlv", "padding", "tlv"]
    assert parse_tlv(b"") == []


def test_tlv_deep_nesting_is_bounded():
    data = b"\x01"
    for _ in range(40):
        data = tlv(0x7C, data) if len(data) < 120 else data
    data = b"\x7c\x02\x7c\x00"
    for _ in range(30):
        data = bytes([0x7C, len(data)]) + data if len(data) < 127 else data
    nodes = parse_tlv(data)
    assert render_tlv(nodes)


# --------------------------------------------------------------------------------------------
# Malformed APDUs and fuzzing: never raise, always render


@pytest.mark.parametrize("raw", [
    "", "00", "00 A4", "00 A4 04", "00 A4 04 00 09 A0 00",  # truncated
    "00 A4 04 00 09 A0 00 00 03 08 00 00 10 00 00 00 00",  # Lc smaller than data
    "00 B0 00 00 00 10",  # extended Le truncated
    "00 DA 00 5B 00 00 05 41",  # extended Lc larger than data
    "00 DA 00 5B 00 00 00 41",  # extended Lc zero
])
def test_malformed_commands_fall_back_to_hex(raw):
    c = decode_command(h(raw))
    assert not c.ok and c.notes
    assert not any("decoder error" in n for n in c.notes)
    assert c.describe()
    json.dumps(c.to_json())


def _no_decoder_error(notes: list[str]) -> None:
    assert not any("decoder error" in n for n in notes), notes


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([None, "piv", "openpgp", "gp"]))
def test_fuzz_commands(raw, app):
    c = decode_command(raw, app)
    _no_decoder_error(c.notes)
    c.describe()
    c.summary()
    json.dumps(c.to_json())
    assert carries_pin(raw) in (True, False)


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=4, max_size=8), st.binary(max_size=260))
def test_fuzz_commands_with_header_and_tlv_body(head, body):
    """Random bodies behind plausible headers reach the per-instruction handlers."""
    for ins in (0xA4, 0x20, 0xCB, 0xCA, 0x87, 0x47, 0x2A, 0x22, 0xB0, 0xB2, 0xE6, 0xF2, 0x50):
        for cla in (0x00, 0x80, 0x84, 0x0C):
            raw = bytes([cla, ins]) + head[2:4]
            if body:
                raw += (bytes([len(body)]) + body) if len(body) < 256 else \
                    b"\x00" + len(body).to_bytes(2, "big") + body
            c = decode_command(raw)
            _no_decoder_error(c.notes)
            c.describe()
            json.dumps(c.to_json())
            r = decode_response(body + b"\x90\x00", c)
            _no_decoder_error(r.notes)
            r.describe()
            json.dumps(r.to_json())


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_tlv(raw):
    for ctx in ("", "piv", "openpgp", "gp"):
        nodes = parse_tlv(raw, ctx)
        render_tlv(nodes)
        json.dumps([n.to_json() for n in nodes])
        assert sum(len(n.value) for n in nodes if n.kind != "tlv") <= len(raw)


exchange = st.tuples(
    st.one_of(st.binary(max_size=12), st.sampled_from([
        h("00 C0 00 00 00"), h("00 C0 00 00 10"), h("10 DB 3F FF 01 00"), GET_CERT_9A,
        h("00 A4 04 00 06 D2 76 00 01 24 01"), h("00 70 80 01")])),
    st.one_of(st.none(), st.binary(max_size=6), st.sampled_from([
        h("61 10"), h("6C 05"), h("90 00"), h("61 00"), h("01 61 02")])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(exchange, max_size=12))
def test_fuzz_folding(pairs):
    exs = fold_exchanges(pairs)
    assert sum(len(e.raw) for e in exs) == len(pairs)
    assert [p for e in exs for p in e.raw] == [(bytes(c), r) for c, r in pairs]
    for e in exs:
        _no_decoder_error(e.command.notes)
        e.describe()
        json.dumps(e.to_json())


def test_a_response_too_short_for_a_status_word_says_so() -> None:
    """pcscd can return success with no bytes when the card goes mid-exchange: the text must
    not print `SW None`."""
    from p11spy.decoder.events import Apdu
    from p11spy.decoder.render import apdu_text

    empty = Apdu(seq=1, parent=0, command=bytes.fromhex("0087079A00"), response=b"")
    assert apdu_text(empty)[1] == "    << (empty)  no status word"
    one = Apdu(seq=1, parent=None, command=bytes.fromhex("0087079A00"), response=b"\x90")
    assert apdu_text(one)[1] == "<< 90  no status word"
