"""The diagnosis engine: one pass over the events, every rule watching, findings ranked.

Ranking: the first finding of severity warning or above should be the root cause, so that a
user who reads one finding reads the right one. The rules, in the order they apply:

1. The most specific cause takes in what it explains (EXPLAINS): a PIN in the wrong encoding
   or of an impossible length explains CKR_PIN_INCORRECT, so when the PIN-encoding (or
   PIN-length) finding covers every failed login of the wrong-PIN finding, it takes that
   finding's evidence, facts and severity in, and the generic "Wrong PIN" is not shown apart.
   Likewise a card no driver takes explains an empty slot list ("No token").
2. The failure that stopped the program is the prime suspect: the last failed call of a
   process after which it did no more work (rules/outcome.py; in a trace of PC/SC calls
   alone, the last failed PC/SC call). The finding that cites it is the prime suspect; when
   none does, client-stopped names it. A finding about failures the program went on working
   after (a probe for a mechanism, a key tried) is demoted to information (HANDLED); length
   queries, optional attributes and optional functions never count.
3. Errors before warnings before information; among equals the prime suspect first, then the
   trace order of their first evidence, then the order of the rule table
   (diagnose/rules/__init__.py).
4. A cause comes right before its consequence (CAUSES): a finding that may cause another
   (a failed login, a card reset: CKR_USER_NOT_LOGGED_IN; no PC/SC service: no token) and
   shares evidence with it is moved before it, and raised to its severity.
5. An incomplete trace (cut short, or records the shim could not write) is not read for
   what it does not show: the rules that conclude from its end (never-finalized,
   call-never-returned, client-stopped) stay silent, and trace-incomplete says why.
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
    "pin-verify-failed": ("pin-incorrect",),
    "card-not-recognised": ("no-token",),
}
# rules whose findings are demoted to information when the program went on working after
# every failure they are about (it checked, and handled the answer)
HANDLED = frozenset({"mechanism-not-supported", "key-usage"})
STOPPED = "client-stopped"
# consequence rule -> the rules whose findings may cause it (when the two share evidence)
CAUSES: dict[str, tuple[str, ...]] = {
    "not-logged-in": ("pin-encoding", "pin-length", "pin-incorrect", "pin-verify-failed",
                      "pin-locked", "card-removed"),
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
    return rank(handled(suspect(fold(found)), t), names)


def fold(found: list[Finding]) -> list[Finding]:
    """Rule 1: each finding that a more specific one explains, taken into that one."""
    out = list(found)
    for s in found:
        if s.severity == "info":
            continue
        for g in [g for g in out if g.rule in EXPLAINS.get(s.rule, ())
                  and (g.pid == s.pid or s.pid is None)]:
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


def suspect(found: list[Finding]) -> list[Finding]:
    """Rule 2: the finding that cites the call a program stopped on is marked as the prime
    suspect; client-stopped stays only for a call no other finding explains."""
    out = []
    for f in found:
        if f.rule == STOPPED:
            citing = [g for g in found if g.rule != STOPPED and g.severity != "info"
                      and set(f.subjects) & set(g.seqs)]
            for g in citing:
                g.data["stopped_at"] = f.subjects[0]
            if citing:
                continue
            f.data["stopped_at"] = f.subjects[0]
        out.append(f)
    return out


def handled(found: list[Finding], t: Tracker) -> list[Finding]:
    """Rule 2, its other half: failures the program went on working after are information."""
    for f in found:
        work = t.proc(f.pid).last_work
        if f.rule in HANDLED and f.severity != "info" and "stopped_at" not in f.data \
                and f.subjects and work is not None and work > max(f.subjects):
            f.severity = "info"
            f.data["handled"] = True
            f.explanation += (f" The program went on working after it (#{work} returned "
                              "CKR_OK), so it handled this answer: a check or a probe, not "
                              "what made it fail.")
    return found


def rank(found: list[Finding], names: list[str]) -> list[Finding]:
    """Rules 3 and 4 of the module's docstring."""
    order = {n: i for i, n in enumerate(names)}
    found = sorted(found, key=lambda f: (RANK[f.severity], "stopped_at" not in f.data,
                                         f.seqs[0] if f.seqs and f.severity != "info" else 0,
                                         order.get(f.rule, 99)))
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
