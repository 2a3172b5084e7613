"""`p11spy diff GOOD BAD`: two runs lined up, the first divergence first, then the rest.

The runs may be of any formats `decode` reads (a pkcs11-spy log of the working client against a
p11spy trace of the failing one). Calls are compared on what comparable.py keeps of them; the
calls that only hand out the function list are left out (they say how the module was loaded).
Both runs are held in memory as their comparable calls (about a kilobyte each), so a run of more
than max_calls calls is refused with one line rather than taking the machine's memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from p11spy.decoder.compare.align import (
    CHANGED,
    ONLY_BAD,
    ONLY_GOOD,
    SAME,
    Difference,
    Side,
    Step,
    align,
)
from p11spy.decoder.compare.comparable import BOOTSTRAP, comparable
from p11spy.decoder.events import Apdu, Call, Event
from p11spy.decoder.export.rows import ins_label
from p11spy.errors import UserError


@dataclass
class Run:
    path: str
    format: str
    sides: list[Side] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "calls": len(self.sides)}


def apdu_label(a: Apdu) -> str:
    """An exchange as "INS-name SW" (or the PC/SC error): what two runs' cards compare on."""
    return f"{ins_label(a) or 'short APDU'} {a.sw or a.error or 'no response'}"


MAX_CALLS = 500_000


def run_of(path: str, fmt: str, events: Iterable[Event], max_calls: int = MAX_CALLS) -> Run:
    run = Run(path, fmt)
    by_seq: dict[int, Side] = {}
    apdus = False
    for e in events:
        if isinstance(e, Call):
            if e.function in BOOTSTRAP:
                continue
            if len(run.sides) >= max_calls:
                raise UserError(f"{path}: more than {max_calls} calls; diff holds both runs in "
                                "memory (--max-calls N to allow more)")
            side = Side(len(run.sides) + 1, e.seq, e.source, comparable(e))
            run.sides.append(side)
            by_seq[e.seq] = side
        elif isinstance(e, Apdu):
            apdus = True
            parent = by_seq.get(e.parent) if e.parent is not None else None
            if parent is not None:
                if parent.card is None:
                    parent.card = []
                parent.card.append(apdu_label(e))
    if apdus:  # the trace records the card: a call without an APDU sent none
        for s in run.sides:
            if s.card is None:
                s.card = []
    return run


def load(path: Path, fmt: str | None = None, max_calls: int = MAX_CALLS) -> Run:
    from p11spy.decoder.formats.registry import FORMATS, open_trace

    name, f = open_trace(path, fmt)
    with f:
        return run_of(str(path), name, FORMATS[name].reader.read(f), max_calls)


@dataclass
class Diff:
    good: Run
    bad: Run
    steps: list[Step]

    @property
    def divergences(self) -> list[Step]:
        return [s for s in self.steps if s.kind != SAME]

    def counts(self) -> dict[str, int]:
        kinds = [s.kind for s in self.steps]
        return {k: kinds.count(k) for k in (SAME, CHANGED, ONLY_GOOD, ONLY_BAD)}

    def to_json(self) -> dict[str, Any]:
        div = self.divergences
        return {"type": "diff", "good": self.good.to_json(), "bad": self.bad.to_json(),
                "counts": self.counts(), "first": _step_json(div[0]) if div else None,
                "divergences": [_step_json(s) for s in div]}


def compare(good: Run, bad: Run) -> Diff:
    return Diff(good, bad, align(good.sides, bad.sides))


def _side_json(s: Side | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {"index": s.index, "seq": s.seq, "source": s.source, "function": s.call.function,
            "rv": s.call.rv}


def _step_json(s: Step) -> dict[str, Any]:
    out = {"kind": s.kind, "good": _side_json(s.good), "bad": _side_json(s.bad),
           "arguments": [d.to_json() for d in s.arguments],
           "results": [d.to_json() for d in s.results]}
    return {**out, "note": s.note} if s.note else out


# --- text ---------------------------------------------------------------------------------------

SHORT = 70  # characters of a value shown before it is cut
NAMES = 8  # calls named in a block of calls only one run made


def _value(v: Any) -> str:
    if v is None:
        return "(none)"
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    return text if len(text) <= SHORT else text[:SHORT - 3] + "..."


def _flags(v: Any) -> list[str] | None:
    """Flag names of a rendered CKF_ set (NAME|NAME), so two sets show only the bits apart."""
    if isinstance(v, str) and v.startswith("CKF_"):
        return v.split("|")
    return None


def _difference(label: str, d: Difference) -> list[str]:
    fg, fb = _flags(d.good), _flags(d.bad)
    if fg is not None and fb is not None:
        only = [f"{side} only {'|'.join(x for x in a if x not in b)}"
                for side, a, b in (("GOOD", fg, fb), ("BAD", fb, fg)) if set(a) - set(b)]
        return [f"    {label} {d.path}: {'; '.join(only)}"]
    if isinstance(d.good, list) and isinstance(d.bad, list):
        only_g = [x for x in d.good if x not in d.bad]
        only_b = [x for x in d.bad if x not in d.good]
        if only_g or only_b:
            return [f"    {label} {d.path}: GOOD {len(d.good)} items, BAD {len(d.bad)}",
                    f"        only GOOD: {_value(only_g)}",
                    f"        only BAD:  {_value(only_b)}"]
    return [f"    {label} {d.path}: GOOD {_value(d.good)} | BAD {_value(d.bad)}"]


def _where(s: Side) -> str:
    return f"call {s.index}" + (f" ({s.source})" if s.source else "")


def _changed(s: Step) -> list[str]:
    assert s.good and s.bad
    lines = [f"  {s.good.call.function}: GOOD {_where(s.good)}, BAD {_where(s.bad)}"]
    for d in s.arguments:
        lines += _difference("argument", d)
    for d in s.results:
        lines += _difference("got back", d)
    return lines


def _blocks(steps: list[Step]) -> Iterator[list[Step]]:
    """Steps in blocks: each changed call alone, runs of calls only one side made together."""
    block: list[Step] = []
    for s in steps:
        if block and (s.kind == CHANGED or s.kind != block[-1].kind
                      or _side(s).index != _side(block[-1]).index + 1):
            yield block
            block = []
        block.append(s)
    if block:
        yield block


def _side(s: Step) -> Side:
    side = s.good if s.kind != ONLY_BAD else s.bad
    assert side is not None
    return side


def _only(block: list[Step]) -> list[str]:
    label = "GOOD" if block[0].kind == ONLY_GOOD else "BAD"
    sides = [_side(s) for s in block]
    first, last = sides[0], sides[-1]
    span = _where(first) if first is last else f"calls {first.index}-{last.index}"
    calls = ", ".join(f"{x.call.function} {x.call.rv}" for x in sides[:NAMES])
    more = f", ... ({len(sides) - NAMES} more)" if len(sides) > NAMES else ""
    notes = [f"    {_where(_side(s))} {_side(s).call.function}: {s.note}" for s in block if s.note]
    return [f"  only in {label} ({span}): {calls}{more}", *notes]


def _block_lines(block: list[Step]) -> list[str]:
    return _changed(block[0]) if block[0].kind == CHANGED else _only(block)


def text(d: Diff, out: TextIO) -> None:
    for label, r in (("GOOD", d.good), ("BAD", d.bad)):
        out.write(f"{label + ':':<6}{r.path} ({r.format}, {len(r.sides)} calls)\n")
    c = d.counts()
    out.write(f"{c[SAME]} calls alike, {c[CHANGED]} differ, {c[ONLY_GOOD]} only in GOOD, "
              f"{c[ONLY_BAD]} only in BAD\n")
    blocks = list(_blocks(d.divergences))
    if not blocks:
        out.write("\nNo difference.\n")
        return
    out.write("\nFirst divergence:\n")
    out.write("\n".join(_block_lines(blocks[0])) + "\n")
    if len(blocks) > 1:
        out.write("\nThen:\n")
        for b in blocks[1:]:
            out.write("\n".join(_block_lines(b)) + "\n")
