"""pcsc-lite's pcsc-spy traces (the raw FIFO stream and the text the pcsc-spy tool prints) read
into PcscCall and Apdu events.

Counts are computed here from the raw text of each fixture (entry and return lines of the raw
stream; function and ` => ` lines of the decoded text) and compared with what the reader makes
of it; each raw stream and the text pcsc-spy printed from it must decode to the same events.
"""

from __future__ import annotations

import collections
import io
import json
import random
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p11spy.decoder import render
from p11spy.decoder.events import Apdu, Event, PcscCall, TraceWarning
from p11spy.decoder.formats import registry as commands
from p11spy.decoder.formats.pcsc_spy import reader as pcscspy_text
from p11spy.decoder.values import pcsc_rv_name
from p11spy.facts import logformat
from tests import readers
from tests.conftest import REPO
from tests.readers import of

FIXTURES = REPO / "fixtures" / "pcsc-spy"
P11SPY = str(Path(sys.executable).parent / "p11spy")

ALL = sorted(p.name for p in FIXTURES.iterdir() if p.suffix in (".raw", ".txt"))
RAW = [n for n in ALL if n.endswith(".raw")]
DECODED = [n for n in ALL if n.endswith(".txt")]
CRASH = "real-1.9.9-null-recv-pci-crash"
WRONG_PIN = "real-1.9.9-card-wrong-pin"
# Warnings each fixture must produce (substrings), and no others.
EXPECTED_WARNINGS = {f"{CRASH}.raw": ["SCardTransmit (thread 7F", "no return line"],
                     f"{CRASH}-decoded-n.txt": ["SCardTransmit (thread t0)", "no return line"]}

RAW_ENTRY = re.compile(r"^([0-9A-F]+)@>\|\d+\|\d+\|(\w+)$", re.M)
RAW_RETURN = re.compile(r"^([0-9A-F]+)@<\|\d+\|\d+\|(\w+)\|[^|\n]*\|0x([0-9A-F]{8})$", re.M)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
DEC_NAME = re.compile(r"^ *(?:\(t(\d+)\) )?(SCar\w+)$", re.M)
DEC_RETURN = re.compile(r"^ *(?:\(t\d+\) )? => .*\[0x([0-9A-F]{8})\]\)? +"
                        r"\[(?:[\d.]+|\?\?\.\?\?)\]$", re.M)


def decode(path: Path) -> list[Event]:
    return readers.decode(pcscspy_text.read, path)


def decode_bytes(data: bytes) -> list[Event]:
    events = readers.decode_bytes(pcscspy_text.read, data)
    assert [e.seq for e in events] == list(range(len(events)))
    return events


def text_of(name: str) -> str:
    return ANSI.sub("", (FIXTURES / name).read_bytes().decode("utf-8", "replace"))


def p11spy(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([P11SPY, *args], capture_output=True, text=True, timeout=timeout)


def expected(name: str) -> dict:
    """What the raw text says: calls by function, return values, threads."""
    text = text_of(name)
    if name.endswith(".raw"):
        entries = [(int(t, 16), f) for t, f in RAW_ENTRY.findall(text)]
        returns = [(f, int(rv, 16)) for _t, f, rv in RAW_RETURN.findall(text)]
        threads = {t for t, _ in entries}
    else:
        names = DEC_NAME.findall(text)
        entries = [(int(t or 0), "SCardControl" if f == "SCarControl" else f) for t, f in names]
        returns = [(None, int(rv, 16)) for rv in DEC_RETURN.findall(text)]
        threads = {t for t, _ in entries}
        if "(t" not in text:  # threads by indentation: four spaces a level
            threads = {len(m.group(1)) // 4 for m in re.finditer(r"^( *)SCar\w+$", text, re.M)}
    return {"entries": entries, "returns": returns, "threads": threads}


# --- every fixture --------------------------------------------------------------------------


def test_fixtures_are_all_described():
    readers.assert_fixtures_described(FIXTURES, ALL, r"real output of (libpcscspy 1\.9\.9 made "
                                      r"by `regenerate\.sh`|`pcsc-spy[^`]*` 1\.1 on)")
    # every decoded fixture has the raw stream it was printed from
    for name in DECODED:
        if name.startswith("real-"):
            assert (FIXTURES / (name.split("-decoded-")[0] + ".raw")).exists()


@pytest.mark.parametrize("name", ALL)
def test_fixture_decodes_with_exact_counts(name):
    path = FIXTURES / name
    want = expected(name)
    events = decode(path)
    assert [e.seq for e in events] == list(range(len(events)))
    apdus, calls = of(events, Apdu), of(events, PcscCall)
    entries, returns = want["entries"], want["returns"]
    assert entries and len(returns) <= len(entries)
    # one event per call: an Apdu per SCardTransmit, a PcscCall for the others
    assert len(apdus) == sum(f == "SCardTransmit" for _, f in entries)
    assert collections.Counter(c.function for c in calls) == \
        collections.Counter(f for _, f in entries if f != "SCardTransmit")
    # return values: every call that returned has its rv (a transmit: no error, or the rv's
    # name as its error); a call that did not return has none
    returned = [c.rv_name for c in calls if c.rv is not None] + \
        [a.error or "SCARD_S_SUCCESS" for a in apdus if a.error or a.response is not None]
    assert collections.Counter(returned) == \
        collections.Counter(pcsc_rv_name(rv) for _, rv in returns)
    assert sum(c.rv is None for c in calls) + \
        sum(a.error is None and a.response is None for a in apdus) == len(entries) - len(returns)
    for c in calls:
        assert c.rv is None or c.rv_name == pcsc_rv_name(c.rv)
        assert c.parent is None and c.pid is None
    if name.endswith(".raw"):  # the raw return lines name their function
        assert collections.Counter((c.function, c.rv) for c in calls if c.rv is not None) == \
            collections.Counter(r for r in returns if r[0] != "SCardTransmit")
        assert collections.Counter(a.error for a in apdus if a.error) == collections.Counter(
            pcsc_rv_name(rv) for f, rv in returns if f == "SCardTransmit" and rv)
    # a failed transmit has an error and no response
    assert all(a.response is None for a in apdus if a.error)
    assert all(a.parent is None for a in apdus)
    # threads, times and durations where the form gives them
    assert {e.tid for e in apdus + calls} == want["threads"]
    if name.endswith(".raw"):
        assert all(e.time is not None for e in apdus + calls)
        assert all((e.duration_us is None) == (e.rv is None if isinstance(e, PcscCall) else
                                               e is apdus[-1] and name.startswith(CRASH))
                   for e in apdus + calls)
    else:
        assert all(e.time is None for e in apdus + calls)
        if "-d" not in name.split("-decoded-")[-1]:
            assert sum(e.duration_us is not None for e in apdus + calls) == len(returns)
    warnings = [w.message for w in of(events, TraceWarning)]
    parts = EXPECTED_WARNINGS.get(name, [])
    assert len(warnings) == (1 if parts else 0), warnings
    for part in parts:
        assert part in warnings[0]
    for e in events:
        json.dumps(e.to_json())
    render.text(iter(events), io.StringIO())


def _per_thread(events: list[Event]) -> list[list[Event]]:
    threads: dict = {}
    for e in events:
        if isinstance(e, (Apdu, PcscCall)):
            threads.setdefault(e.tid, []).append(e)
    return list(threads.values())


@pytest.mark.parametrize("name", [n for n in DECODED if n.startswith("real-")])
def test_decoded_text_reads_as_its_raw_stream(name):
    raw = decode(FIXTURES / (name.split("-decoded-")[0] + ".raw"))
    text = decode(FIXTURES / name)
    diffable = "-d" in name.split("-decoded-")[-1]
    threads_raw, threads_text = _per_thread(raw), _per_thread(text)
    assert [len(t) for t in threads_raw] == [len(t) for t in threads_text]
    for a_thread, b_thread in zip(threads_raw, threads_text, strict=True):
        for a, b in zip(a_thread, b_thread, strict=True):
            assert type(a) is type(b)
            if isinstance(a, Apdu):
                assert (a.command, a.response, a.error) == (b.command, b.response, b.error)
            else:
                assert (a.function, a.rv, a.rv_name) == (b.function, b.rv, b.rv_name)
                if not diffable:
                    assert a.args == b.args
            if not diffable and b.duration_us is not None:
                assert b.duration_us == pytest.approx(a.duration_us, abs=0.5)


@pytest.mark.parametrize("name", ALL)
def test_fixture_is_recognised(name):
    head = (FIXTURES / name).read_bytes()[:4096]
    assert pcscspy_text.sniff(head)
    assert commands.detect(FIXTURES / name) == "pcsc-spy"
    for other, reader in commands.formats().items():
        if other != "pcsc-spy":
            assert not reader.sniff(head), (other, name)


def test_other_formats_are_not_claimed():
    paths = [*(REPO / "fixtures" / "opensc-debug").glob("*.log"),
             *(REPO / "fixtures" / "pkcs11-spy").glob("*.log"),
             *(REPO / "fixtures" / "p11spy").glob("*.p11")]
    assert len(paths) > 30
    for path in paths:
        assert not pcscspy_text.sniff(path.read_bytes()[:4096]), path.name
    assert not pcscspy_text.sniff(logformat.MAGIC + bytes(100))
    # a raw stream cut anywhere (not at a line start) is still recognised by its next entry
    data = (FIXTURES / f"{WRONG_PIN}.raw").read_bytes()
    assert pcscspy_text.sniff(data[1234:1234 + 4096])


# --- what the traces say --------------------------------------------------------------------


@pytest.mark.parametrize("name", [f"{WRONG_PIN}.raw", f"{WRONG_PIN}-decoded-n.txt",
                                  f"{WRONG_PIN}-decoded-colour-t.txt"])
def test_wrong_pin_verify_is_an_apdu(name):
    events = decode(FIXTURES / name)
    verifies = [a for a in of(events, Apdu) if a.command[:2] == b"\x00\x20"]
    empty, full = verifies  # the retry counter query, then the VERIFY with the PIN
    assert empty.command == bytes.fromhex("00200080") and empty.sw == "63C3"
    assert full.command == bytes.fromhex("002000800839373533313 2FFFF".replace(" ", ""))
    assert full.response == bytes.fromhex("63C2") and full.sw == "63C2"
    assert full.parent is None and full.error is None and not full.masked
    j = full.to_json()
    assert j["ins_name"] == "VERIFY" and j["sw"] == "63C2"
    # in a transaction, on the card handle SCardConnect returned
    before = [e for e in events if e.seq < full.seq and isinstance(e, PcscCall)]
    assert before[-1].function == "SCardBeginTransaction"
    connects = [c for c in before if c.function == "SCardConnect" and c.rv == 0]
    assert before[-1].args["hCard"] == connects[-1].args["phCard"]


def test_raw_arguments_match_our_own_pcsc_records():
    events = decode(FIXTURES / f"{WRONG_PIN}.raw")
    calls = of(events, PcscCall)
    est = calls[0]
    assert est.function == "SCardEstablishContext" and est.rv == 0
    assert est.args == {"dwScope": "SCARD_SCOPE_USER", "phContext": est.args["phContext"]}
    ctx = est.args["phContext"]
    query, names = [c for c in calls if c.function == "SCardListReaders"][:2]
    assert query.args == {"hContext": ctx, "mszGroups": None, "mszReaders": None,
                          "pcchReaders": {"out": 37}}
    assert names.args["mszReaders"] == ["p11spy vpcd 00 00", "p11spy vpcd 00 01"]
    gsc = next(c for c in calls if c.function == "SCardGetStatusChange")
    assert gsc.args["cReaders"] == 1 and gsc.args["dwTimeout"] == 0
    assert gsc.args["rgReaderStates"]["out"] == [{
        "reader": "p11spy vpcd 00 00", "current_state": "0x0", "event_state": "0x10022",
        "atr": "3b8880018056703131737079d5"}]
    timeout = next(c for c in calls if c.rv == 0x8010000A)
    assert timeout.rv_name == "SCARD_E_TIMEOUT" and "out" not in timeout.args["rgReaderStates"]
    conn = next(c for c in calls if c.function == "SCardConnect")
    assert conn.args == {"hContext": ctx, "szReader": "p11spy vpcd 00 00",
                         "dwShareMode": "SCARD_SHARE_SHARED",
                         "dwPreferredProtocols": "SCARD_PROTOCOL_T0|SCARD_PROTOCOL_T1",
                         "phCard": conn.args["phCard"], "pdwActiveProtocol": 2}
    ctl = next(c for c in calls if c.function == "SCardControl")
    assert ctl.rv_name == "SCARD_E_UNSUPPORTED_FEATURE"
    assert ctl.args["dwControlCode"] == 0x42000D48 and ctl.args["pbSendBuffer"] is None
    disc = next(c for c in calls if c.function == "SCardDisconnect")
    assert disc.args["dwDisposition"] == "SCARD_LEAVE_CARD"
    assert calls[-1].function == "SCardReleaseContext" and calls[-1].args == {"hContext": ctx}


def test_card_pulled_at_verify_answers_nothing():
    for name in ("real-1.9.9-card-pulled-at-verify.raw",
                 "real-1.9.9-card-pulled-at-verify-decoded-n.txt"):
        events = decode(FIXTURES / name)
        verify = next(a for a in of(events, Apdu) if a.command[:5] == bytes.fromhex("0020008008"))
        assert verify.response == b"" and verify.sw is None and verify.error is None
        lines = render.apdu_text(verify)
        assert lines[1] == "<< (empty)  no status word"


def test_two_threads_and_a_refused_transmit():
    raw = decode(FIXTURES / "real-1.9.9-two-threads.raw")
    tids = [e.tid for e in raw if isinstance(e, (Apdu, PcscCall))]
    assert len(set(tids)) == 3
    # the two first threads' calls really interleave in the stream
    first, second = tids[0], next(t for t in tids if t != tids[0])
    switches = sum(1 for a, b in zip(tids, tids[1:], strict=False)
                   if a != b and {a, b} == {first, second})
    assert switches >= 4
    (refused,) = [a for a in of(raw, Apdu) if a.error]
    assert refused.error == "SCARD_E_INSUFFICIENT_BUFFER" and refused.response is None
    assert refused.command == bytes.fromhex("00CB3FFF055C035FC10200")
    text = decode(FIXTURES / "real-1.9.9-two-threads-decoded-n-t.txt")
    assert {e.tid for e in text if isinstance(e, Apdu)} == {0, 1, 2}


def test_client_crashing_inside_the_spy():
    for name in (f"{CRASH}.raw", f"{CRASH}-decoded-n.txt"):
        events = decode(FIXTURES / name)
        (apdu,) = of(events, Apdu)
        assert apdu.command == bytes.fromhex("00A4040009A0000003080000100000")
        assert apdu.response is None and apdu.error is None and apdu.duration_us is None
        (warning,) = of(events, TraceWarning)
        assert warning.seq < apdu.seq and "the trace ends inside it" in warning.message
        assert render.apdu_text(apdu)[1] == "<< no response: not recorded"


def test_older_and_newer_layouts():
    old = decode(FIXTURES / "written-old-raw-no-pci.raw")
    assert [(a.command[:4].hex(), a.sw, a.error) for a in of(old, Apdu)] == [
        ("00a40400", "9000", None), ("00200080", "63C1", None),
        ("00ca0100", None, "SCARD_W_REMOVED_CARD")]
    assert of(old, Apdu)[0].duration_us == 1000
    disc = next(c for c in of(old, PcscCall) if c.function == "SCardDisconnect")
    assert disc.rv_name == "SCARD_E_INVALID_HANDLE"
    new = decode(FIXTURES / "written-2.x-decoded-short-rv.txt")
    assert of(new, PcscCall)[0].duration_us == 46759
    assert [a.error for a in of(new, Apdu)] == [None, "SCARD_W_REMOVED_CARD"]
    assert of(new, Apdu)[0].command.hex() == "00a4040014a000000397434944" + "5f" + "00" * 2 + \
        "0001" + "00" * 7


# --- the command line -----------------------------------------------------------------------


def test_decode_prints_text():
    r = p11spy("decode", str(FIXTURES / f"{WRONG_PIN}.raw"))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert ">> 00 20 00 80 08 39 37 35 33 31 32 FF FF  [VERIFY]" in r.stdout
    assert "<< 63 C2  SW 63C2" in r.stdout
    assert "SCardControl(" in r.stdout and "-> SCARD_E_UNSUPPORTED_FEATURE" in r.stdout
    r2 = p11spy("decode", str(FIXTURES / f"{WRONG_PIN}-decoded-n.txt"))
    assert r2.returncode == 0 and "<< 63 C2  SW 63C2" in r2.stdout


def test_decode_json():
    r = p11spy("decode", "--json", str(FIXTURES / f"{WRONG_PIN}.raw"))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert {x["type"] for x in rows} == {"pcsc", "apdu"}
    verify = next(x for x in rows if x["type"] == "apdu" and x["sw"] == "63C2")
    assert verify == {
        "type": "apdu", "seq": verify["seq"], "parent": None,
        "command": "00200080083937353331 32ffff".replace(" ", ""), "response": "63c2",
        "sw": "63C2", "ins": "20", "ins_name": "VERIFY", "pid": None, "tid": verify["tid"],
        "time": verify["time"], "duration_us": verify["duration_us"]}
    assert verify["tid"] > 0 and verify["time"] > 1.7e9 and 0 < verify["duration_us"] < 1e6
    r = p11spy("decode", "--summary", str(FIXTURES / f"{WRONG_PIN}.raw"))
    assert r.returncode == 0 and "Traceback" not in r.stderr


# --- bad input ------------------------------------------------------------------------------


def test_empty_file(tmp_path):
    path = tmp_path / "empty.raw"
    path.write_bytes(b"")
    assert decode(path) == []
    r = p11spy("decode", str(path))
    assert r.returncode == 2 and "the file is empty" in r.stderr and "Traceback" not in r.stderr
    r = p11spy("decode", "--format", "pcsc-spy", str(path))
    assert r.returncode == 0 and r.stdout == "" and "Traceback" not in r.stderr


def test_binary_garbage(tmp_path):
    data = random.Random(11).randbytes(300_000)
    path = tmp_path / "garbage.bin"
    path.write_bytes(data)
    assert not pcscspy_text.sniff(data[:4096])
    r = p11spy("decode", "--format", "pcsc-spy", str(path))
    assert r.returncode == 0 and "Traceback" not in r.stderr
    events = decode(path)
    warnings = of(events, TraceWarning)
    assert warnings and len(warnings) < 2000 and len(events) == len(warnings)
    assert all(w.message.startswith("line") for w in warnings)


def test_file_cut_mid_line():
    data = (FIXTURES / f"{WRONG_PIN}.raw").read_bytes()
    cut = data.index(b"39 37 35 33") + 5  # inside the VERIFY's command line
    events = decode_bytes(data[:cut])
    apdu = of(events, Apdu)[-1]
    assert apdu.command == bytes.fromhex("00200080083937") and apdu.response is None
    (warning,) = of(events, TraceWarning)
    assert "SCardTransmit" in warning.message and "no return line" in warning.message
    # the decoded text cut in the middle of a hexdump row
    text = (FIXTURES / f"{WRONG_PIN}-decoded-n.txt").read_bytes()
    cut = text.index(b"00 20 00 80 08 39") + 9
    events = decode_bytes(text[:cut])
    assert of(events, TraceWarning)
    assert all(isinstance(e, (Apdu, PcscCall, TraceWarning)) for e in events)


def test_lines_outside_calls_and_unknown_lines(tmp_path):
    data = (FIXTURES / f"{WRONG_PIN}-decoded-n.txt").read_bytes()
    data = data.replace(b"SCardListReaders\n", b"Garbage:  x\nUnknown function: SCardFoo\n"
                        b"SCardListReaders\n", 1)
    events = decode_bytes(data)
    (warning,) = of(events, TraceWarning)
    assert "2 lines outside any call" in warning.message and "Garbage" in warning.message
    assert len(of(events, Apdu)) == 34


def test_invalid_utf8():
    data = (FIXTURES / f"{WRONG_PIN}.raw").read_bytes().replace(b"p11spy vpcd 00 00",
                                                                  b"p11\xffpy\xc3vpcd 00 00")
    events = decode_bytes(data)
    conn = next(c for c in of(events, PcscCall) if c.function == "SCardConnect")
    assert conn.args["szReader"] == "p11\ufffdpy\ufffdvpcd 00 00"
    names = next(c for c in of(events, PcscCall) if c.args.get("mszReaders"))
    assert names.args["mszReaders"] == ["p11\ufffdpy\ufffdvpcd 00 00", "p11spy vpcd 00 01"]
    assert len(of(events, Apdu)) == 34 and not of(events, TraceWarning)


def test_ten_megabyte_line(tmp_path):
    raw = (FIXTURES / f"{WRONG_PIN}.raw").read_bytes()
    n = raw.count(b"\n")
    path = tmp_path / "big.raw"
    path.write_bytes(raw + b"7F@" + b"A" * 10_000_000 + b"\n" + raw + b"Z" * 10_000_000)
    events = decode(path)
    assert len(of(events, Apdu)) == 68
    warnings = of(events, TraceWarning)
    assert [w.message.split(":")[0] for w in warnings] == [f"line {n + 1}", f"line {2 * n + 2}"]
    assert all("longer than" in w.message for w in warnings)
    r = p11spy("decode", str(path), timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr and r.stdout.count("SW 63C2") == 2


def test_value_lines_that_do_not_fit():
    data = (FIXTURES / f"{WRONG_PIN}.raw").read_bytes()
    # a connect whose share mode is not a number, and an extra line in a disconnect
    data = data.replace(b"@p11spy vpcd 00 00\n7F", b"@p11spy vpcd 00 00\n", 1)
    lines = data.split(b"\n")
    i = next(k for k, ln in enumerate(lines) if b"|SCardConnect" in ln and b">|" in ln)
    lines[i + 3] = lines[i + 3].split(b"@")[0] + b"@SHARED"
    j = next(k for k, ln in enumerate(lines) if b">|" in ln and b"|SCardDisconnect" in ln)
    lines.insert(j + 2, lines[j].split(b"@")[0] + b"@0x00000009")
    events = decode_bytes(b"\n".join(lines))
    warnings = [w.message for w in of(events, TraceWarning)]
    assert any("SCardConnect: the values cannot be read" in w for w in warnings), warnings
    assert any("SCardDisconnect: 1 more value lines" in w for w in warnings), warnings
    assert len(of(events, Apdu)) == 34


LINES = [ln for name in ALL for ln in (FIXTURES / name).read_bytes().split(b"\n")[:400]]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(LINES), st.binary(max_size=80),
                          st.sampled_from([b"7F@>|1|2|SCardTransmit",
                                           b"7F@<|1|2|SCardTransmit||0x0", b"SCardStatus",
                                           b" => x [0x80100069])  [0.000001]",
                                           b" o  0000 ZZ", b"    (t9) SCarControl", b"7F@NULL",
                                           b" i bSendBuffer", b" i  NULL", b"7F@0xFFFFFFFF"])),
                max_size=60))
def test_random_line_mixes_never_raise(lines):
    events = decode_bytes(b"\n".join(lines))
    for e in events:
        json.dumps(e.to_json())
    render.text(iter(events), io.StringIO())


# --- streaming ------------------------------------------------------------------------------


def test_memory_stays_flat(tmp_path):
    src = (FIXTURES / f"{WRONG_PIN}.raw").read_bytes()
    path = tmp_path / "big.raw"
    path.write_bytes(src * (24_000_000 // len(src)))
    tracemalloc.start()
    try:
        n = 0
        with path.open("rb") as f:
            for e in pcscspy_text.read(f):
                n += 1
                assert not isinstance(e, TraceWarning)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n > 50_000
    assert peak < 12_000_000, peak
