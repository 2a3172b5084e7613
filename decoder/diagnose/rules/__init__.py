"""The rules of `p11spy diagnose`, one class each, in one table.

Each rule watches the events (with the Tracker's facts as they were just before the event) and
reports its findings when the trace ends; the words come from decoder/knowledge/findings.py. A
rule keeps only counters and the evidence it will cite. One module per subject; common holds
what several share. Every module lists its rules in RULES.

The order of the table is the order of findings of equal rank: keep it.
"""

from __future__ import annotations

from p11spy.decoder.diagnose.base import Rule
from p11spy.decoder.diagnose.rules import (
    cards,
    keys,
    lifecycle,
    logins,
    outcome,
    pins,
    timing,
    tokens,
    trace,
    usage,
)

RULES: dict[str, type[Rule]] = {
    r.name: r for module in (pins, logins, lifecycle, cards, tokens, keys, outcome, usage, timing,
                                   trace)
    for r in module.RULES
}
