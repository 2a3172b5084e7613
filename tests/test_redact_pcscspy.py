"""`p11spy redact` on pcsc-spy traces: the VERIFY PINs pcsc-spy shows in clear, in the raw
stream and in the decoded text, and the PIN structures sent to a PIN-pad reader."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from p11spy.decoder import masking, redact
from p11spy.decoder.events import Apdu, PcscCall
from p11spy.decoder.formats.pcsc_spy import reader as pcscspy_text
from testbed.card_station import CardStation
from testbed.record_pcscspy import Spy, decoded
from tests.conftest import REPO

FIXTURES = REPO / "fixtures" / "pcsc-spy"
TRACES = sorted(p for p in FIXTURES.iterdir() if p.suffix in (".raw", ".txt"))
WRONG_PIN = "975312"
P11SPY = str(Path(sys.executable).parent / "p11spy")


def shape(data: bytes) -> list[tuple]:
    """What a trace decodes to, but for the masked bytes."""
    out = []
    for e in pcscspy_text.read(io.BytesIO(data)):
        if isinstance(e, Apdu):
            out.append(("apdu", e.command[:5], len(e.command), e.sw, e.error))
        elif isinstance(e, PcscCall):
            out.append(("pcsc", e.function, e.rv))
        else:
            out.append((e.type,))
    return out


def redacted(data: bytes) -> tuple[bytes, list[masking.Finding]]:
    out = io.BytesIO()
    found = redact.redact("pcsc-spy", io.BytesIO(data), out)
    return out.getvalue(), found


def pins(data: bytes) -> list[bytes]:
    """The PIN of each VERIFY / CHANGE / RESET the trace shows (their FF padding off)."""
    return [a.command[5:5 + a.command[4]].rstrip(b"\xff")
            for a in pcscspy_text.read(io.BytesIO(data)) if isinstance(a, Apdu)
            and len(a.command) > 5 and a.command[1] in (0x20, 0x24, 0x2C)]


@pytest.mark.parametrize("path", TRACES, ids=[p.name for p in TRACES])
def test_fixture_redacts_to_the_same_trace_without_the_pin(path: Path) -> None:
    data = path.read_bytes()
    out, found = redacted(data)
    secret = pins(data)
    assert bool(found) == bool(secret)
    assert len(out) == len(data) and out.count(b"\n") == data.count(b"\n")
    for pin in secret:
        assert set(pin) <= set(b"0123456789") and pin  # test PINs: ASCII digits
        assert pin.hex(" ").upper().encode() not in out
        if len(set(pin)) > 1:  # "000000" is also in every 0x00000000
            assert pin not in out
    assert all(set(p) == {0x2A} for p in pins(out))  # masked, the FF padding kept
    assert shape(out) == shape(data)
    assert redact.check("pcsc-spy", io.BytesIO(out)) == []


def test_command_line_check_fails_before_and_passes_after(tmp_path: Path) -> None:
    src = FIXTURES / "real-1.9.9-card-wrong-pin-decoded-n.txt"
    before = subprocess.run([P11SPY, "redact", "--check", "--pin", WRONG_PIN, str(src)],
                            capture_output=True, text=True, timeout=60)
    assert before.returncode == 1 and "PIN APDU data (PIN)" in before.stdout
    out = tmp_path / "shared.txt"
    subprocess.run([P11SPY, "redact", str(src), "-o", str(out)], check=True, timeout=60,
                   capture_output=True)
    after = subprocess.run([P11SPY, "redact", "--check", "--pin", WRONG_PIN, str(out)],
                           capture_output=True, text=True, timeout=60)
    assert after.returncode == 0, after.stdout
    assert " i  0000 00 20 00 80 08 2A 2A 2A 2A 2A 2A FF FF          . ...******.." in \
        out.read_text().splitlines()


@pytest.mark.parametrize("piv_card", [{"pinpad": WRONG_PIN}], indirect=True)
def test_pin_pad_structure_is_masked(piv_card: CardStation, tmp_path: Path) -> None:
    """A PIN-pad reader (the station's): OpenSC sends the PIN_VERIFY_STRUCTURE by SCardControl
    with the control code the reader announced; both forms of the trace get it masked."""
    spy = Spy(tmp_path / "spy")
    raw = tmp_path / "pinpad.raw"
    r = spy.capture(raw, ["pkcs11-tool", "--module", piv_card.module, "--login", "-O"],
                    piv_card.env)
    assert "CKR_PIN_INCORRECT" in r.stderr
    text = tmp_path / "pinpad.txt"
    decoded(raw, text, "-n")
    for path in (raw, text):
        data = path.read_bytes()
        out, found = redacted(data)
        assert {f.what for f in found} == {"PIN-pad structure (PIN)"}, (path.name, found)
        assert len(out) == len(data) and shape(out) == shape(data)
        assert redact.check("pcsc-spy", io.BytesIO(out)) == []
