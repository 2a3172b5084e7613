"""`p11spy replay --against`'s findings, in `p11spy diff`'s terms and presentation.

Each recorded call is paired with the call made again for it (the shim recorded those), not
lined up by search: which call stands for which is known. Paired, they are compared as diff
compares two runs (decoder/compare/), so a C_SignInit that now fails reads as it would in
`p11spy diff RECORDING NEW`. A recorded call not made again is "only in GOOD", with why. The
module's slots stand for the recorded ones (the calls were made on them on purpose), so the
module's side is read with the recorded slot IDs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from p11spy.decoder.compare.align import ONLY_GOOD, Side, Step, paired
from p11spy.decoder.compare.diff import Diff, Run, run_of
from p11spy.decoder.events import Call
from p11spy.decoder.formats.registry import FORMATS, open_trace
from p11spy.decoder.replay.against import Outcome, Played
from p11spy.errors import UserError
from p11spy.facts.pkcs11.functions import BY_NAME


def _calls(trace: Path, keep: Callable[[Call], bool]) -> tuple[str, list[Call]]:
    """The trace's format and the calls in it that keep takes, in order."""
    name, f = open_trace(trace, None)
    with f:
        return name, [e for e in FORMATS[name].reader.read(f) if isinstance(e, Call) and keep(e)]


def recorded_run(trace: Path, outcomes: list[Outcome]) -> Run:
    """The recorded calls that were re-issued (or meant to be), in their order."""
    wanted = {o.recorded.seq for o in outcomes}
    name, found = _calls(trace, lambda e: e.seq in wanted)
    calls = {e.seq: e for e in found}
    missing = wanted - calls.keys()
    if missing:
        raise UserError(f"{trace}: call #{min(missing)} of the replay script is not in the trace")
    return run_of(str(trace), name, [calls[o.recorded.seq] for o in outcomes])


def _recorded_slots(side: Side, back: dict[int, int]) -> None:
    """The module's slot IDs in side's call turned back into the recorded ones they stood for."""
    fn = BY_NAME.get(side.call.function)
    if fn is None or not back:
        return

    def old(v: Any) -> Any:
        if isinstance(v, list):
            return [old(x) for x in v]
        return back.get(v, v) if isinstance(v, int) else v

    slots = {p.name for p in fn.params if p.kind == "slot"}
    ins = {k: old(v) if k in slots else v for k, v in side.call.inputs.items()}
    outs = {k: old(v) if k in slots else v for k, v in side.call.outputs.items()}
    side.call = replace(side.call, inputs=ins, outputs=outs)


def _note(o: Outcome, index_of: dict[int, Side]) -> str:
    if o.follows is None:
        return o.note
    init = index_of[o.follows]
    return f"not made: follows from call {init.index} {init.call.function}, which now fails"


def compare(trace: Path, played: Played, made: Path, label: str | None = None) -> Diff:
    """The recording (GOOD) against the module's answers (BAD, read from made: the trace the
    shim wrote of the calls this process made again; a kept trace may hold earlier runs too).
    label: what to call that side when made is not kept (then where a call is in it means
    nothing either)."""
    outcomes = played.outcomes
    good = recorded_run(trace, outcomes)
    name, mine = _calls(made, lambda e: e.pid == os.getpid())
    bad = run_of(str(made), name, mine)
    back = {new: old for (kind, old), new in played.handles.items() if kind == "slot"}
    for s in bad.sides:
        _recorded_slots(s, back)
    if label is not None:
        bad.path, bad.format = label, "replayed"
        for s in bad.sides:
            s.source = None
    index_of = {s.seq: s for s in good.sides}
    again = iter(bad.sides)
    steps: list[Step] = []
    for g, o in zip(good.sides, outcomes, strict=True):
        b = next(again, None) if o.rv is not None else None
        if b is None:
            note = _note(o, index_of) if o.rv is None else "made, but the shim recorded no call"
            steps.append(Step(ONLY_GOOD, good=g, note=note))
        else:
            steps.append(paired(g, b))
    return Diff(good, bad, steps)
