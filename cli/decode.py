"""`p11spy decode`: a trace as text blocks, JSON Lines or a summary."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from p11spy.decoder.formats import NAMES
from p11spy.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from typing import TextIO

    from p11spy.decoder.events import Event


def _selected(events: Iterator[Event], args: argparse.Namespace) -> Iterator[Event]:
    """The calls --errors / --function pick, each with what happened under it (its APDUs,
    PC/SC calls and log lines, which readers yield after the call). A PC/SC call or APDU
    exchange made outside any PKCS#11 call (a trace of PC/SC calls alone) is a call too."""
    from p11spy.decoder.events import Apdu, Call, PcscCall

    if not (args.errors or args.function):
        yield from events
        return
    kept: set[int] = set()
    for e in events:
        if isinstance(e, Call) or (isinstance(e, PcscCall | Apdu) and e.parent is None):
            if (args.errors and not _failed(e)) or \
                    (args.function and _function(e) not in args.function):
                continue
            kept.add(e.seq)
            yield e
        elif getattr(e, "parent", None) in kept:
            yield e
        elif isinstance(e, PcscCall | Apdu) and args.function \
                and _function(e) in args.function and not (args.errors and not _failed(e)):
            yield e  # a PC/SC call asked for by name, under a PKCS#11 call not shown


def _failed(e: Event) -> bool:
    """A call that did not return CKR_OK or SCARD_S_SUCCESS, or never returned (an APDU: whose
    transmit failed)."""
    if hasattr(e, "error"):
        return bool(e.error)
    return bool(getattr(e, "rv", None)) or bool(getattr(e, "never_returned", False))


def _function(e: Event) -> str:
    return getattr(e, "function", None) or "SCardTransmit"


def _known_function(name: str) -> None:
    """A --function that no PKCS#11 version or PC/SC defines would silently select nothing:
    say so, with the names it may have meant."""
    import difflib

    from p11spy.facts import pcsc
    from p11spy.facts.pkcs11.functions import BY_NAME

    names = [*BY_NAME, *pcsc.BY_NAME]
    if name in names:
        return
    near = difflib.get_close_matches(name, names, n=3, cutoff=0.6) or \
        [n for n in names if name.lower() in n.lower()][:3]
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    raise UserError(f"--function {name}: no PKCS#11 or PC/SC function has that name{hint}")


def _decode(args: argparse.Namespace) -> int:
    from pathlib import Path

    for name in args.function or ():
        _known_function(name)
    out = sys.stdout
    if args.summary:
        return _summary(args, out)
    whole = args.json and not (args.errors or args.function)
    for name in args.files:
        if whole and _compiled(Path(name), args.format, out):
            continue  # (the readers are imported only for a file it does not take)
        from p11spy.decoder import render
        from p11spy.decoder.formats.registry import open_events

        emit = render.jsonl if args.json else render.text
        emit(_selected(open_events(Path(name), args.format, blocks=True), args), out)
    return 0


def _summary(args: argparse.Namespace, out: TextIO) -> int:
    from pathlib import Path

    from p11spy.decoder import render, summary  # here: compiled and run only for --summary
    from p11spy.decoder.formats.registry import open_events

    s = summary.Summary()
    for name in args.files:
        for e in _selected(open_events(Path(name), args.format, blocks=True), args):
            s.add(e)
    if args.json:
        render.jsonl([_Json(s.to_json())], out)
    else:
        summary.text(s, out)
    return 0


def _compiled(path: Path, fmt: str | None, out: TextIO) -> bool:
    """A p11spy binary trace written by the compiled decoder, where it takes the file."""
    from p11spy.decoder.formats.p11spy import fastjson

    return fastjson.write_jsonl(path, fmt, out)


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
    p.add_argument("--errors", action="store_true",
                   help="only calls that failed (not CKR_OK or SCARD_S_SUCCESS)")
    p.add_argument("--function", action="append", metavar="NAME",
                   help="only calls of this function (repeatable)")
    p.add_argument("--summary", action="store_true",
                   help="per function counts, errors and times; status words; slowest calls")
    p.add_argument("--format", choices=sorted(NAMES),
                   help="the trace's format (default: detect)")
    p.set_defaults(func=_decode)
