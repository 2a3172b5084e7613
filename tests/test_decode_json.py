"""`decode --json` writes what the event model says: one row per event, each its to_json(),
also where the reader hands decode many logged lines as one LogLines event (OpenSC debug logs)
and where the fast JSON writer cannot write a value (the json module takes over)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from p11spy.decoder import render
from p11spy.decoder.events import Call, LogLine, LogLines
from p11spy.decoder.formats.registry import detect, formats
from tests.golden.produce import _main, fixture_files, run


def rows(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_decode_json_is_every_event_of_the_reader(path: Path) -> None:
    """The rows of `decode --json` against the reader's events one by one (a LogLine per
    line): the same objects, in the same order, with the same seq numbers."""
    with path.open("rb") as f:
        want = [json.loads(json.dumps(e.to_json())) for e in formats()[detect(path)].read(f)]
    got = run(_main(), ["decode", "--json", str(path)])
    assert got["rc"] == 0, got["stderr"]
    assert rows(got["stdout"]) == want
    assert [r["seq"] for r in want] == list(range(len(want)))


def test_an_opensc_log_reaches_decode_as_blocks_of_lines() -> None:
    """What makes decode fast: most lines come in LogLines of many lines, not one by one."""
    path = next(p for p in fixture_files() if p.name == "real-0.23-card-sign-debug9.log")
    with path.open("rb") as f:
        events = list(formats()["opensc-debug"].read_blocks(f))
    lines = sum(len(e.texts) for e in events if isinstance(e, LogLines))
    assert not any(isinstance(e, LogLine) for e in events)
    assert lines > 5 * len(events)


def test_values_the_fast_writer_refuses_are_written_by_the_json_module() -> None:
    """An integer over 64 bits (a hand-edited trace) and a lone surrogate: each event is still
    one row per line, the rows written before it and after it intact."""
    events = [Call(0, function="C_A", args={"big": 1 << 70}),
              LogLines(1, parent=0, texts=["fine", "bad \udc80"], times=[1.5, None], pid=7,
                       tid=8),
              Call(3, function="C_B", args={"label": "é"})]
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8")
    render.jsonl(events, out)
    out.flush()
    got = rows(raw.getvalue())
    assert got == [events[0].to_json(), *(line.to_json() for line in events[1].lines()),
                   events[2].to_json()]
    assert got[0]["args"]["big"] == 1 << 70 and got[2]["text"] == "bad \udc80"
