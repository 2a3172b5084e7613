"""What the reader tests share: reading a file or bytes with one reader, picking events of a
kind, the APDU exchanges of a trace, and the rule that every fixture is described in its
folder's README."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from p11spy.decoder.events import Apdu, Call, Event

Reader = Callable[[BinaryIO], Iterator[Event]]


def decode(read: Reader, path: Path) -> list[Event]:
    with path.open("rb") as f:
        return list(read(f))


def decode_bytes(read: Reader, data: bytes) -> list[Event]:
    return list(read(io.BytesIO(data)))


def of(events: Iterable[Event], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def exchanges(events: list[Event]) -> list[tuple[str | None, bytes, bytes | None]]:
    """(function of the parent call, command, response) of every APDU, in order: what two
    traces of one run must agree on."""
    calls = {(e.pid, e.seq): e.function for e in events if isinstance(e, Call)}
    return [(calls.get((e.pid, e.parent)), e.command, e.response)
            for e in events if isinstance(e, Apdu)]


def assert_fixtures_described(folder: Path, names: Iterable[str], real: str) -> None:
    """Each fixture has its README row: a written one says it was not captured, a real one
    how it was made (the regular expression real); the folder's regenerate.sh runs."""
    readme = (folder / "README.md").read_text()
    for name in names:
        row = next((ln for ln in readme.splitlines() if ln.startswith(f"| `{name}` |")), None)
        assert row is not None, f"{name} has no row in {folder / 'README.md'}"
        if name.startswith("written-"):
            assert "written from the documented format, not captured" in row
        else:
            assert re.search(real, row), row
    assert (folder / "regenerate.sh").stat().st_mode & 0o111
