"""`p11spy export --format perfetto|parquet` and `p11spy query`, on real runs.

Parquet: traces of several real runs (SoftHSM2 clients under `p11spy run`, one through OpenSC's
pkcs11-spy, a card run) are exported, and SQL counting failures by function and return code must
agree with `decode --summary`, whether it reads the Parquet files or the traces themselves.
Perfetto: the trace-event JSON of a real card run must nest every APDU and PC/SC call under the
call that made it, as a viewer lays slices out (by time, per thread).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import SOFTHSM_MODULE, USER_PIN, make_token
from tests.test_diff import DIFF_CLIENT, P11SPY, pkcs11_spied, spied

FIXTURES = Path(__file__).parents[1] / "fixtures"
CARD_SIGN = FIXTURES / "p11spy" / "real-card-sign.p11"
CARD_WRONG_PIN = FIXTURES / "p11spy" / "real-card-wrong-pin.p11"


def p11spy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([P11SPY, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Real runs with failures in them: an EBCDIC PIN, a read-only session, a wrong PIN given
    to pkcs11-tool (through pkcs11-spy), and a card run with a wrong PIN."""
    root = tmp_path_factory.mktemp("export")
    tok = make_token(root / "hsm")
    client = [sys.executable, str(DIFF_CLIENT), SOFTHSM_MODULE, tok.label, USER_PIN]
    out = [spied(tok, root / "ebcdic.p11", [*client, "--ebcdic"]),
           spied(tok, root / "ro.p11", [*client, "--read-only"]),
           spied(tok, root / "ok.p11", client)]
    r = subprocess.run(["pkcs11-tool", "--module", "/usr/lib/x86_64-linux-gnu/pkcs11/"
                        "pkcs11-spy.so", "--login", "--pin", "9999", "-O"],
                       env={**tok.env, "PKCS11SPY": SOFTHSM_MODULE,
                            "PKCS11SPY_OUTPUT": str(root / "wrong.log")},
                       capture_output=True, text=True, timeout=60)
    assert "CKR_PIN_INCORRECT" in r.stderr, r.stderr
    out.append(root / "wrong.log")
    out.append(CARD_WRONG_PIN)
    assert pkcs11_spied  # the same helpers as the diff tests
    return out


def summary_failures(files: list[Path]) -> Counter:
    r = p11spy("decode", "--summary", "--json", *map(str, files))
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    return Counter({(fn, rv): n for fn, st in s["functions"].items()
                    for rv, n in st["return_values"].items() if rv != "CKR_OK"})


FAILURES_SQL = ("SELECT function, rv_name, count(*) AS n FROM events "
                "WHERE type = 'call' AND failed GROUP BY ALL ORDER BY ALL")


def query(sql: str, *files: Path) -> list[dict]:
    r = p11spy("query", sql, *map(str, files), "--json")
    assert r.returncode == 0, r.stderr
    return [json.loads(x) for x in r.stdout.splitlines()]


def test_parquet_failures_by_function_agree_with_decode_summary(runs: list[Path],
                                                                 tmp_path: Path) -> None:
    parquet = []
    for i, trace in enumerate(runs):
        out = tmp_path / f"server{i % 2}-{trace.stem}.parquet"
        r = p11spy("export", "--format", "parquet", "--host", f"server{i % 2}", str(trace),
                   "-o", str(out))
        assert r.returncode == 0, r.stderr
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        parquet.append(out)
    expected = summary_failures(runs)
    assert {("C_Login", "CKR_PIN_INCORRECT"), ("C_CreateObject", "CKR_SESSION_READ_ONLY")} \
        <= set(expected)
    for files in (parquet, runs):  # the exported files, and the traces read directly
        got = Counter({(r["function"], r["rv_name"]): r["n"]
                       for r in query(FAILURES_SQL, *files)})
        assert got == expected
    # every row knows where it came from
    where = query("SELECT host, format, count(DISTINCT trace_file) AS traces, "
                  "count(*) FILTER (WHERE exe IS NULL AND type = 'call') AS calls_without_exe "
                  "FROM events GROUP BY ALL ORDER BY ALL", *parquet)
    assert {(w["host"], w["format"]) for w in where} == {
        ("server0", "p11spy"), ("server1", "p11spy"), ("server1", "pkcs11-spy")}
    assert sum(w["traces"] for w in where) == len(runs)
    assert all(w["calls_without_exe"] == 0 for w in where if w["format"] == "p11spy")


def test_host_column_is_the_machine_the_trace_names(runs: list[Path], tmp_path: Path) -> None:
    """p11spy traces name the machine they were made on (uname's nodename): that fills the host
    column unless --host names one; traces that do not (pkcs11-spy's, p11spy's before the host
    was recorded) leave it NULL."""
    out = tmp_path / "all.parquet"
    assert p11spy("export", "--format", "parquet", *map(str, runs), "-o", str(out)).returncode == 0
    sql = ("SELECT trace_file, list(DISTINCT host) AS hosts, count(*) FILTER (WHERE host IS NULL)"
           " AS unnamed FROM events GROUP BY ALL")
    fresh = {str(p) for p in runs if p.suffix == ".p11" and p != CARD_WRONG_PIN}
    assert len(fresh) == 3
    for rows in (query(sql, out), query(sql, *runs)):  # exported, and the traces read directly
        by_file = {r["trace_file"]: r for r in rows}
        assert by_file.keys() == set(map(str, runs))
        for name, r in by_file.items():
            if name in fresh:
                assert (r["hosts"], r["unnamed"]) == ([os.uname().nodename], 0), name
            else:
                assert r["hosts"] == [None], name
    named = tmp_path / "named.parquet"
    r = p11spy("export", "--format", "parquet", "--host", "web-17", *map(str, runs),
               "-o", str(named))
    assert r.returncode == 0, r.stderr
    assert query("SELECT DISTINCT host FROM events", named) == [{"host": "web-17"}]


def test_parquet_rows_hold_no_pin(runs: list[Path], tmp_path: Path) -> None:
    """The pkcs11-spy log holds the PIN in clear; its rows hold its length and class."""
    spy_log = next(p for p in runs if p.suffix == ".log")
    assert b"39 39 39 39" in spy_log.read_bytes() or b"9999" in spy_log.read_bytes()
    out = tmp_path / "spy.parquet"
    assert p11spy("export", "--format", "parquet", str(spy_log), "-o", str(out)).returncode == 0
    rows = query("SELECT args FROM events WHERE function = 'C_Login'", out)
    args = json.loads(rows[0]["args"])
    assert args["pPin"] == {"length": 4, "class": "ASCII digits"}
    dump = p11spy("query", "SELECT * FROM events", str(out), "--csv").stdout
    assert "39393939" not in dump and "9999" not in dump


def test_query_bad_sql_and_bad_files_are_one_line(tmp_path: Path) -> None:
    r = p11spy("query", "SELECT nope FROM events", str(CARD_SIGN))
    assert r.returncode == 2 and r.stderr.startswith("p11spy query: SQL:")
    assert r.stderr.count("\n") == 1
    r = p11spy("query", "SELECT 1", str(tmp_path / "missing.p11"))
    assert r.returncode == 2 and "no such file" in r.stderr and r.stderr.count("\n") == 1
    r = p11spy("export", "--format", "parquet", str(CARD_SIGN))
    assert r.returncode == 2 and "-o FILE" in r.stderr
    for fmt in ("perfetto", "parquet"):
        out = tmp_path / f"out.{fmt}"
        r = p11spy("export", "--format", fmt, str(tmp_path / "missing.p11"), "-o", str(out))
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such file" in r.stderr
        assert not out.exists() and not list(tmp_path.glob(".*"))  # nothing half-written
    r = p11spy("export", "--format", "perfetto", str(tmp_path / "missing.p11"))
    assert r.returncode == 2 and r.stdout == ""


def slices_of(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    return [e for e in data["traceEvents"] if e["ph"] == "X"]


# Each slice with its thread and process, its own seq and parent (the call it was made under,
# from its args) and the seq of the slice the trace processor nested it in.
SLICES_SQL = """
SELECT s.name, s.category, s.depth, s.dur,
       extract_arg(s.arg_set_id, 'args.seq') AS seq,
       extract_arg(s.arg_set_id, 'args.parent') AS parent,
       extract_arg(s.arg_set_id, 'args.rv') AS rv,
       extract_arg(p.arg_set_id, 'args.seq') AS nested_in,
       t.tid, pr.pid, pr.name AS process
FROM slice s LEFT JOIN slice p ON s.parent_id = p.id
JOIN thread_track tt ON s.track_id = tt.id JOIN thread t USING (utid)
LEFT JOIN process pr USING (upid)
"""


def processed(path: Path) -> list[dict]:
    """The slices Perfetto's trace processor reads from the file, through the perfetto
    package's client (testbed/trace_processor.py says how it runs here)."""
    from testbed.trace_processor import TraceProcessorMissing, trace_processor

    try:
        with trace_processor(path) as tp:
            return [dict(r.__dict__) for r in tp.query(SLICES_SQL)]
    except TraceProcessorMissing as exc:
        pytest.fail(str(exc))


def test_perfetto_export_nests_apdus_and_pcsc_calls_under_their_call(tmp_path: Path) -> None:
    """A real card run: every call is a slice on its process and thread, every APDU and PC/SC
    call a slice nested in the call that made it, arguments and return codes slice args."""
    out = tmp_path / "card.json"
    r = p11spy("export", "--format", "perfetto", str(CARD_SIGN), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    decoded = p11spy("decode", "--json", str(CARD_SIGN)).stdout
    events = [json.loads(x) for x in decoded.splitlines()]
    kinds = Counter(e["type"] for e in events)
    assert kinds["apdu"] > 10 and kinds["pcsc"] > 10
    slices = processed(out)
    assert Counter(s["category"] for s in slices) == {
        "pkcs11": kinds["call"], "apdu": kinds["apdu"], "pcsc": kinds["pcsc"]}
    by_seq = {s["seq"]: s for s in slices}
    for e in events:
        if e["type"] in ("apdu", "pcsc"):
            s = by_seq[e["seq"]]
            assert (s["depth"], s["nested_in"], s["parent"]) == (1, e["parent"], e["parent"]), s
        elif e["type"] == "call":
            s = by_seq[e["seq"]]
            assert (s["depth"], s["name"], s["rv"]) == (0, e["function"], e["rv_name"])
            assert (s["pid"], s["tid"]) == (e["pid"], e["tid"])
    assert {s["process"] for s in slices} == {f"pkcs11-tool ({CARD_SIGN})"}
    # arguments are slice args; a VERIFY keeps its header (and Lc), never its data: the PIN
    raw = slices_of(out)
    sign = next(s for s in raw if s["name"] == "C_SignInit")
    assert sign["args"]["pMechanism"]["mechanism"] == "CKM_SHA256_RSA_PKCS"
    verify = [s for s in raw if s["name"].startswith("APDU VERIFY")]
    assert any(s["args"]["command"] == "0020008008" for s in verify)
    assert all(s["args"]["command"] in ("00200080", "0020008008") for s in verify)


@pytest.mark.parametrize("fixture", ["pkcs11-spy/real-0.23-two-processes.log",
                                     "opensc-debug/real-0.23-card-sign-debug9.log",
                                     "pcsc-spy/real-1.9.9-two-threads.raw"])
def test_perfetto_export_of_other_formats(fixture: str, tmp_path: Path) -> None:
    """Other tracers' logs: as many slices as calls, APDUs and PC/SC calls, on their threads,
    each APDU inside its call where the log ties it to one."""
    out = tmp_path / "t.json"
    r = p11spy("export", "--format", "perfetto", str(FIXTURES / fixture), "-o", str(out))
    assert r.returncode == 0, r.stderr
    decoded = p11spy("decode", "--json", str(FIXTURES / fixture)).stdout
    events = [json.loads(x) for x in decoded.splitlines()]
    wanted = [e for e in events if e["type"] in ("call", "apdu", "pcsc")]
    slices = processed(out)
    assert len(slices) == len(wanted) > 0
    by_seq = {s["seq"]: s for s in slices}
    for e in wanted:
        if e.get("parent") is not None:
            assert by_seq[e["seq"]]["nested_in"] == e["parent"], (e, by_seq[e["seq"]])
    if "two-threads" in fixture:  # pthread ids, too large for the viewers: still two threads
        assert len({(s["pid"], s["tid"]) for s in slices}) >= 2


def test_readme_documents_the_parquet_schema() -> None:
    """The schema is a promise to the people who query it: every column, its type and
    meaning in the README, in order."""
    from p11spy.decoder.export.rows import SCHEMA

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    part = readme.split("## Fleets:")[1].split("\n## ")[0]
    table = [line for line in part.splitlines() if line.startswith("| `")]
    assert table == [f"| `{c}` | {t} | {d} |" for c, t, d in SCHEMA]
