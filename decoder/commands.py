"""Subcommands of the reading side: `p11spy decode`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType

from . import render, summary
from .cli import UserError
from .events import Call, Event

# Every reader module offers sniff(head: bytes) -> bool and read(f: BinaryIO) -> events.
# Detection tries them in this order; a reader not yet written is simply not offered.
READERS = {
    "p11spy": "p11spy.decoder.p11log",
    "pkcs11-spy": "p11spy.decoder.pkcs11spy_text",
    "opensc-debug": "p11spy.decoder.opensc_debug",
    "pcsc-spy": "p11spy.decoder.pcscspy_text",
}


@cache
def formats() -> dict[str, ModuleType]:
    found = {}
    for name, module in READERS.items():
        try:
            found[name] = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return found


def detect(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(4096)
    if not head:
        raise UserError(f"{path}: the file is empty")
    for name, reader in formats().items():
        if reader.sniff(head):
            return name
    raise UserError(f"{path}: not a trace format p11spy reads (use --format to say which)")


def open_events(path: Path, fmt: str | None = None) -> Iterator[Event]:
    """Events of one trace file, its format detected unless given."""
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory")
    name = fmt or detect(path)
    try:
        f = path.open("rb")
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror}") from exc
    with f:
        yield from formats()[name].read(f)


def _selected(events: Iterator[Event], args: argparse.Namespace) -> Iterator[Event]:
    """The calls --errors / --function pick, each with what happened under it (its APDUs,
    PC/SC calls and log lines, which readers yield after the call)."""
    if not (args.errors or args.function):
        yield from events
        return
    kept: set[int] = set()
    for e in events:
        if isinstance(e, Call):
            if (args.errors and not e.rv) or (args.function and e.function not in args.function):
                continue
            kept.add(e.seq)
            yield e
        elif getattr(e, "parent", None) in kept:
            yield e


def _decode(args: argparse.Namespace) -> int:
    out = sys.stdout
    if args.summary:
        s = summary.Summary()
        for name in args.files:
            for e in _selected(open_events(Path(name), args.format), args):
                s.add(e)
        if args.json:
            render.jsonl([_Json(s.to_json())], out)
        else:
            summary.text(s, out)
        return 0
    emit = render.jsonl if args.json else render.text
    for name in args.files:
        emit(_selected(open_events(Path(name), args.format), args), out)
    return 0


class _Json:
    """Anything with to_json, for the JSON Lines renderer."""

    def __init__(self, data: dict) -> None:
        self.data = data

    def to_json(self) -> dict:
        return self.data


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decode", help="print a trace as readable text or JSON Lines",
                       description="Print the calls of a trace, one block per call, or as JSON "
                                   "Lines (--json) for tools.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per event and line")
    p.add_argument("--errors", action="store_true", help="only calls that did not return CKR_OK")
    p.add_argument("--function", action="append", metavar="NAME",
                   help="only calls of this function (repeatable)")
    p.add_argument("--summary", action="store_true",
                   help="per function counts, errors and times; status words; slowest calls")
    p.add_argument("--format", choices=sorted(formats()),
                   help="the trace's format (default: detect)")
    p.set_defaults(func=_decode)
