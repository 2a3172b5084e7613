"""Entry records: a call the client never came back from is in the trace, named with its thread,
in decode (text and JSON), diagnose and the viewer; a call that returned shows once.

Real clients over SoftHSM2 through the shim (tests/shim_c/inside.c): one killed with SIGKILL
inside an RSA-8192 C_GenerateKeyPair, one stopped (hung) inside an RSA-4096 one and then let
go, one whose second thread dies of SIGSEGV inside the module."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p11spy.decoder.events import Call
from p11spy.facts.logformat import RECORD, Phase, RecordType
from p11spy.facts.pkcs11 import functions
from p11spy.tui import detail
from p11spy.tui.app import ShowApp
from p11spy.tui.p11_index import P11Index

from .conftest import REPO, SOFTHSM_MODULE, USER_PIN, read_trace, run
from .cprogs import build
from .test_diagnose_tui import first_finding
from .test_tui import ready, screen_text, settle, sync
from .traces import record, ulong

P11SPY = Path(sys.executable).parent / "p11spy"
INSIDE = "crashed, killed or hung inside the module"
GENERATE_KEY_PAIR = next(i for i, f in enumerate(functions.FUNCTIONS)
                         if f.name == "C_GenerateKeyPair")


def records(trace: Path, function: int | None = None) -> dict[int, int]:
    """How many records of each type the trace holds (for one function), read from the record
    headers of a little-endian trace (as the format describes them, not through the decoder).
    """
    data = trace.read_bytes() if trace.exists() else b""
    counts: dict[int, int] = {}
    off = 0
    while off + RECORD.size <= len(data):
        _m, length, rtype, _mod, fidx, *_ = RECORD.unpack_from(data, off)
        if length < RECORD.size:
            break
        if function in (None, fidx) and off + length <= len(data):
            counts[rtype] = counts.get(rtype, 0) + 1
        off += length
    return counts


def inside(prog: Path, shim: Path, env: dict[str, str], trace: Path,
           *args: str) -> tuple[subprocess.Popen, int]:
    """Starts the client and waits until the trace holds the entry of its C_GenerateKeyPair:
    the process, and the thread inside the call."""
    proc = subprocess.Popen([str(prog), str(shim), USER_PIN, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    assert line.startswith("inside "), line + (proc.stderr.read() if proc.stderr else "")
    deadline = time.monotonic() + 30
    while not records(trace, GENERATE_KEY_PAIR).get(RecordType.ENTRY):
        assert time.monotonic() < deadline, "no entry record for C_GenerateKeyPair"
        time.sleep(0.005)
    return proc, int(line.split()[1])


def decoded(trace: Path, *opts: str) -> str:
    res = run([str(P11SPY), "decode", *opts, str(trace)], dict(os.environ))
    assert res.returncode == 0, res.stderr
    return res.stdout


def diagnosed(trace: Path) -> str:
    res = run([str(P11SPY), "diagnose", str(trace)], dict(os.environ))
    return res.stdout


def heads(text: str, function: str) -> list[str]:
    """The head lines of the calls of one function in decode's text."""
    return [ln for ln in text.splitlines() if ln.startswith("#") and f" {function} " in ln]


def test_a_client_killed_inside_a_call(token, tmp_path, spy_env, shim) -> None:
    """SIGKILL while SoftHSM2 generates an RSA-8192 key pair: decode shows C_GenerateKeyPair,
    with its arguments, as never returned in that thread; diagnose names it first; every
    call before it shows once."""
    prog = build("inside", tmp_path)
    trace = tmp_path / "killed.p11"
    proc, tid = inside(prog, shim, spy_env(token, trace), trace, "keypair", "8192")
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    pid = proc.pid

    text = decoded(trace)
    [head] = heads(text, "C_GenerateKeyPair")
    assert head.startswith("#") and f"pid {pid} tid {tid}" in head
    block = text[text.index(head):].splitlines()
    assert any("CKM_RSA_PKCS_KEY_PAIR_GEN" in ln for ln in block)  # its in-arguments
    assert any("CKA_MODULUS_BITS" in ln and "8192" in ln for ln in block)
    assert block[-1] == f"  -> never returned (thread {tid} of process {pid}): {INSIDE}"
    for fn in ("C_Initialize", "C_OpenSession", "C_Login"):
        assert len(heads(text, fn)) == 1, fn
    assert "pPin = <masked: 4 bytes, ASCII digits>" in text  # entries are masked too

    assert heads(decoded(trace, "--errors"), "C_GenerateKeyPair") == [head]

    events = [json.loads(ln) for ln in decoded(trace, "--json").splitlines()]
    [gen] = [e for e in events if e.get("function") == "C_GenerateKeyPair"]
    assert gen["never_returned"] is True and gen["rv"] is None and gen["tid"] == tid
    assert [e["function"] for e in events if e.get("type") == "call"][-1] == "C_GenerateKeyPair"
    assert not any(e.get("never_returned") for e in events if e is not gen)

    report = diagnosed(trace)
    first = next(ln for ln in report.splitlines() if ln.startswith("["))
    assert first.startswith(f"[error] C_GenerateKeyPair in thread {tid} of process {pid} never "
                            "returned: the program crashed, was killed or hung inside it")


def test_a_client_hung_inside_a_call_and_let_go(token, tmp_path, spy_env, shim) -> None:
    """The client stopped (SIGSTOP) inside an RSA-4096 C_GenerateKeyPair, as a hung one is:
    the trace read then shows the call entered and never returned. Let go (SIGCONT), it
    returns: the same call then shows once, with its result, and nothing never returned."""
    prog = build("inside", tmp_path)
    for _attempt in range(3):  # the rare key found before the stop arrived: once more
        trace = tmp_path / f"hung-{_attempt}.p11"
        trace.unlink(missing_ok=True)
        proc, tid = inside(prog, shim, spy_env(token, trace), trace, "keypair", "4096")
        proc.send_signal(signal.SIGSTOP)
        if not records(trace, GENERATE_KEY_PAIR).get(RecordType.CALL):
            break
        proc.send_signal(signal.SIGCONT)
        proc.communicate(timeout=120)
    else:
        pytest.fail("C_GenerateKeyPair returned before the client could be stopped, 3 times")
    try:
        text = decoded(trace)
        [head] = heads(text, "C_GenerateKeyPair")
        assert f"tid {tid}" in head
        assert f"  -> never returned (thread {tid} of process {proc.pid}): {INSIDE}" in text
        assert "never returned" in diagnosed(trace)
    finally:
        proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert "C_GenerateKeyPair 0x0" in out
    text = decoded(trace)
    [head] = heads(text, "C_GenerateKeyPair")
    block = text[text.index(head):].split("\n#")[0]
    assert "  -> CKR_OK (0x0)" in block
    assert "never returned" not in text
    assert "never returned" not in diagnosed(trace)
    assert records(trace, GENERATE_KEY_PAIR) == {RecordType.ENTRY: 1, RecordType.CALL: 1}


def test_a_thread_that_crashed_inside_the_module(token, tmp_path, spy_env, shim) -> None:
    """A second thread hands C_GenerateRandom a pointer to nowhere: SoftHSM2 dies of SIGSEGV
    writing to it. The trace names the call and that thread (not the main one)."""
    prog = build("inside", tmp_path)
    trace = tmp_path / "crash.p11"
    res = run([str(prog), str(shim), USER_PIN, "crash"], spy_env(token, trace))
    assert res.returncode == -signal.SIGSEGV, res.stdout + res.stderr
    tid = int(res.stdout.split()[1])
    calls = [e for e in read_trace(trace) if isinstance(e, Call)]
    assert [c.function for c in calls][-2:] == ["C_OpenSession", "C_GenerateRandom"]
    crashed = calls[-1]
    assert crashed.never_returned and crashed.rv is None and crashed.tid == tid
    assert crashed.tid != crashed.pid  # the second thread
    assert crashed.args["ulRandomLen"] == 32
    assert [c for c in calls if c.never_returned] == [crashed]
    assert f"C_GenerateRandom in thread {tid} of process {crashed.pid} never returned" \
        in diagnosed(trace)


def test_under_p11spy_run_the_crashed_call_is_in_the_trace(token, tmp_path) -> None:
    """The same crash under `p11spy run` (the preloaded spy wraps SoftHSM2, which the client
    loads itself): run reports the signal and the call it hit the client in; the trace names
    the call and the thread."""
    prog = build("inside", tmp_path)
    res = run([str(P11SPY), "run", "-o", str(tmp_path / "run-%p.p11"), "--", str(prog),
               SOFTHSM_MODULE, USER_PIN, "crash"], token.env)
    assert res.returncode == 128 + signal.SIGSEGV, res.stderr
    tid = int(res.stdout.split()[1])
    assert res.stderr.splitlines()[0] == (f"p11spy run: client killed by SIGSEGV inside "
                                          f"C_GenerateRandom (thread {tid})")
    [trace] = tmp_path.glob("run-*.p11")
    text = decoded(trace)
    [head] = heads(text, "C_GenerateRandom")
    assert f"tid {tid}" in head
    assert text.rstrip().endswith(f"never returned (thread {tid} of process "
                                  f"{head.split()[3]}): {INSIDE}")


def test_the_viewer_shows_the_call_that_never_returned(token, tmp_path, spy_env,
                                                        shim) -> None:
    """`p11spy show` on the killed client's trace: e (next failure) lands on C_GenerateKeyPair,
    whose row and detail say it never returned, in which thread."""
    prog = build("inside", tmp_path)
    trace = tmp_path / "killed.p11"
    proc, tid = inside(prog, shim, spy_env(token, trace), trace, "keypair", "8192")
    proc.kill()
    proc.communicate(timeout=30)

    @sync
    async def look() -> str:
        app = ShowApp.for_paths([trace])
        async with app.run_test(size=(160, 50)) as pilot:
            tv = await ready(pilot)
            await pilot.press("e")
            await settle(pilot, tv)
            assert tv.index.function(tv.current_record()) == "C_GenerateKeyPair"
            return screen_text(app)

    screen = look()
    row = next(ln for ln in screen.splitlines() if "C_GenerateKeyPair" in ln)
    assert "never returned" in row
    assert f"never returned (thread {tid} of process {proc.pid}): {INSIDE}" in screen
    assert screen.count("C_Login") == 1  # the row; the call returned, it shows once


def test_traces_written_before_entry_records_still_read() -> None:
    """The fixtures from before entry records (fixtures/p11spy/cross-*.p11, real-card-*.p11):
    every call record is one call, none of them never returned."""
    for name in ("cross-x86_64.p11", "cross-s390x.p11", "real-card-sign.p11"):
        path = REPO / "fixtures" / "p11spy" / name
        calls = [e for e in read_trace(path) if isinstance(e, Call)]
        assert calls and not any(c.never_returned for c in calls), name
        assert all(c.rv is not None for c in calls), name
        if name != "cross-s390x.p11":  # big-endian: its headers are not read here
            kinds = records(path)
            assert RecordType.ENTRY not in kinds and kinds[RecordType.CALL] == len(calls), name


def test_the_fixture_with_entry_records() -> None:
    """fixtures/p11spy/real-thread-crashed-in-module.p11 (testbed/record_entry.py): decode
    names the call and its thread; every other call shows once; nothing to redact."""
    path = REPO / "fixtures" / "p11spy" / "real-thread-crashed-in-module.p11"
    kinds = records(path)
    assert kinds[RecordType.ENTRY] == kinds[RecordType.CALL] + 1
    calls = [e for e in read_trace(path) if isinstance(e, Call)]
    assert len(calls) == kinds[RecordType.ENTRY]
    crashed = calls[-1]
    assert crashed.function == "C_GenerateRandom" and crashed.never_returned
    assert crashed.tid != crashed.pid
    text = decoded(path)
    assert text.rstrip().endswith(f"  -> never returned (thread {crashed.tid} of process "
                                  f"{crashed.pid}): {INSIDE}")
    res = run([str(P11SPY), "redact", "--check", str(path)], dict(os.environ))
    assert res.returncode == 0 and "no secret found" in res.stdout, res.stdout + res.stderr


def test_redact_masks_the_pin_in_the_entry_record_too(token, tmp_path, spy_env, shim) -> None:
    """With P11SPY_LOG_SECRETS=1 the PIN of pkcs11-tool's C_Login is in clear in its entry
    record and in its call record: redact --check names both places, redact masks both."""
    trace = tmp_path / "secrets.p11"
    res = run(["pkcs11-tool", "--module", str(shim), "--login", "--pin", USER_PIN, "-O"],
              spy_env(token, trace, P11SPY_LOG_SECRETS="1"))
    assert res.returncode == 0, res.stderr
    check = run([str(P11SPY), "redact", "--check", str(trace)], dict(os.environ))
    assert check.returncode == 1
    places = [int(ln.split("offset ")[1].split(":")[0]) for ln in check.stdout.splitlines()
              if "C_Login pPin (PIN)" in ln]
    data = trace.read_bytes()
    assert sorted(data[off + 8] for off in places) == [RecordType.CALL, RecordType.ENTRY]

    def login_records(raw: bytes) -> list[bytes]:
        return [raw[off:off + int.from_bytes(raw[off + 4:off + 8], "little")] for off in places]

    assert all(USER_PIN.encode() in rec for rec in login_records(data))
    out = tmp_path / "redacted.p11"
    assert run([str(P11SPY), "redact", "-o", str(out), str(trace)],
               dict(os.environ)).returncode == 0
    again = run([str(P11SPY), "redact", "--check", str(out)], dict(os.environ))
    assert again.returncode == 0, again.stdout
    assert not any(USER_PIN.encode() in rec for rec in login_records(out.read_bytes()))


# --- pairing, on traces laid out record by record as the shim writes them --------------------

def _pairs(path: Path, *recs: bytes) -> list[tuple[str, int | None, bool]]:
    """The calls decode reads, (function, rv, never returned); the viewer lists the same."""
    path.write_bytes(b"".join(recs))
    got = [(c.function, c.rv, c.never_returned) for c in read_trace(path)
           if isinstance(c, Call)]
    index = P11Index(path)
    index.scan(lambda: False)
    rows = [index.event(r) for r in index.rows]
    assert [(c.function, c.rv, c.never_returned) for c in rows if isinstance(c, Call)] == got
    index.close()
    return got


def _ids(name: str) -> int:
    return next(i for i, f in enumerate(functions.FUNCTIONS) if f.name == name)


def test_pairing_nested_passed_on_reused_pid_and_lost_records(tmp_path) -> None:
    """A return closes the latest open entry with its function, pid, thread, start and
    number; PASSED_ON closes without a call; a second process with the same pid and numbers
    (another start) stays apart; an entry open when records of its process went missing is
    not said to have never returned."""
    login, info, dropped = _ids("C_Login"), _ids("C_GetInfo"), RecordType.DROPPED
    e, c, p = RecordType.ENTRY, RecordType.CALL, RecordType.PASSED_ON
    got = _pairs(
        tmp_path / "t.p11",
        record(e, login, b"", number=1, start_us=10),  # outer: passed on
        record(e, login, b"", number=1, start_us=10),  # inner, same key (a second shim copy)
        record(c, login, b"", number=1, start_us=10, rv=0xA0),  # closes the inner
        record(p, login, b"", number=1, start_us=10),  # closes the outer
        record(e, info, b"", number=2, start_us=20),  # pid 4242, first run: killed
        record(e, info, b"", number=2, start_us=99),  # pid 4242 again, a later run
        record(c, info, b"", number=2, start_us=99),
        record(e, info, b"", number=3, start_us=30, pid=5),
        record(dropped, 0, ulong(0, 1, Phase.OUT), pid=5),  # its return may be the one lost
    )
    assert got == [("C_Login", 0xA0, False), ("C_GetInfo", 0, False),
                   ("C_GetInfo", None, True), ("C_GetInfo", None, False)]


def test_open_entries_are_bounded(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More entries open at once than a reader holds: the oldest are given up as never
    returned as they go, so memory stays bounded; each still shows once."""
    from p11spy.decoder.formats.p11spy import entries

    monkeypatch.setattr(entries, "MAX_OPEN", 3)
    info = _ids("C_GetInfo")
    recs = [record(RecordType.ENTRY, info, b"", number=n) for n in range(1, 11)]
    got = _pairs(tmp_path / "t.p11", *recs, record(RecordType.CALL, info, b"", number=10))
    assert got == [("C_GetInfo", None, True)] * 7 + [("C_GetInfo", 0, False)] + \
        [("C_GetInfo", None, True)] * 2


def test_the_viewers_findings_go_to_the_call_that_never_returned() -> None:
    """`p11spy show` on the crash fixture, d, Enter on the first finding: the viewer is on
    C_GenerateRandom, marked as an error, and its detail carries the finding."""
    path = REPO / "fixtures" / "p11spy" / "real-thread-crashed-in-module.p11"

    @sync
    async def look() -> tuple[str, str, str]:
        app = ShowApp.for_paths([path])
        async with app.run_test(size=(120, 40)) as pilot:
            tv, first, rec = await first_finding(pilot, app)
            assert tv.index.marks[rec] == "error"
            pane = detail.plain(detail.build(tv.index, rec), width=200)
            return first, tv.index.function(rec), pane

    first, function, pane = look()
    assert "C_GenerateRandom in thread" in first and "never returned" in first
    assert function == "C_GenerateRandom"
    assert INSIDE in pane and "[error] C_GenerateRandom in thread" in pane


def test_following_a_trace_names_the_call_the_client_is_inside(token, tmp_path, spy_env,
                                                                shim) -> None:
    """`p11spy show --follow` on the trace of a client inside a long C_GenerateKeyPair (RSA
    8192): the status line says which call, in which thread, has been inside the module for
    how long, while it is (a hang, seen live)."""
    prog = build("inside", tmp_path)
    trace = tmp_path / "live.p11"
    proc, tid = inside(prog, shim, spy_env(token, trace), trace, "keypair", "8192")
    try:
        @sync
        async def live() -> str:
            app = ShowApp.for_paths([trace], follow=True)
            async with app.run_test(size=(160, 30)) as pilot:
                end = time.monotonic() + 20
                while f"C_GenerateKeyPair (thread {tid})" not in screen_text(app):
                    assert time.monotonic() < end, screen_text(app)
                    await pilot.pause(0.1)
                return screen_text(app)

        screen = live()
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    status = next(ln for ln in screen.splitlines() if "inside the module" in ln)
    assert re.search(rf"inside the module for \d+ s: C_GenerateKeyPair \(thread {tid}\)", status)
