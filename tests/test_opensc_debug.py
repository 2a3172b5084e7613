"""OpenSC debug logs (OPENSC_DEBUG) read into calls, APDUs and log lines.

Counts are checked against the raw text of each fixture where the text says them plainly
(dump headers, result lines); the calls each fixture holds are listed by hand below.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p11spy.decoder.events import Apdu, Call, Event, LogLine, TraceWarning
from p11spy.decoder.formats.opensc_debug import reader as opensc_debug
from tests import readers
from tests.conftest import REPO
from tests.readers import exchanges, of

FIXTURES = REPO / "fixtures" / "opensc-debug"
P11SPY = str(Path(sys.executable).parent / "p11spy")
MODULE = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"

# A log line's prefix, any version (the reference's regex, compact).
PREFIX = re.compile(r"^(?:\x1b\[[0-9;]*m)*(?:P:\d+; T:\S+ |0x[0-9a-f]+ )?"
                    r"(?:\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d\.\d+")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
RESULT = re.compile(r"(?:\] |: |^)(?:C_\w+(?:\(.*\))? ?(?:==?|returns) (\S+)|fLogin\(\) rv (\d+))$")

# (function, rv) of every call, in emission order; hand-checked against each file.
OK, PIN_INCORRECT = 0, 160
INIT = ("C_Initialize", OK)
EXPECTED_CALLS: dict[str, list[tuple[str, int | None]]] = {
    "fieldnotes-0.18-linux-login-verify.log": [],
    "real-0.23-I-debug3-stderr.log": [INIT, ("C_GetInfo", None), ("C_GetSlotList", None),
                                      ("C_Finalize", None)],
    "real-0.23-I-debug9-stderr.log": [INIT, ("C_GetInfo", None), ("C_GetSlotList", None),
                                      ("C_Finalize", None)],
    "real-0.23-L-debug3-stderr.log": [INIT, ("C_GetSlotList", None), ("C_Finalize", None)],
    "real-0.23-L-debug9-stderr.log": [INIT, ("C_GetSlotList", None), ("C_Finalize", None)],
    "real-0.23-L-debug9-conffile.log": [INIT, ("C_GetSlotList", None), ("C_Finalize", None)],
    "ref-0.18-linux-opensc-tool.log": [],
    "ref-0.19-windows-pkcs15-tool.log": [],
    "ref-0.20-macos-login-failure.log": [("C_Login", 5)],
    "ref-0.23-windows-cardmod.log": [],
    "written-0.15-linux-old-apdu-dumps.log": [INIT, ("C_OpenSession", OK), ("C_Login", None),
                                              ("C_FindObjectsInit", None)],
    "written-0.15-windows-date-only.log": [],
    "written-0.20-linux-two-threads.log": [INIT, ("C_GetTokenInfo", OK), ("C_GetTokenInfo", OK),
                                           ("C_Finalize", None)],
    "written-0.21-linux-truncated-4k.log": [INIT, ("C_CreateObject", OK)],
    "written-0.23-windows-crlf.log": [INIT, ("C_OpenSession", OK), ("C_Login", PIN_INCORRECT),
                                      ("C_Finalize", None)],
    "written-0.26-linux-two-processes.log": [INIT, INIT, ("C_GetTokenInfo", OK),
                                             ("C_GetTokenInfo", OK),
                                             ("C_OpenSession", 0xE1), ("C_Finalize", None)],
}
SESSION = [INIT, ("C_GetSlotList", None), ("C_GetSlotList", None), ("C_OpenSession", OK),
           ("C_Login", PIN_INCORRECT), ("C_Login", OK), ("C_SignInit", OK), ("C_Sign", OK),
           ("C_Logout", None), ("C_CloseSession", None), ("C_Finalize", None)]
EXPECTED_CALLS["written-0.24-linux-wrong-pin.log"] = SESSION
EXPECTED_CALLS["written-0.22-linux-ansi-colours.log"] = SESSION

# Logs made on the card station with p11spy run tracing the same run (testbed/
# record_fixtures.py): the calls OpenSC logs are those of p11spy's trace, less the entry points
# the client looked up before OpenSC had a context to log with, and with the shim's own
# C_GetInfo after C_Initialize (which OpenSC logs, rv unsaid, like the calls it does not end
# with a CK_RV).
PAIRED = {f"real-0.23-card-{name}.log": REPO / "fixtures" / "p11spy" / f"real-card-{trace}.p11"
          for name, trace in (("list-debug3", "list"), ("wrong-pin-debug9", "wrong-pin"),
                              ("sign-debug9", "sign"))}
_BEFORE_CONTEXT = frozenset({"C_GetFunctionList", "C_GetInterface", "C_GetInterfaceList"})


def calls_opensc_logs(trace: Path) -> list[tuple[str, int | None]]:
    from p11spy.decoder.events import ModuleInfo
    from p11spy.decoder.formats.p11spy import reader as p11log

    logged = opensc_debug.ENTRY_LOGGED | opensc_debug.EXIT_LOGGED
    out: list[tuple[str, int | None]] = []
    shim_get_info = False
    with trace.open("rb") as f:
        for e in p11log.read(f):
            if isinstance(e, ModuleInfo) and "loaded" not in e.info and e.info:
                shim_get_info = True
            elif isinstance(e, Call) and e.function in logged - _BEFORE_CONTEXT:
                out.append((e.function, e.rv if e.function in opensc_debug.EXIT_LOGGED
                            else None))
                if e.function == "C_Initialize" and shim_get_info:
                    out.append(("C_GetInfo", None))
    return out


for _name, _trace in PAIRED.items():
    EXPECTED_CALLS[_name] = calls_opensc_logs(_trace)
# Warnings each fixture must produce (substrings), and no others.
EXPECTED_WARNINGS = {
    "fieldnotes-0.18-linux-login-verify.log": ["Outgoing APDU has no Incoming APDU"],
    "ref-0.23-windows-cardmod.log": ["not an OpenSC log line", "Incoming APDU with no Outgoing"],
    "written-0.21-linux-truncated-4k.log": ["APDU of 1507 bytes is cut short"],
}
WRONG_PIN = ["written-0.24-linux-wrong-pin.log", "written-0.22-linux-ansi-colours.log",
             "written-0.23-windows-crlf.log"]


def decode(path: Path) -> list[Event]:
    return readers.decode(opensc_debug.read, path)


def decode_bytes(data: bytes, tmp_path: Path, name: str = "log.txt") -> list[Event]:
    """Through a file: the reader dates dateless logs from the file's modification time."""
    p = tmp_path / name
    p.write_bytes(data)
    return decode(p)


def raw_lines(path: Path) -> list[str]:
    return [ANSI.sub("", ln) for ln in
            path.read_bytes().decode("utf-8", "replace").replace("\r\n", "\n").split("\n")]


def dump_headers(path: Path, kind: str) -> int:
    """`<kind> APDU` headers that follow a prefixed line (a dump the log shows whole)."""
    lines = raw_lines(path)
    return sum(1 for prev, ln in zip(lines, lines[1:], strict=False)
               if ln.startswith(f"{kind} APDU") and PREFIX.match(prev))


def test_every_fixture_is_listed():
    assert sorted(p.name for p in FIXTURES.glob("*.log")) == sorted(EXPECTED_CALLS)


@pytest.mark.parametrize("name", sorted(EXPECTED_CALLS))
def test_fixture_decodes_with_exact_counts(name):
    path = FIXTURES / name
    events = decode(path)
    assert [e.seq for e in events] == list(range(len(events)))
    calls, apdus = of(events, Call), of(events, Apdu)
    assert [(c.function, c.rv) for c in calls] == EXPECTED_CALLS[name]
    # every dump header the log shows whole is one Apdu, every Incoming one a response
    outgoing, incoming = dump_headers(path, "Outgoing"), dump_headers(path, "Incoming")
    assert len([a for a in apdus if a.command]) == outgoing
    assert len([a for a in apdus if a.response is not None]) == incoming
    # every result line gives one call its rv; errors are the results other than OK
    results = [m.group(1) or m.group(2) for ln in raw_lines(path) if (m := RESULT.search(ln))]
    assert len([c for c in calls if c.rv is not None]) == len(results)
    errors = [r for r in results if r not in ("CKR_OK", "0", "0x00000000")]
    assert len([c for c in calls if c.rv]) == len(errors)
    warnings = [w.message for w in of(events, TraceWarning)]
    expected = EXPECTED_WARNINGS.get(name, [])
    assert len(warnings) == len(expected), warnings
    for text in expected:
        assert any(text in w for w in warnings), (text, warnings)
    # children point at calls emitted just before them
    seqs = {c.seq: c for c in calls}
    for e in events:
        parent = getattr(e, "parent", None)
        if parent is not None:
            assert parent in seqs and parent < e.seq
    for e in events:
        json.dumps(e.to_json())


@pytest.mark.parametrize("name", sorted(EXPECTED_CALLS))
def test_fixture_is_detected(name):
    assert opensc_debug.sniff((FIXTURES / name).read_bytes()[:4096])


@pytest.mark.parametrize("name", WRONG_PIN)
def test_verify_nested_under_the_failed_login(name):
    events = decode(FIXTURES / name)
    calls = {c.seq: c for c in of(events, Call)}
    verifies = [a for a in of(events, Apdu) if a.command[1:2] == b"\x20"]
    assert verifies
    for a in verifies:
        assert calls[a.parent].function == "C_Login"
    failed = [c for c in calls.values() if c.function == "C_Login" and c.rv == PIN_INCORRECT]
    assert len(failed) == 1 and failed[0].rv_name == "CKR_PIN_INCORRECT"
    assert failed[0].args == {"hSession": failed[0].args["hSession"], "userType": "CKU_USER"}
    under = [a for a in verifies if a.parent == failed[0].seq]
    assert len(under) == 1 and under[0].sw == "63C2"
    texts = [e.text for e in of(events, LogLine) if e.parent == failed[0].seq]
    if "windows" not in name:
        assert any("returning with: -1214 (PIN code or key incorrect)" in t for t in texts)
    assert any(t.endswith("fLogin() rv 160") for t in texts)
    assert failed[0].duration_us is not None and failed[0].duration_us > 0


def test_sign_takes_the_apdus_logged_before_its_result():
    """C_Sign logs only `C_Sign() = ..`: the GENERAL AUTHENTICATE before it is its own."""
    events = decode(FIXTURES / "written-0.24-linux-wrong-pin.log")
    sign = next(c for c in of(events, Call) if c.function == "C_Sign")
    mine = [a for a in of(events, Apdu) if a.parent == sign.seq]
    assert [a.command[1] for a in mine] == [0x87, 0xC0]
    assert [a.sw for a in mine] == ["6120", "9000"]
    assert sign.duration_us == pytest.approx(9000)


def test_threads_of_one_process_pair_their_own_apdus():
    events = decode(FIXTURES / "written-0.20-linux-two-threads.log")
    calls = {c.seq: c for c in of(events, Call)}
    tids = {c.tid for c in calls.values()}
    assert {c.pid for c in calls.values()} == {8812}
    assert tids == {139944898844736, 139944890452032}
    apdus = of(events, Apdu)
    assert len(apdus) == 2
    for a in apdus:
        assert calls[a.parent].function == "C_GetTokenInfo" and calls[a.parent].tid == a.tid
    select = next(a for a in apdus if a.command[1] == 0xA4)
    getdata = next(a for a in apdus if a.command[1] == 0xCB)
    assert select.response.startswith(b"\x61\x11") and getdata.response.startswith(b"0123")


def test_two_processes_interleaved():
    events = decode(FIXTURES / "written-0.26-linux-two-processes.log")
    calls = of(events, Call)
    by_pid: dict[int, list[str]] = {}
    for c in calls:
        by_pid.setdefault(c.pid, []).append(c.function)
    assert by_pid == {4242: ["C_Initialize", "C_GetTokenInfo", "C_Finalize"],
                      5151: ["C_Initialize", "C_GetTokenInfo", "C_OpenSession"]}
    assert {c.tid for c in calls if c.pid == 4242} == {140737488355328}
    assert {c.tid for c in calls if c.pid == 5151} == {139822222222222}
    seq = {c.seq: c for c in calls}
    for a in of(events, Apdu):
        assert seq[a.parent].pid == a.pid and a.sw == "9000"
    # each process's C_Initialize holds its own context creation, nothing of the other's
    for c in calls:
        if c.function == "C_Initialize":
            kids = [e for e in of(events, LogLine) if e.parent == c.seq]
            assert kids and {e.pid for e in kids} == {c.pid}
            assert "Configured for opensc-pkcs11" in " ".join(e.text for e in kids)


def test_windows_dates_crlf_and_frameless_lines():
    events = decode(FIXTURES / "written-0.23-windows-crlf.log")
    login = next(c for c in of(events, Call) if c.function == "C_Login")
    assert (login.pid, login.tid) == (11916, 34500)
    assert login.time == pytest.approx(time.mktime((2023, 11, 3, 18, 36, 24, 0, 0, -1)) + 0.138)
    assert login.duration_us == pytest.approx(40000)
    assert login.args["hSession"] == 0x1E4F2A60
    assert all("\r" not in e.text for e in of(events, LogLine))


def test_old_dump_format_and_hex_thread_ids():
    events = decode(FIXTURES / "written-0.15-linux-old-apdu-dumps.log")
    apdus = of(events, Apdu)
    assert [a.command.hex() for a in apdus] == ["00200081083132333435363738", "00a4000c023f00",
                                               "00c0000018"]
    assert [a.sw for a in apdus] == ["9000", "6118", "9000"]
    assert len(apdus[2].response) == 26
    assert {a.tid for a in apdus} == {0x7FFF7E07B300} and {a.pid for a in apdus} == {None}
    calls = {c.seq: c.function for c in of(events, Call)}
    assert [calls[a.parent] for a in apdus] == ["C_Login", "C_FindObjectsInit",
                                                "C_FindObjectsInit"]
    # the ==== lines closing old dumps are not log lines
    assert not [e for e in of(events, LogLine) if e.text.startswith("====")]


def test_ansi_colours_are_stripped():
    events = decode(FIXTURES / "written-0.22-linux-ansi-colours.log")
    assert all("\x1b" not in e.text for e in of(events, LogLine))
    assert of(events, Call)[0].pid == 2024


def test_truncated_dump_keeps_what_the_log_shows():
    events = decode(FIXTURES / "written-0.21-linux-truncated-4k.log")
    (apdu,) = of(events, Apdu)
    assert len(apdu.command) == 1004 and apdu.command.startswith(bytes.fromhex("00DB3FFF0005DC"))
    assert apdu.sw == "9000"
    create = next(c for c in of(events, Call) if c.function == "C_CreateObject")
    assert apdu.parent == create.seq


def test_real_logs_from_this_machine_regenerate(tmp_path):
    """regenerate.sh against this machine's OpenSC, decoded like the committed ones."""
    if not Path(MODULE).exists() or not shutil.which("pkcs11-tool"):
        pytest.fail("OpenSC is missing: run `make setup`")
    res = subprocess.run(["bash", str(FIXTURES / "regenerate.sh"), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    logs = sorted(tmp_path.glob("real-*.log"))
    assert len(logs) == 5
    for log in logs:
        events = decode(log)
        names = [c.function for c in of(events, Call)]
        assert names[0] == "C_Initialize" and names[-1] == "C_Finalize", (log.name, names)
        assert "C_GetSlotList" in names and not of(events, TraceWarning)
        pids = {c.pid for c in of(events, Call)}
        assert len(pids) == 1 and None not in pids


# -- the command line ----------------------------------------------------------------------


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([P11SPY, *args], capture_output=True, text=True, timeout=timeout)


def test_cli_detects_the_format_and_prints_text():
    res = cli("decode", str(FIXTURES / "written-0.24-linux-wrong-pin.log"))
    assert res.returncode == 0, res.stderr
    assert "C_Login" in res.stdout and "CKR_PIN_INCORRECT" in res.stdout
    assert "Traceback" not in res.stderr


def test_cli_prints_json_lines():
    res = cli("decode", "--json", str(FIXTURES / "written-0.23-windows-crlf.log"))
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["seq"] for r in rows] == list(range(len(rows)))
    login = next(r for r in rows if r["type"] == "call" and r["function"] == "C_Login")
    assert login["rv"] == 160 and login["rv_name"] == "CKR_PIN_INCORRECT"
    (apdu,) = [r for r in rows if r["type"] == "apdu"]
    assert apdu["parent"] == login["seq"] and apdu["sw"] == "63C2"
    assert apdu["ins_name"] == "VERIFY"
    assert {r["type"] for r in rows} == {"call", "apdu", "log"}


def test_cli_errors_filter_on_opensc_log():
    log = FIXTURES / "written-0.26-linux-two-processes.log"
    res = cli("decode", "--errors", "--json", str(log))
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    calls = [r for r in rows if r["type"] == "call"]
    assert [(r["function"], r["rv_name"]) for r in calls] == [
        ("C_OpenSession", "CKR_TOKEN_NOT_RECOGNIZED")]
    # and what the failed call logged, under it
    others = [r for r in rows if r["type"] != "call"]
    assert others and {r["parent"] for r in others} == {calls[0]["seq"]}


# -- bad input ------------------------------------------------------------------------------


def assert_clean(res: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    res = cli("decode", str(empty))
    assert res.returncode == 2 and "empty" in res.stderr and res.stderr.count("\n") == 1
    res = cli("decode", "--format", "opensc-debug", str(empty))
    assert_clean(res)
    assert res.returncode == 0 and "the file is empty" in res.stdout


def test_binary_garbage(tmp_path):
    garbage = bytes(range(256)) * 40 + b"\x00\xff" * 5000
    p = tmp_path / "garbage.bin"
    p.write_bytes(garbage)
    assert not opensc_debug.sniff(garbage[:4096])
    res = cli("decode", str(p))
    assert res.returncode == 2 and "not a trace format" in res.stderr
    res = cli("decode", "--format", "opensc-debug", str(p))
    assert_clean(res)
    assert res.returncode == 0 and "no OpenSC debug log line found" in res.stdout
    events = decode(p)
    assert not of(events, Call) and len(of(events, LogLine)) == 1


def test_file_cut_mid_record(tmp_path):
    data = (FIXTURES / "written-0.24-linux-wrong-pin.log").read_bytes()
    cut = data.index(b"00 20 00 80 08 31 32 33 34 35 39") + 17  # inside the wrong VERIFY
    events = decode_bytes(data[:cut], tmp_path)
    warnings = [w.message for w in of(events, TraceWarning)]
    assert any("Outgoing APDU of 13 bytes is cut short in the log after 6 bytes" in w
               for w in warnings)
    assert any("C_Login" in w and "no result line" in w for w in warnings)
    login = of(events, Call)[-1]
    assert login.function == "C_Login" and login.rv is None
    (apdu,) = of(events, Apdu)
    assert apdu.command == bytes.fromhex("002000800831") and apdu.parent == login.seq
    res = cli("decode", str(tmp_path / "log.txt"))
    assert_clean(res)
    assert res.returncode == 0 and "cut short" in res.stdout


def test_ten_megabyte_line(tmp_path):
    head = (FIXTURES / "written-0.24-linux-wrong-pin.log").read_bytes()[:2000]
    head = head[:head.rindex(b"\n") + 1]
    big = b"P:1; T:0x2 10:00:00.000 [opensc-pkcs11] card.c:1:f: " + b"A" * 10_000_000 + b"\n"
    p = tmp_path / "long.log"
    p.write_bytes(head + big + head)
    started = time.monotonic()
    events = decode(p)
    assert time.monotonic() - started < 10
    warnings = [w.message for w in of(events, TraceWarning)]
    assert len(warnings) == 1 and "only the first 65536" in warnings[0], warnings
    assert warnings[0].startswith(f"line {len(head.splitlines()) + 1}:")
    longest = max(len(e.text) for e in of(events, LogLine))
    assert longest <= opensc_debug.MAX_LINE
    alone = [c.function for c in of(decode_bytes(head, tmp_path, "head.log"), Call)]
    assert [c.function for c in of(events, Call)] == alone * 2
    res = cli("decode", str(p))
    assert_clean(res)
    assert res.returncode == 0


def test_line_without_newline_longer_than_a_chunk(tmp_path):
    data = b"P:1; T:0x2 10:00:00.000 [opensc-pkcs11] card.c:1:f: " + b"B" * 3_000_000
    events = decode_bytes(data, tmp_path)
    assert len(of(events, TraceWarning)) == 1 and len(of(events, LogLine)) == 1


@pytest.mark.parametrize("data", [b"\xef\xbb\xbf", b"\r", b"\n\n\n", b"\x1b[0m", b"P:", b"0x",
                                  b"2019-", b"P:1; T:0x2 10:00:00.000 [a] C_Login(0x1, 1)\r"])
def test_tiny_odd_files(tmp_path, data):
    events = decode_bytes(data, tmp_path)
    assert of(events, TraceWarning) and [e.seq for e in events] == list(range(len(events)))


def test_invalid_utf8(tmp_path):
    data = (b"P:7; T:0x8 10:00:00.000 [opensc-pkcs11] pkcs11-session.c:1:C_Login: "
            b"C_Login(0x1, 1)\n"
            b"P:7; T:0x8 10:00:00.001 [opensc-pkcs11] card.c:1:f: reader '\xff\xfe\xc3('\n"
            b"P:7; T:0x8 10:00:00.002 [opensc-pkcs11] pkcs11-session.c:2:C_Login: fLogin() rv 0\n")
    events = decode_bytes(data, tmp_path)
    (call,) = of(events, Call)
    assert call.rv == 0 and call.args == {"hSession": 1, "userType": "CKU_USER"}
    assert "\ufffd" in of(events, LogLine)[1].text
    res = cli("decode", "--json", str(tmp_path / "log.txt"))
    assert_clean(res)
    assert res.returncode == 0


def test_wrong_format(tmp_path):
    log = FIXTURES / "written-0.24-linux-wrong-pin.log"
    res = cli("decode", "--format", "p11spy", str(log))
    assert_clean(res)
    assert res.returncode == 0 and "unreadable" in res.stdout
    p11 = tmp_path / "trace.p11"
    p11.write_bytes(b"P11S" + bytes(range(256)) * 4)
    res = cli("decode", "--format", "opensc-debug", str(p11))
    assert_clean(res)
    assert res.returncode == 0 and "no OpenSC debug log line found" in res.stdout


ALL_LINES = sorted({ln for p in FIXTURES.glob("*.log") for ln in p.read_bytes().splitlines()})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(ALL_LINES), st.binary(max_size=80)), max_size=60),
       st.integers(min_value=0, max_value=200))
def test_any_mix_of_lines_decodes_without_error(lines, cut):
    """Fixture lines shuffled, cut and mixed with garbage: events, never an exception."""
    data = b"\n".join(lines)
    data = data[:len(data) - cut] if cut < len(data) else data
    events = list(opensc_debug.read(io.BytesIO(data)))
    assert [e.seq for e in events] == list(range(len(events)))
    calls = {e.seq for e in events if isinstance(e, Call)}
    for e in events:
        parent = getattr(e, "parent", None)
        assert parent is None or (parent in calls and parent < e.seq)
        json.dumps(e.to_json())


def test_pkcs11_spy_output_is_not_taken_for_a_debug_log():
    spy = (b"*************** OpenSC PKCS#11 spy *****************\n"
           b"Loaded: \"/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so\"\n\n"
           b"0: C_GetFunctionList\nP:12345; T:0x140231 2024-05-01 10:00:00.123\n")
    assert not opensc_debug.sniff(spy)


# -- streaming ------------------------------------------------------------------------------


def test_memory_stays_flat(tmp_path):
    one = (FIXTURES / "written-0.24-linux-wrong-pin.log").read_bytes()
    p = tmp_path / "big.log"
    with p.open("wb") as f:
        for _ in range(20_000_000 // len(one)):
            f.write(one)
    tracemalloc.start()
    try:
        n = 0
        with p.open("rb") as f:
            for _ in opensc_debug.read(f):
                n += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n > 150_000
    assert peak < 32 * 1024 * 1024, peak


def test_events_come_before_the_file_is_read_whole(tmp_path):
    one = (FIXTURES / "written-0.24-linux-wrong-pin.log").read_bytes()
    p = tmp_path / "big.log"
    p.write_bytes(one * 2000)
    with p.open("rb") as f:
        first = next(iter(opensc_debug.read(f)))
        assert isinstance(first, Call) and f.tell() < len(one) * 2000


# -- card logs against the p11spy trace of the same run ----------------------------------------


@pytest.mark.parametrize("name", sorted(PAIRED))
def test_card_log_has_the_apdus_of_the_p11spy_trace(name):
    """Same bytes, same order, under a call of the same function; the trace masks the PIN of
    a VERIFY that the level-9 log shows in clear."""
    from p11spy.decoder.formats.p11spy import reader as p11log

    logged = exchanges(decode(FIXTURES / name))
    with PAIRED[name].open("rb") as f:
        traced = exchanges(list(p11log.read(f)))
    assert len(logged) == len(traced) > 20
    for (lf, lc, lr), (tf, tc, tr) in zip(logged, traced, strict=True):
        assert (lf, lr) == (tf, tr)
        assert lc == tc or (tc[1] == 0x20 and tc[:5] == lc[:5] and len(tc) == len(lc))


def test_card_logs_regenerate(tmp_path):
    """record_fixtures.py on this machine's station makes logs that decode to the same calls as
    the committed ones."""
    res = subprocess.run([sys.executable, "-m", "testbed.record_fixtures", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr
    for name, trace in PAIRED.items():
        fresh = tmp_path / "opensc-debug" / name
        assert [(c.function, c.rv) for c in of(decode(fresh), Call)] == \
            calls_opensc_logs(tmp_path / "p11spy" / trace.name) == EXPECTED_CALLS[name]
