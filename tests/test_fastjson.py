"""The compiled decoder of p11spy binary traces (decoder/formats/p11spy/p11json.c) writes what
the Python reader and renderer write, byte for byte: on every fixture, the hostile corpus,
real SoftHSM2 runs through the shim (entry records, mechanism structs, a full disk), and
thousands of damaged variants whose records still chain (the ones it takes). `decode --json`
uses it, so a difference here is a user seeing a different answer depending on a build.
"""

from __future__ import annotations

import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from p11spy.decoder.events import Call
from p11spy.decoder.formats.p11spy import entries, fastjson, frames
from p11spy.decoder.formats.registry import open_events
from p11spy.facts.logformat import FIELD, RECORD, RecordType
from tests.conftest import SO_PIN, USER_PIN, run, with_rsa_key
from tests.cprogs import build
from tests.hostile import call_span, record_spans
from tests.rows import compiled_rows, python_rows, same

REPO = Path(__file__).resolve().parents[1]
FIXTURES = sorted((REPO / "fixtures" / "p11spy").glob("*.p11"))
CORPUS = sorted((REPO / "tests" / "hostile_corpus").glob("*.p11"))
P11SPY = str(Path(sys.executable).parent / "p11spy")
BIG_ENDIAN = {"cross-s390x.p11"}  # left to the Python reader: it turns records around


def test_the_library_is_built() -> None:
    """`make setup` builds it; without it p11spy works, at a ninth of the speed."""
    assert fastjson.LIBRARY.is_file() and fastjson._library() is not None


@pytest.mark.parametrize("path", FIXTURES + CORPUS, ids=lambda p: p.name)
def test_fixtures_and_hostile_corpus(path: Path) -> None:
    taken = same(path)
    if path.parent.name == "p11spy":
        assert taken == (path.name not in BIG_ENDIAN)


def field_headers(data: bytes, start: int, length: int) -> list[int]:
    """Where the field headers of the record at data[start:start + length] are."""
    return [off - FIELD.size for *_f, off, _n in frames.fields(data, start, start + length)]


# What a damaged byte becomes: anything, or a value that reaches a limit of some decoder.
EDGES = (0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 0x7F, 0x80, 0xFF)


def damaged(data: bytes, rng: random.Random) -> bytes:
    """The trace with a few bytes inside records changed (never a record's marker or length:
    the records still chain, so the compiled decoder reads it): field headers, payloads,
    record types, times, durations, return values, call numbers."""
    b = bytearray(data)
    recs = record_spans(data)
    for _ in range(rng.randint(1, 6)):
        start, length = rng.choice(recs)
        fields = field_headers(b, start, length)
        what = rng.random()
        if what < 0.35 and fields:  # a field header: parameter, phase, kind, length
            at = rng.choice(fields) + rng.choice((0, 1, 2, 4, 5))
            b[at] = rng.choice(EDGES) if rng.random() < 0.5 else rng.randrange(256)
        elif what < 0.5:  # the header's numbers: type, module, function, times, rv, number
            at = start + rng.choice((8, 9, 10, 11, 24, 29, 30, 31, 32, 37, 38, 39, 40, 47, 48))
            b[at] = rng.choice(EDGES) if rng.random() < 0.5 else rng.randrange(256)
        elif length > RECORD.size:  # anywhere in the body
            at = start + rng.randrange(RECORD.size, length)
            b[at] = rng.choice(EDGES) if rng.random() < 0.3 else rng.randrange(256)
    return bytes(b)


BASES = [p for p in FIXTURES if p.name not in BIG_ENDIAN] + \
    [REPO / "tests" / "hostile_corpus" / "secrets.p11"]


@pytest.mark.parametrize("base", BASES, ids=lambda p: p.name)
def test_damaged_variants(base: Path, tmp_path: Path) -> None:
    rng = random.Random(f"fastjson {base.name}")
    data = base.read_bytes()
    taken = 0
    for i in range(150):
        variant = tmp_path / f"{i}.p11"
        variant.write_bytes(damaged(data, rng))
        taken += same(variant)
    assert taken >= 140  # a type turned into a big-endian process header is the Python's


@pytest.mark.parametrize("base", BASES, ids=lambda p: p.name)
def test_cut_anywhere(base: Path, tmp_path: Path) -> None:
    """A trace copied while written: cut in a record, in a header, after one."""
    rng = random.Random(f"cut {base.name}")
    data = base.read_bytes()
    recs = record_spans(data)
    cuts = {start + d for start, _n in rng.sample(recs, min(20, len(recs)))
            for d in (0, 1, 3, RECORD.size - 1, RECORD.size, RECORD.size + 9)}
    cuts |= {rng.randrange(len(data)) for _ in range(20)}
    taken = 0
    for i, at in enumerate(sorted(cuts)):
        variant = tmp_path / f"{i}.p11"
        variant.write_bytes(data[:at])
        taken += same(variant)
    assert taken >= len(cuts) // 2


def _with_times(template: bytes, times: list[tuple[int, int]]) -> bytes:
    out = bytearray()
    for start, dur in times:
        rec = bytearray(template)
        struct.pack_into("<QQ", rec, 24, start, dur)
        out += rec
    return bytes(out)


def test_times_and_durations_print_as_python_prints_them(tmp_path: Path) -> None:
    """Times and durations are floats in the rows; the C writes the digits itself where it
    can, and must write what orjson writes for float(us) / 1e6 and ns / 1000.0."""
    data = (REPO / "fixtures" / "p11spy" / "real-card-sign.p11").read_bytes()
    first_call = next(data[s:s + n] for s, n in record_spans(data)
                      if data[s + 8] == RecordType.CALL)
    rng = random.Random("times")
    edges = [0, 1, 5, 999, 1000, 999_999, 10**6, 10**6 + 1, 1795748899345458,
             (1 << 33) * 10**6 - 1, (1 << 33) * 10**6, 10**15 - 1, 10**15, (1 << 53) + 1,
             (1 << 64) - 1]
    values = edges + [rng.randrange(1 << rng.randrange(1, 64)) for _ in range(3000)]
    path = tmp_path / "times.p11"
    path.write_bytes(data[:record_spans(data)[0][1]] +
                     _with_times(first_call, [(v, values[-1 - i]) for i, v in enumerate(values)]))
    assert same(path)


def _call_of(data: bytes, name: str) -> bytes:
    from p11spy.facts.pkcs11.functions import BY_NAME

    start, n = call_span(data, BY_NAME[name].index)
    return data[start:start + n]


def test_more_distinct_values_than_the_caches_hold(tmp_path: Path) -> None:
    """The compiled decoder keeps Python's answers, up to 65,536 names and 4,096 payloads:
    past that it asks each time. 5,000 token infos that all differ and 70,000 attribute types
    in templates: the same rows."""
    data = (REPO / "fixtures" / "p11spy" / "real-card-sign.p11").read_bytes()
    head = data[:record_spans(data)[0][1]]
    info, attrs = _call_of(data, "C_GetTokenInfo"), _call_of(data, "C_GetAttributeValue")
    body = bytearray()
    for i in range(5000):  # the label's first bytes differ
        rec = bytearray(info)
        rec[-200:-196] = f"{i:04d}".encode()
        body += rec
    for i in range(70000):  # the attribute type differs (where the template's first lies)
        rec = bytearray(attrs)
        at = rec.index(bytes.fromhex("0202000000000000"))  # CKA_ALWAYS_AUTHENTICATE, 0x202
        struct.pack_into("<Q", rec, at, 0x80000000 + i)
        body += rec
    path = tmp_path / "distinct.p11"
    path.write_bytes(head + bytes(body))
    assert same(path)


def test_modules_past_the_most_remembered(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Five processes name their module before any of them calls it; a reader remembers at
    most MAX_MODULES names (lowered here to 2), so the first three processes' calls show no
    module path, in both decoders and in the viewer's index alike."""
    from p11spy.decoder.formats.p11spy import modules
    from p11spy.tui.p11_index import P11Index

    data = (REPO / "fixtures" / "p11spy" / "real-card-sign.p11").read_bytes()
    heads, rest = bytearray(), bytearray()
    for pid in range(1001, 1006):
        for start, n in record_spans(data):
            rec = bytearray(data[start:start + n])
            struct.pack_into("<I", rec, 12, pid)
            (heads if rec[8] in (RecordType.PROCESS, RecordType.MODULE) else rest).extend(rec)
    path = tmp_path / "five.p11"
    path.write_bytes(bytes(heads + rest))
    monkeypatch.setattr(modules, "MAX_MODULES", 2)
    assert same(path)
    calls = [e for e in open_events(path) if isinstance(e, Call)]
    assert {c.pid for c in calls if c.module} == {1004, 1005}
    assert {c.pid for c in calls if not c.module} == {1001, 1002, 1003}
    idx = P11Index(path)
    idx.scan(lambda: False)
    shown = [idx.event(idx.record_of_seq(c.seq)) for c in calls]
    assert [e.module for e in shown] == [c.module for c in calls]


def test_open_entries_given_up_as_the_python_reader_gives_them_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The entries with no return, beyond the most a reader holds (lowered here), are given up
    oldest first; and what is left at the end comes in the order it was entered."""
    data = (REPO / "fixtures" / "p11spy" / "real-thread-crashed-in-module.p11").read_bytes()
    kept = b"".join(data[s:s + n] for s, n in record_spans(data) if data[s + 8] != RecordType.CALL)
    assert sum(kept[s + 8] == RecordType.ENTRY for s, _n in record_spans(kept)) >= 4
    path = tmp_path / "entries.p11"
    path.write_bytes(kept * 3)
    monkeypatch.setattr(entries, "MAX_OPEN", 3)
    assert same(path)


def test_pcsc_calls_waiting_beyond_the_bound(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A call whose PC/SC calls outgrow what a reader keeps waiting (lowered here from 4 MiB)
    has them shown without it, after a warning, by both decoders alike."""
    path = REPO / "fixtures" / "p11spy" / "real-card-sign.p11"
    monkeypatch.setattr(entries, "MAX_WAITING", 2000)
    assert same(path)
    rows = compiled_rows(path)[1]
    assert rows.count(b"more PC/SC calls than a reader keeps waiting") >= 3


def test_a_real_pkcs11_tool_test_run(token, tmp_path: Path, spy_env, shim) -> None:
    """`pkcs11-tool --test` over SoftHSM2 through the shim: entry records before each call,
    templates, mechanisms with parameter structs (OAEP, PSS), every kind the shim writes."""
    with_rsa_key(token)
    trace = tmp_path / "test.p11"
    run(["pkcs11-tool", "--module", str(shim), "--login", "--pin", USER_PIN, "--test"],
        spy_env(token, trace))
    assert same(trace)
    rows = subprocess.run([P11SPY, "decode", "--json", str(trace)], capture_output=True,
                          check=True).stdout
    assert rows == python_rows(trace) and b'"mechanism":"CKM_RSA_PKCS_OAEP"' in rows


@pytest.mark.parametrize("secrets", ["0", "1"])
def test_every_function_through_the_shim(token, tmp_path: Path, spy_env, shim,
                                         secrets: str) -> None:
    """tests/clients/exercise.py over SoftHSM2 through the shim: every function, with valid
    and invalid arguments (NULL pointers, bad handles, length queries, too-small buffers),
    captured masked and with P11SPY_LOG_SECRETS=1."""
    trace = tmp_path / "every.p11"
    r = run([sys.executable, str(REPO / "tests" / "clients" / "exercise.py"), str(shim),
             USER_PIN, SO_PIN], spy_env(token, trace, P11SPY_LOG_SECRETS=secrets))
    assert r.returncode == 0, r.stderr
    assert same(trace)
    assert compiled_rows(trace)[1].count(b'"type":"call"') > 150


def test_a_full_disk(token, tmp_path: Path, spy_env, shim) -> None:
    """tests/shim_c/fulldisk.c: records lost to a full disk (DROPPED records), entries whose
    return may be among them."""
    prog = build("fulldisk", tmp_path)
    trace = tmp_path / "f.p11"
    r = run([str(prog), str(shim), "3000", "50", "0"], spy_env(token, trace))
    assert r.returncode == 0, r.stderr
    assert same(trace)
    assert b"record(s) missing here" in compiled_rows(trace)[1]


def test_decode_json_is_the_compiled_decoders() -> None:
    """What `p11spy decode --json` prints for a p11spy trace, and that --errors still filters
    (the compiled decoder writes whole traces only)."""
    path = REPO / "fixtures" / "p11spy" / "real-card-wrong-pin.p11"
    rows = subprocess.run([P11SPY, "decode", "--json", str(path)], capture_output=True,
                          check=True).stdout
    assert rows == compiled_rows(path)[1] == python_rows(path)
    errors = subprocess.run([P11SPY, "decode", "--json", "--errors", str(path)],
                            capture_output=True, check=True).stdout
    assert b"CKR_PIN_INCORRECT" in errors and len(errors) < len(rows) / 2


SANITIZED_RUN = """
import random, sys, tempfile
from pathlib import Path
from p11spy.decoder.formats.p11spy import fastjson
fastjson.LIBRARY = Path(sys.argv[1])
fastjson._library.cache_clear()
from tests import test_fastjson as t
taken = 0
with tempfile.TemporaryDirectory() as d:
    v = Path(d) / "v.p11"
    for p in t.FIXTURES + t.CORPUS:
        taken += t.same(p)
    for base in t.BASES:
        rng = random.Random("sanitized " + base.name)
        data = base.read_bytes()
        for _ in range(60):
            v.write_bytes(t.damaged(t.damaged(data, rng), rng))
            taken += t.same(v)
        for at in range(0, len(data), 97):
            v.write_bytes(data[:at])
            taken += t.same(v)
print(taken)
"""


def test_under_address_and_undefined_behaviour_sanitizers(tmp_path: Path) -> None:
    """The C reads traces from strangers: built with ASan and UBSan (gcc), it runs over the
    fixtures, the hostile corpus, damaged and cut variants, and must neither trip a sanitizer
    nor differ from the Python reader."""
    sys.path.insert(0, str(REPO))
    from shim_build.build import decoder_text

    src, lib = tmp_path / "p11json.c", tmp_path / "libp11json.so"
    src.write_text(decoder_text())
    subprocess.run(["gcc", "-shared", "-fPIC", "-g", "-O1", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=undefined", "-o", str(lib), str(src)], check=True)
    runtimes = [subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True,
                               text=True, check=True).stdout.strip()
                for name in ("libasan.so", "libubsan.so")]
    env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": ":".join(runtimes),
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", SANITIZED_RUN, str(lib)], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert int(r.stdout) > 1000  # the compiled decoder took them: it was what ran
