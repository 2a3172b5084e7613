"""`p11spy redact --strict` on traces over a card: the data of every APDU response is masked
(certificates, the card's serial and cardholder data travel there), the status words stay,
and the trace decodes to the same exchanges; without --strict the responses are untouched."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from p11spy.decoder import redact
from p11spy.decoder.events import Apdu
from p11spy.decoder.formats.registry import detect, formats
from tests.conftest import REPO

FIX = REPO / "fixtures"
CARD_TRACES = [FIX / "p11spy" / "real-card-sign.p11",
               FIX / "opensc-debug" / "real-0.23-card-sign-debug9.log",
               FIX / "pcsc-spy" / "real-1.9.9-card-wrong-pin.raw",
               FIX / "pcsc-spy" / "real-1.9.9-card-wrong-pin-decoded-n.txt"]


def apdus(fmt: str, data: bytes) -> list[Apdu]:
    return [e for e in formats()[fmt].read(io.BytesIO(data)) if isinstance(e, Apdu)]


def redacted(fmt: str, data: bytes, strict: bool) -> bytes:
    out = io.BytesIO()
    redact.redact(fmt, io.BytesIO(data), out, redact.Options(strict=strict))
    return out.getvalue()


@pytest.mark.parametrize("path", CARD_TRACES, ids=[p.name for p in CARD_TRACES])
def test_strict_masks_response_data_and_keeps_status_words(path: Path) -> None:
    fmt = detect(path)
    data = path.read_bytes()
    before = apdus(fmt, data)
    after = apdus(fmt, redacted(fmt, data, strict=True))
    assert len(after) == len(before) and any(len(a.response or b"") > 2 for a in before)
    for b, a in zip(before, after, strict=True):
        assert (a.sw, a.command[:4], len(a.command)) == (b.sw, b.command[:4], len(b.command))
        if b.response is not None and len(b.response) > 2:
            assert a.response is not None and len(a.response) == len(b.response)
            assert set(a.response[:-2]) == {0x2A}
    plain = apdus(fmt, redacted(fmt, data, strict=False))
    assert [a.response for a in plain] == [b.response for b in before]
