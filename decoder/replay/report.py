"""`p11spy replay --report`: how closely each call of replayed runs matched the recording.

Calls are numbered as `p11spy decode` numbers them: the replay's, in the replay's trace; the
recorded ones ("recorded #N"), in the recorded trace.

The replay module writes one JSON line per call into `<its trace>.match` (spy/replay_runtime.c):
exact, tolerated (with what differed: data to sign, a mechanism's parameter), answered (an
entry point, or a room too small for the recorded output) or diverged (with why)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from p11spy.errors import UserError

MATCH_SUFFIX = ".match"


def match_files(path: Path) -> list[Path]:
    """The .match files of a replay folder, or the one of a replay trace."""
    if path.is_dir():
        found = sorted(path.glob(f"*{MATCH_SUFFIX}"))
        if not found:
            raise UserError(f"{path}: no replayed run here yet (no {MATCH_SUFFIX} file)")
        return found
    candidate = path if path.name.endswith(MATCH_SUFFIX) else Path(f"{path}{MATCH_SUFFIX}")
    if not candidate.is_file():
        raise UserError(f"{path}: not a replay trace (no {candidate.name} beside it)")
    return [candidate]


def read(path: Path) -> list[dict]:
    """The lines of a .match file; a damaged line is skipped (the module may have been cut)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def _numbers(trace: Path) -> dict[int, int]:
    """The replay trace's call numbers -> the numbers `p11spy decode` shows for its calls."""
    from p11spy.decoder.events import Call
    from p11spy.decoder.formats.p11spy import reader

    if not trace.is_file():
        return {}
    with trace.open("rb") as f:
        return {e.call_number: e.seq for e in reader.read(f)
                if isinstance(e, Call) and e.call_number is not None}


def line_for(e: dict, numbers: dict[int, int]) -> str:
    notes = ", ".join(e.get("notes") or [])
    recorded = e.get("recorded")
    call = e.get("call")
    shown = f"#{numbers[call]}" if call in numbers else f"call {call}"
    text = f"{shown} {e.get('function')}: {e.get('match')}"
    if recorded is not None:
        text += f" (recorded #{recorded})"
    if notes:
        text += f": {notes}"
    if e.get("why"):
        text += f": {e['why']}"
    return text


def print_report(path: Path) -> int:
    """Prints each run's calls; 1 when any call diverged."""
    diverged = False
    for f in match_files(path):
        entries = read(f)
        numbers = _numbers(f.with_name(f.name[:-len(MATCH_SUFFIX)]))
        counts: dict[str, int] = {}
        for e in entries:
            counts[str(e.get("match"))] = counts.get(str(e.get("match")), 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        sys.stdout.write(f"== {f.name[:-len(MATCH_SUFFIX)]}: {summary}\n")
        for e in entries:
            sys.stdout.write(f"  {line_for(e, numbers)}\n")
        diverged |= counts.get("diverged", 0) > 0
    return 1 if diverged else 0
