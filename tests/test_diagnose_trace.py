"""diagnose and decode on incomplete traces, made for real: a p11spy trace whose shim could not
write (a file size limit, as a full disk: DROPPED records) and traces cut short (a SoftHSM2 run
through the shim, and through OpenSC's pkcs11-spy, copied while half written). Nothing is
concluded from what such a trace does not show: no "C_Finalize never called", no call that
"never returned", no "the program gave up"; trace-incomplete says why, and decode warns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from p11spy.decoder.diagnose import Finding, diagnose
from p11spy.decoder.events import DROPPED, TRUNCATED, Call, TraceWarning
from p11spy.decoder.formats.registry import open_events
from tests.conftest import USER_PIN, run
from tests.cprogs import build

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "tests" / "clients" / "diagnose_client.py"
PKCS11_SPY = "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so"
P11SPY = str(Path(sys.executable).parent / "p11spy")
# what only a complete trace can show
END_RULES = {"never-finalized", "call-never-returned", "client-stopped"}


def rules(findings: list[Finding]) -> dict[str, str]:
    return {f.rule: f.severity for f in findings}


def cut(path: Path, keep: float) -> Path:
    """The first part of a trace, as a copy taken while the program was still writing."""
    data = path.read_bytes()
    out = path.with_name("cut-" + path.name)
    out.write_bytes(data[:int(len(data) * keep)])
    return out


def test_dropped_records_are_no_missing_finalize(token, tmp_path, spy_env, shim) -> None:
    """tests/shim_c/fulldisk.c: writes fail from the 3000th byte on and last past C_Finalize,
    so the shim writes the count of records it lost when it is unloaded. The C_Finalize is
    among them: diagnose must not say it was never called."""
    prog = build("fulldisk", tmp_path)
    trace = tmp_path / "f.p11"
    r = run([str(prog), str(shim), "3000", "50", "0"], spy_env(token, trace))
    assert r.returncode == 0 and r.stdout == "failures 0\n", r.stderr
    events = list(open_events(trace))
    assert not any(isinstance(e, Call) and e.function == "C_Finalize" for e in events)
    # one count where a write worked again, or more (as the limit comes and goes)
    gaps = [e for e in events if isinstance(e, TraceWarning)]
    assert gaps and all(g.kind == DROPPED and "record(s) missing here" in g.message
                        for g in gaps)
    findings = diagnose(events)
    assert "never-finalized" not in rules(findings)
    f = next(f for f in findings if f.rule == "trace-incomplete")
    assert f.severity == "info" and f.seqs == [gaps[0].seq]
    assert f.title == "The trace is incomplete: the tracer could not write some records"
    # the same program with room to write: the C_Finalize is there, no gap
    whole = tmp_path / "whole.p11"
    r = run([str(prog), str(shim), "100000000", "50", "0"], spy_env(token, whole))
    assert r.returncode == 0, r.stderr
    assert not [f for f in diagnose(open_events(whole))
                if f.rule in ("trace-incomplete", "never-finalized")]


def test_a_shim_trace_cut_short(token, spy_env, shim_for, tmp_path) -> None:
    """A SoftHSM2 run through the shim, cut in its last records: the uncut trace is
    healthy, the cut one claims nothing about its end, and decode warns."""
    trace = tmp_path / "healthy.p11"
    r = run([sys.executable, str(CLIENT), str(shim_for(token.module)), "healthy", token.label,
             USER_PIN], spy_env(token, trace))
    assert "C_Sign CKR_OK" in r.stdout.splitlines(), r.stderr
    assert [f.severity for f in diagnose(open_events(trace))] == []
    short = cut(trace, 0.9)
    findings = diagnose(open_events(short))
    assert not END_RULES & set(rules(findings)), rules(findings)
    assert rules(findings) == {"trace-incomplete": "info"}
    assert [f.title for f in findings] == ["The trace is incomplete: the file was cut short"]
    text = subprocess.run([P11SPY, "decode", str(short)], capture_output=True, text=True)
    assert text.returncode == 0
    assert any(line.startswith("!! byte ") and "file ends inside a record" in line
               for line in text.stdout.splitlines()), text.stdout[-500:]
    summary = subprocess.run([P11SPY, "decode", "--summary", str(short)], capture_output=True,
                             text=True).stdout
    assert "file ends inside a record" in summary


def test_a_pkcs11_spy_log_cut_short(token, tmp_path) -> None:
    """OpenSC's pkcs11-spy log of a failed login, cut in the middle of a line: its last call
    has no "Returned:" line because the file was cut, not because the program died in it."""
    log = tmp_path / "spy.log"
    env = {**token.env, "PKCS11SPY": token.module, "PKCS11SPY_OUTPUT": str(log)}
    r = run([sys.executable, str(CLIENT), PKCS11_SPY, "wrong-pin", token.label, USER_PIN], env)
    assert "C_Login CKR_PIN_INCORRECT" in r.stdout.splitlines(), r.stdout + r.stderr
    whole = rules(diagnose(open_events(log)))
    assert whole.get("pin-incorrect") == "error" and "trace-incomplete" not in whole
    text = log.read_text()
    short = log.with_name("short.log")
    end = text.index("Returned:", text.index("C_Login")) + 5  # inside the login's answer
    short.write_text(text[:end])
    events = list(open_events(short))
    [warning] = [e for e in events if isinstance(e, TraceWarning) and e.kind]
    assert warning.kind == TRUNCATED and warning is events[-1]
    found = rules(diagnose(events))
    assert not END_RULES & set(found) and found["trace-incomplete"] == "info", found
    out = subprocess.run([P11SPY, "decode", str(short)], capture_output=True, text=True).stdout
    assert out.splitlines()[-1] == ("!! the file ends in the middle of a line: the trace was "
                                    "cut short, and what came after is missing")
    # the same through a pipe, which cannot be looked at after it was read; the whole log not
    for path, cut in ((short, True), (log, False)):
        with path.open("rb") as f:
            piped = subprocess.run([P11SPY, "decode", "-"], stdin=f, capture_output=True,
                                   text=True).stdout
        assert piped.splitlines()[-1].startswith("!! the file ends in the middle") == cut
