"""The diagnosis engine: one pass over the events, every rule watching, findings ranked.

Ranking: the first finding of severity warning or above should be the root cause, so that a
user who reads one finding reads the right one. The rules, in the order they apply:

1. The most specific cause takes in what it explains (EXPLAINS): a PIN in the wrong encoding
   or of an impossible length explains CKR_PIN_INCORRECT, so when the PIN-encoding (or
   PIN-length) finding covers every failed login of the wrong-PIN finding, it takes that
   finding's evidence, facts and severity in, and the generic "Wrong PIN" is not shown apart.
2. Errors before warnings before information.
3. Among equals, the trace order of their first evidence, then the order of the rule table
   (diagnose/rules/__init__.py).
4. A cause comes right before its consequence (CAUSES): a finding that may cause another
   (a failed login, a card reset: CKR_USER_NOT_LOGGED_IN; no PC/SC service: no token) and
   shares evidence with it is moved before it, and raised to its severity.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from p11spy.decoder.diagnose.base import RANK, SEVERITIES, Finding, Tracker
from p11spy.decoder.diagnose.rules import RULES
from p11spy.decoder.events import Event
from p11spy.decoder.knowledge.findings import FINDINGS

# specific rule -> the generic rules whose findings it takes in when it covers their failures
EXPLAINS: dict[str, tuple[str, ...]] = {
    "pin-encoding": ("pin-incorrect",),
    "pin-length": ("pin-incorrect",),
}
# consequence rule -> the rules whose findings may cause it (when the two share evidence)
CAUSES: dict[str, tuple[str, ...]] = {
    "not-logged-in": ("pin-encoding", "pin-length", "pin-incorrect", "pin-locked",
                      "card-removed"),
    "no-token": ("no-pcsc-service", "no-readers", "card-not-recognised"),
}


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
    return rank(fold(found), names)


def fold(found: list[Finding]) -> list[Finding]:
    """Rule 1: each finding that a more specific one explains, taken into that one."""
    out = list(found)
    for s in found:
        if s.severity == "info":
            continue
        for g in [g for g in out if g.rule in EXPLAINS.get(s.rule, ()) and g.pid == s.pid]:
            if g.subjects and set(g.subjects) <= set(s.subjects):
                _take_in(s, g)
                out.remove(g)
    return out


def _take_in(s: Finding, g: Finding) -> None:
    advice = FINDINGS[g.rule]
    s.title += advice.inside_title.format(**g.facts)
    s.explanation += " " + advice.inside.format(**g.facts)
    cited = {e.seq for e in s.evidence}
    s.evidence = sorted([*s.evidence, *(e for e in g.evidence if e.seq not in cited)],
                        key=lambda e: e.seq)
    s.more_evidence += g.more_evidence
    s.codes = tuple(dict.fromkeys((*s.codes, *g.codes)))
    s.related_codes = tuple(c for c in dict.fromkeys((*s.related_codes, *g.related_codes))
                            if c not in s.codes)
    s.data = {**s.data, **g.data}
    s.severity = g.severity  # the logins' outcome: a warning when a later one worked


def rank(found: list[Finding], names: list[str]) -> list[Finding]:
    """Rules 2 to 4 of the module's docstring."""
    order = {n: i for i, n in enumerate(names)}
    found = sorted(found, key=lambda f: (RANK[f.severity], f.seqs[0] if f.seqs and
                                         f.severity != "info" else 0, order.get(f.rule, 99)))
    for effect in [f for f in found if f.rule in CAUSES and f.severity != "info"]:
        for cause in [c for c in found if c.rule in CAUSES[effect.rule]
                      and set(c.seqs) & set(effect.seqs)]:
            if found.index(cause) > found.index(effect):
                found.remove(cause)
                found.insert(found.index(effect), cause)
            if RANK[cause.severity] > RANK[effect.severity]:
                cause.severity = effect.severity
    return found


def counts(findings: Iterable[Finding]) -> dict[str, int]:
    out = dict.fromkeys(SEVERITIES, 0)
    for f in findings:
        out[f.severity] += 1
    return out
