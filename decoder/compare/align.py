"""Lining two runs up call by call, and what differs between the calls that line up.

A real sequence alignment (difflib's SequenceMatcher, whose longest-matching-block recursion
finds the same common calls a reader would), in two passes: first on what each call asked (its
function and its comparable inputs), so identical calls anchor the alignment; then, inside each
stretch that did not match, on the function alone, so a C_Login that got a different PIN pairs
with the other run's C_Login instead of showing as one call removed and one added.
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


def _paired(g: Side, b: Side) -> Step:
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


def align(good: list[Side], bad: list[Side]) -> list[Step]:
    """The two runs as one sequence of steps, in the order of both."""
    steps: list[Step] = []
    sm = SequenceMatcher(None, [s.call.key for s in good], [s.call.key for s in bad],
                         autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            steps += [_paired(g, b) for g, b in zip(good[i1:i2], bad[j1:j2], strict=True)]
        else:
            steps += _by_function(good[i1:i2], bad[j1:j2])
    return steps


def _by_function(good: list[Side], bad: list[Side]) -> list[Step]:
    steps: list[Step] = []
    sm = SequenceMatcher(None, [s.call.function for s in good], [s.call.function for s in bad],
                         autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            steps += [_paired(g, b) for g, b in zip(good[i1:i2], bad[j1:j2], strict=True)]
            continue
        steps += [Step(ONLY_GOOD, good=g) for g in good[i1:i2]]
        steps += [Step(ONLY_BAD, bad=b) for b in bad[j1:j2]]
    return steps
