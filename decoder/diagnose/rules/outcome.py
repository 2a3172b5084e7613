"""The outcome rule: the failed call a program gave up after.

A trace of a failed run usually holds many failed calls, and most of them the program expected
and handled: probes for a mechanism, length queries, optional attributes. The one that matters
is the last failure after which the program did no more work (only clean-up: closing sessions,
C_Finalize). It is the prime suspect; the engine puts the finding that explains it first, and
when no other rule explains it, this rule names it with what its code means.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from p11spy.decoder import codes
from p11spy.decoder.diagnose.base import (
    CLEANUP_CALLS,
    CallFacts,
    Evidence,
    Finding,
    Rule,
    Tracker,
    finding,
)
from p11spy.decoder.diagnose.rules.common import call_ev, plural
from p11spy.decoder.events import Call, Event

# functions a module may leave out, which programs try and do without
OPTIONAL_FUNCTIONS = ("C_GetInterface", "C_GetInterfaceList", "C_GetOperationState",
                      "C_SetOperationState", "C_GetFunctionStatus", "C_CancelFunction",
                      "C_WaitForSlotEvent", "C_SeedRandom")
# Failures that are part of a normal conversation, whatever comes after: (function, rv name),
# "*" for any function. A program asks for a length, an optional attribute, whether a
# mechanism exists, and goes on either way.
EXPECTED = frozenset({
    ("*", "CKR_BUFFER_TOO_SMALL"),
    ("C_GetAttributeValue", "CKR_ATTRIBUTE_TYPE_INVALID"),
    ("C_GetAttributeValue", "CKR_ATTRIBUTE_SENSITIVE"),
    ("C_GetMechanismInfo", "CKR_MECHANISM_INVALID"),
    ("C_SeedRandom", "CKR_RANDOM_SEED_NOT_SUPPORTED"),
    ("C_Login", "CKR_USER_ALREADY_LOGGED_IN"),
    *((fn, "CKR_FUNCTION_NOT_SUPPORTED") for fn in OPTIONAL_FUNCTIONS),
})


def expected(c: Call) -> bool:
    name = c.rv_name or ""
    return c.length_query or ("*", name) in EXPECTED or (c.function, name) in EXPECTED


class ClientStopped(Rule):
    """Per process, the last failure of a call that was not clean-up, when no work followed."""

    name = "client-stopped"

    def __init__(self) -> None:
        self.last: dict[Any, tuple[CallFacts, Evidence]] = {}  # pid -> its last failure
        self.earlier: dict[Any, int] = {}  # pid -> failures before that one

    def observe(self, e: Event, t: Tracker) -> None:
        if not isinstance(e, Call) or e.rv in (0, None) or e.function in CLEANUP_CALLS \
                or expected(e):
            return
        if e.pid in self.last:
            self.earlier[e.pid] = self.earlier.get(e.pid, 0) + 1
        self.last[e.pid] = (CallFacts(e.seq, e.function, e.rv, e.rv_name, e.pid), call_ev(e))

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for pid, (c, ev) in self.last.items():
            work = t.proc(pid).last_work
            if work is not None and work > c.seq:
                continue  # the program went on: it handled this one
            rv = c.rv_name or f"{c.rv:#x}"
            found = codes.lookup(rv)
            code = found[0].code if found else None
            meaning = f" ({code.meaning.rstrip('.')})" if code else ""
            causes = (f" Usual causes: {'; '.join(code.causes)}." if code and code.causes
                      else "")
            checks = "; ".join(code.checks) if code and code.checks else "the call's arguments"
            n = self.earlier.get(pid, 0)
            earlier = (f" The {plural(n, 'earlier failure')} before it the program went on "
                       "from: it handled them." if n else "")
            yield finding(self.name, [ev], pid=pid, function=c.function, rv=rv,
                          seq=c.seq, meaning=meaning, causes=causes, checks=checks,
                          earlier=earlier, data={"function": c.function, "rv": rv,
                                                 "earlier_failures": n})


RULES = (ClientStopped,)
