"""Lining two runs up call by call, and what differs between the calls that line up.

A real sequence alignment (difflib's SequenceMatcher, whose longest-matching-block recursion
finds the same common calls a reader would), in two passes: first on what each call asked (its
function and its comparable inputs), so identical calls anchor the alignment; then, inside each
stretch that did not match, on the function alone, so a C_Login that got a different PIN pairs
with the other run's C_Login instead of showing as one call removed and one added.

SequenceMatcher's cost grows with the square of the length on runs that repeat the same calls
(20,000 calls each took more than five minutes), so long runs are matched window by window
(opcodes()): two traces of 20,000 calls align in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

from p11spy.decoder.compare.comparable import Comparable

SAME, CHANGED, ONLY_GOOD, ONLY_BAD = "same", "changed", "only good", "only bad"


@dataclass
class Side:
    """One call of one run: where it is, and what it compares on."""

    index: int  # position among the run's compared calls, from 1
    seq: int  # the event's seq in its trace
    source: str | None
    call: Comparable
    card: list[str] | None = None  # "INS SW" of its APDUs, when the trace records them

    def outputs(self) -> dict[str, Any]:
        out = dict(self.call.outputs)
        if self.card is not None:
            out["APDUs"] = self.card
        return out


@dataclass
class Difference:
    """One value that differs: where (a dotted path: argument, attribute, field) and both
    sides (None where a side does not have it)."""

    path: str
    good: Any
    bad: Any

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "good": self.good, "bad": self.bad}


@dataclass
class Step:
    kind: str  # SAME, CHANGED, ONLY_GOOD or ONLY_BAD
    good: Side | None = None
    bad: Side | None = None
    arguments: list[Difference] = field(default_factory=list)
    results: list[Difference] = field(default_factory=list)
    note: str = ""  # why a call is on one side only, where the comparer knows it (replay)


def differences(good: Any, bad: Any, path: str = "") -> list[Difference]:
    """The values that differ between two comparable values, dicts compared key by key."""
    if isinstance(good, dict) and isinstance(bad, dict):
        out: list[Difference] = []
        for k in dict.fromkeys([*good, *bad]):
            sub = f"{path}.{k}" if path else str(k)
            if k not in good or k not in bad:
                if good.get(k) != bad.get(k):
                    out.append(Difference(sub, good.get(k), bad.get(k)))
                continue
            out += differences(good[k], bad[k], sub)
        return out
    return [] if good == bad else [Difference(path, good, bad)]


def paired(g: Side, b: Side) -> Step:
    """Two calls that line up, and what differs between them."""
    args = differences(g.call.inputs, b.call.inputs)
    if g.call.length_query != b.call.length_query:
        args.append(Difference("(length query)", g.call.length_query, b.call.length_query))
    results = differences({"rv": g.call.rv}, {"rv": b.call.rv})
    results += differences(_comparable_outputs(g, b), _comparable_outputs(b, g))
    return Step(CHANGED if args or results else SAME, g, b, args, results)


def _comparable_outputs(side: Side, other: Side) -> dict[str, Any]:
    """A side's outputs, without APDUs unless both traces record them."""
    out = side.outputs()
    if other.card is None:
        out.pop("APDUs", None)
    return out


Opcode = tuple[str, int, int, int, int]
WINDOW = 800  # calls of each run one SequenceMatcher sees at most (its cost grows as the square)


def _common_ends(a: list[str], b: list[str]) -> tuple[int, int]:
    """How many items a and b share at their start, and then at their end."""
    n = min(len(a), len(b))
    head = 0
    while head < n and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < n - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    return head, tail


def _shifted(ops: list[Opcode], i: int, j: int) -> list[Opcode]:
    return [(t, i1 + i, i2 + i, j1 + j, j2 + j) for t, i1, i2, j1, j2 in ops]


def _windowed(a: list[str], b: list[str]) -> list[Opcode]:
    """SequenceMatcher's opcodes over runs too long to match whole: window by window, keeping
    of each window's alignment what ends in its first half (the rest is matched again with
    what follows), so the cost grows with the length, not its square."""
    ops: list[Opcode] = []
    i = j = 0
    half = WINDOW // 2
    while i < len(a) or j < len(b):
        wa, wb = a[i:i + WINDOW], b[j:j + WINDOW]
        sm = SequenceMatcher(None, wa, wb, autojunk=False)
        if len(wa) < WINDOW and len(wb) < WINDOW:  # the last window: all of it
            ops += _shifted(sm.get_opcodes(), i, j)
            break
        blocks = [m for m in sm.get_matching_blocks() if m.size]
        early = [m for m in blocks if m.a + m.size <= half and m.b + m.size <= half]
        cut = (early or blocks[:1])
        if cut:
            ca, cb = cut[-1].a + cut[-1].size, cut[-1].b + cut[-1].size
        else:  # nothing alike in the window: its first halves differ
            ca, cb = min(half, len(wa)), min(half, len(wb))
            ops.append(("replace", i, i + ca, j, j + cb))
            i, j = i + ca, j + cb
            continue
        ops += _shifted([o for o in sm.get_opcodes() if o[2] <= ca and o[4] <= cb], i, j)
        i, j = i + ca, j + cb
    return ops


def opcodes(a: list[str], b: list[str]) -> list[Opcode]:
    """How b differs from a, as SequenceMatcher's opcodes, at a cost that stays near linear on
    long runs: the common start and end are matched directly, a long middle window by window."""
    head, tail = _common_ends(a, b)
    ma, mb = a[head:len(a) - tail], b[head:len(b) - tail]
    ops: list[Opcode] = [("equal", 0, head, 0, head)] if head else []
    if len(ma) <= WINDOW and len(mb) <= WINDOW:
        ops += _shifted(SequenceMatcher(None, ma, mb, autojunk=False).get_opcodes(), head, head)
    else:
        ops += _shifted(_windowed(ma, mb), head, head)
    if tail:
        ops.append(("equal", len(a) - tail, len(a), len(b) - tail, len(b)))
    return [o for o in ops if o[1] < o[2] or o[3] < o[4]]


def align(good: list[Side], bad: list[Side]) -> list[Step]:
    """The two runs as one sequence of steps, in the order of both."""
    steps: list[Step] = []
    for tag, i1, i2, j1, j2 in opcodes([s.call.key for s in good], [s.call.key for s in bad]):
        if tag == "equal":
            steps += [paired(g, b) for g, b in zip(good[i1:i2], bad[j1:j2], strict=True)]
        else:
            steps += _by_function(good[i1:i2], bad[j1:j2])
    return steps


def _by_function(good: list[Side], bad: list[Side]) -> list[Step]:
    steps: list[Step] = []
    for tag, i1, i2, j1, j2 in opcodes([s.call.function for s in good],
                                       [s.call.function for s in bad]):
        if tag == "equal":
            steps += [paired(g, b) for g, b in zip(good[i1:i2], bad[j1:j2], strict=True)]
            continue
        steps += [Step(ONLY_GOOD, good=g) for g in good[i1:i2]]
        steps += [Step(ONLY_BAD, bad=b) for b in bad[j1:j2]]
    return steps
