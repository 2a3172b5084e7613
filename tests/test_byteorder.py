"""Traces in either byte order: the same client's trace from s390x (big-endian) and from x86_64
reads the same in the decoder, the masker and the viewer's index; older traces, which have no
byte-order mark, read as little-endian as before (tests/test_golden.py holds their output)."""

from __future__ import annotations

import io
import struct

from p11spy.decoder.events import Call, Process
from p11spy.decoder.formats.p11spy import byteorder, masker, reader
from p11spy.decoder.masking import Options
from p11spy.facts import logformat as lf
from p11spy.tui.p11_index import P11Index
from tests.conftest import REPO, read_trace
from tests.test_cross import calls

FIXTURES = REPO / "fixtures" / "p11spy"
BIG = FIXTURES / "cross-s390x.p11"
LITTLE = FIXTURES / "cross-x86_64.p11"


def test_fixtures_are_what_their_names_say():
    big, little = BIG.read_bytes(), LITTLE.read_bytes()
    assert big[lf.BOM_OFFSET:lf.BOM_OFFSET + 8] == bytes(range(1, 9))
    assert little[lf.BOM_OFFSET:lf.BOM_OFFSET + 8] == bytes(range(8, 0, -1))
    assert byteorder.is_big_endian(big) and not byteorder.is_big_endian(little)
    old = (FIXTURES / "real-card-list.p11").read_bytes()
    assert old[lf.BOM_OFFSET:lf.BOM_OFFSET + 8] == bytes(8)  # before the mark: little-endian


def test_both_byte_orders_decode_to_the_same_calls():
    big, little = read_trace(BIG), read_trace(LITTLE)
    heads = [e.info for e in big + little if isinstance(e, Process)]
    assert [h["byte_order"] for h in heads] == ["big", "little"]
    want, got = calls(little), calls(big)
    assert len(got) == len(want) >= 35
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"call {i} ({w[0]}) differs"


def test_big_endian_trace_redacts_into_its_little_endian_twin():
    """--strict masks the token's serial number and labels in the structs: the masker reads a
    big-endian trace's records, and writes them little-endian, each of the same length."""
    out = io.BytesIO()
    with BIG.open("rb") as f:
        masker.redact(f, out, Options(strict=True), lambda _finding: None)
    data = out.getvalue()
    assert len(data) == BIG.stat().st_size
    assert not byteorder.is_big_endian(data)
    redacted = list(reader.read(io.BytesIO(data)))
    token = next(c for c in redacted if isinstance(c, Call) and c.function == "C_GetTokenInfo")
    assert set(token.args["pInfo"]["serialNumber"]) == {"*"}
    assert token.args["pInfo"]["ulMaxPinLen"] == 255  # the numbers around it read right
    assert [c[:2] for c in calls(redacted)] == [c[:2] for c in calls(read_trace(BIG))]


def test_viewer_index_reads_a_big_endian_trace():
    idx = P11Index(BIG)
    try:
        idx.scan(lambda: False)
        records = range(len(idx.kinds))
        decoded = [c.function for c in read_trace(BIG) if isinstance(c, Call)]
        assert [idx.function(r) for r in records if idx.function(r).startswith("C_")] == decoded
        logins = [r for r in records if idx.function(r) == "C_Login"]
        assert [idx.event(r).rv_name for r in logins] == ["CKR_OK", "CKR_PIN_INCORRECT",
                                                          "CKR_OK"]
    finally:
        idx.close()


def test_records_of_later_types_swap_their_fields():
    """A record type the byte-order code does not name (the dropped-record count) holds plain
    fields: its big-endian form becomes exactly the little-endian one."""
    def record(order: str) -> bytes:
        body = struct.pack(f"{order}BBBBI", 0, lf.Phase.OUT, lf.Kind.ULONG, 0, 8)
        body += struct.pack(f"{order}Q", 3)
        return struct.pack(f"{order}4sIBBHIQQQQQ", lf.MAGIC, lf.RECORD.size + len(body),
                           lf.RecordType.DROPPED, 0, 0, 4242, 4243, 10**15, 0, 0, 0) + body

    assert byteorder.to_little(record(">")) == record("<")
