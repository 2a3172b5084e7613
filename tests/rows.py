"""`decode --json`'s rows of a p11spy trace by either decoder, and the check that they agree
(tests/test_fastjson.py, tests/test_cross.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from p11spy.decoder import render
from p11spy.decoder.formats.p11spy import fastjson
from p11spy.decoder.formats.registry import open_events


def python_rows(path: Path) -> bytes:
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    render.jsonl(open_events(path, None, blocks=True), out)
    out.flush()
    return out.buffer.getvalue()


def compiled_rows(path: Path) -> tuple[bool, bytes]:
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    taken = fastjson.write_jsonl(path, None, out)
    out.flush()
    return taken, out.buffer.getvalue()


def same(path: Path) -> bool:
    """Whether the compiled decoder took the trace; it fails the test if the rows differ."""
    taken, rows = compiled_rows(path)
    if taken:
        expected = python_rows(path)
        if rows != expected:
            got, want = rows.splitlines(), expected.splitlines()
            first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                         min(len(got), len(want)))
            pytest.fail(f"{path.name}: row {first} differs\n compiled: "
                        f"{got[first] if first < len(got) else None!r}\n python:   "
                        f"{want[first] if first < len(want) else None!r}")
    else:
        assert rows == b"", "nothing is written where the Python reader reads the trace"
    return taken
