"""The diagnosis engine: one pass over the events, every rule watching, findings ranked.

Ranking: errors before warnings before information; among equals, the one whose first evidence
comes first in the trace, then the order of the rule table (diagnose/rules/__init__.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from p11spy.decoder.diagnose.base import RANK, SEVERITIES, Finding, Tracker
from p11spy.decoder.diagnose.rules import RULES
from p11spy.decoder.events import Event


def diagnose(events: Iterable[Event], rules: Iterable[str] | None = None,
             options: dict[str, Any] | None = None) -> list[Finding]:
    """The findings of one trace, most important first."""
    names = list(rules) if rules is not None else list(RULES)
    active = []
    for n in names:
        r = RULES[n]()
        r.options = options or {}
        active.append(r)
    t = Tracker()
    for e in events:
        for r in active:
            r.observe(e, t)
        t.update(e)
    found: list[Finding] = []
    for r in active:
        found.extend(r.finish(t))
    for f in found:
        t.codes.split(f)
    order = {n: i for i, n in enumerate(names)}
    found.sort(key=lambda f: (RANK[f.severity], f.seqs[0] if f.seqs and f.severity != "info"
                              else 0, order.get(f.rule, 99)))
    return found


def counts(findings: Iterable[Finding]) -> dict[str, int]:
    out = dict.fromkeys(SEVERITIES, 0)
    for f in findings:
        out[f.severity] += 1
    return out
