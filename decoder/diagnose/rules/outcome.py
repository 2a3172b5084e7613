"""The outcome rules: the failed call a program gave up after, and a call it never came back
from.

A trace of a failed run usually holds many failed calls, and most of them the program expected
and handled: probes for a mechanism, length queries, optional attributes. The one that matters
is the last failure after which the program did no more work (only clean-up: closing sessions,
C_Finalize). It is the prime suspect; the engine puts the finding that explains it first, and
when no other rule explains it, client-stopped names it with what its code means. A trace that
ends inside a call has no failure to show: call-never-returned names that call.
"""

from __future__ import annotations

import re
from collections import Counter
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
from p11spy.decoder.diagnose.rules.common import apdu_ev, call_ev, log_ev, pcsc_ev, plural
from p11spy.decoder.events import Apdu, Call, Event, LogLine, PcscCall, Process, TraceWarning

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


# In a trace of PC/SC calls alone (pcsc-spy), the same at that level: what a program does
# after a failure without it being work, and answers it asks for and handles
PCSC_CLEANUP = frozenset({"SCardDisconnect", "SCardReleaseContext", "SCardEndTransaction",
                          "SCardFreeMemory", "SCardCancel", "SCardIsValidContext"})
PCSC_EXPECTED = frozenset({"SCARD_E_TIMEOUT", "SCARD_E_INSUFFICIENT_BUFFER"})


def expected(c: Call) -> bool:
    name = c.rv_name or ""
    return c.length_query or ("*", name) in EXPECTED or (c.function, name) in EXPECTED


def _pcsc_failure(e: Event) -> tuple[CallFacts, Evidence] | None:
    """A PC/SC call outside any PKCS#11 call that failed, as a call, else None."""
    if isinstance(e, Apdu) and e.parent is None and e.error and e.error not in PCSC_EXPECTED:
        return CallFacts(e.seq, "SCardTransmit", None, e.error, e.pid), apdu_ev(e)
    if isinstance(e, PcscCall) and e.parent is None and e.rv not in (0, None) \
            and e.function not in PCSC_CLEANUP and e.rv_name not in PCSC_EXPECTED:
        return (CallFacts(e.seq, e.function, e.rv, e.rv_name or f"{e.rv:#x}", e.pid),
                pcsc_ev(e))
    return None


def _pcsc_work(e: Event) -> bool:
    return (isinstance(e, Apdu) and e.parent is None and e.response is not None) or \
        (isinstance(e, PcscCall) and e.parent is None and e.rv == 0
         and e.function not in PCSC_CLEANUP)


# OpenSC's debug log, where an error starts: "card.c:403:sc_connect_card: returning with:
# -1210 (Card is invalid or cannot be handled)"; the first such line under a call is the
# innermost, the one the others pass up
_OPENSC_ERROR = re.compile(r"(?:^|\s)(?:[\w.-]+:\d+:)?(?P<where>\w+): returning with: "
                           r"(?P<code>-\d+) \((?P<text>[^)]*)\)")


class ClientStopped(Rule):
    """Per process, the last failure of a call that was not clean-up, when no work followed:
    PKCS#11 calls, or in a process that made none (a PC/SC trace), PC/SC calls."""

    name = "client-stopped"

    def __init__(self) -> None:
        self.last: dict[Any, tuple[CallFacts, Evidence]] = {}  # pid -> its last failure
        self.pcsc: dict[Any, tuple[CallFacts, Evidence]] = {}  # the same for PC/SC calls
        self.earlier: Counter[tuple[bool, Any]] = Counter()  # (PC/SC?, pid) -> failures before
        self.pcsc_work: dict[Any, int] = {}  # pid -> seq of its last PC/SC call that worked
        # OpenSC's first error line: since the process's last call (a log without entry
        # lines), before its last failure, and under that failure
        self.pending: dict[Any, tuple[LogLine, re.Match[str]]] = {}
        self.before: dict[Any, tuple[LogLine, re.Match[str]] | None] = {}
        self.under: dict[Any, tuple[LogLine, re.Match[str]]] = {}

    def _failed(self, pcsc: bool, c: CallFacts, ev: Evidence) -> None:
        store = self.pcsc if pcsc else self.last
        if c.pid in store:
            self.earlier[(pcsc, c.pid)] += 1
        store[c.pid] = (c, ev)

    def _opensc_error(self, c: CallFacts) -> tuple[Evidence, str] | None:
        """The first OpenSC error logged under the call (or, when the log lacks its entry line,
        right before it): where the failure started."""
        found = self.under.get(c.pid) or self.before.get(c.pid)
        if found is None:
            return None
        line, m = found
        return (log_ev(line), f" OpenSC's log shows where it started: {m['where']} returned "
                              f"{m['code']} ({m['text']}), #{line.seq}.")

    def observe(self, e: Event, t: Tracker) -> None:
        if isinstance(e, LogLine):
            m = _OPENSC_ERROR.search(e.text)
            last = self.last.get(e.pid)
            if m and e.parent is None:
                self.pending.setdefault(e.pid, (e, m))
            elif m and last is not None and e.parent == last[0].seq:
                self.under.setdefault(e.pid, (e, m))
            return
        failed = _pcsc_failure(e)
        if failed is not None:
            self._failed(True, *failed)
        elif _pcsc_work(e):
            self.pcsc_work[e.pid] = e.seq
        if not isinstance(e, Call):
            return
        pending = self.pending.pop(e.pid, None)  # errors logged since the last call
        if e.rv in (0, None) or e.function in CLEANUP_CALLS or expected(e):
            return
        self._failed(False, CallFacts(e.seq, e.function, e.rv, e.rv_name, e.pid), call_ev(e))
        self.before[e.pid] = pending
        self.under.pop(e.pid, None)

    def finish(self, t: Tracker) -> Iterable[Finding]:
        stops = {pid: (False, c, ev) for pid, (c, ev) in self.last.items()}
        for pid, (c, ev) in self.pcsc.items():
            if not t.proc(pid).calls and self.pcsc_work.get(pid, -1) < c.seq:
                stops[pid] = (True, c, ev)
        for pid, (pcsc, c, ev) in stops.items():
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
            n = self.earlier[(pcsc, pid)]
            earlier = (f" {plural(n, 'earlier failed call')} did not stop the program."
                       if n else "")
            cited, started = [ev], ""
            opensc = self._opensc_error(c)
            if opensc is not None:
                cited.append(opensc[0])
                started = opensc[1]
            yield finding(self.name, cited, pid=pid, function=c.function, rv=rv,
                          seq=c.seq, meaning=meaning, causes=causes, checks=checks,
                          earlier=earlier, started=started, subjects=[c.seq],
                          data={"function": c.function, "rv": rv, "earlier_failures": n})


# what the readers say of a call the trace ends inside (pcsc-spy: a call without its return
# line; p11spy: PC/SC records whose PKCS#11 call was never written, as it had not returned)
_NEVER_RETURNED = (
    re.compile(r"(?P<function>\w+) \(thread (?P<thread>\w+)\) has no return line: the trace "
               r"ends inside it"),
    re.compile(r"process (?P<pid>\d+): call #(?P<number>\d+) never returned"),
)


# formats that write a call when it is made, so that one the program never came back from
# is there without its return value (in OpenSC's debug log many calls have none anyway)
ENTRY_FIRST = ("pkcs11-spy",)


class NeverReturned(Rule):
    """A call the trace ends inside: the program crashed, was killed or hung in it. Read from
    the calls a reader marks never_returned (p11spy's entry records), the readers' warnings,
    or from a thread whose last call has no return value while all its other calls have one
    (pkcs11-spy writes a call's arguments before it calls the module)."""

    name = "call-never-returned"

    def __init__(self) -> None:
        self.found: list[tuple[Evidence, str]] = []  # the reader's warning, and the call named
        self.follow: Evidence | None = None  # the event right after the first warning
        self.last: dict[tuple[Any, Any], Call] = {}  # (pid, tid) -> its last call
        self.returned: Counter[tuple[Any, Any]] = Counter()  # calls with a return value
        self.entry_first = False  # the trace's format writes a call before it returns

    def _unreturned(self) -> Iterable[tuple[Evidence, str]]:
        if not self.entry_first:
            return
        for (pid, tid), c in self.last.items():
            if c.rv is None and self.returned[(pid, tid)] and len(self.found) < 8:
                where = f" in thread {tid}" if tid is not None else ""
                yield (Evidence(c.seq, f"{c.function}: the trace ends before it returned"),
                       f"{c.function}{where}")

    def observe(self, e: Event, t: Tracker) -> None:
        if isinstance(e, Process) and e.info.get("format") in ENTRY_FIRST:
            self.entry_first = True
        if isinstance(e, Call) and e.never_returned and len(self.found) < 8:
            where = f"thread {e.tid} of process {e.pid}"  # a p11spy call: it has both
            self.found.append((Evidence(e.seq, f"{e.function}: entered in {where}, never "
                                               "returned"), f"{e.function} in {where}"))
            return
        if isinstance(e, Call):
            key = (e.pid, e.tid)
            prev = self.last.get(key)
            if prev is not None and prev.rv is not None:
                self.returned[key] += 1
            self.last[key] = e
            return
        if self.found and self.follow is None and not isinstance(e, TraceWarning):
            self.follow = Evidence(e.seq, "the call's last event in the trace: "
                                          + (apdu_ev(e).what if isinstance(e, Apdu) else
                                             getattr(e, "function", e.type)))
        if not isinstance(e, TraceWarning) or len(self.found) >= 8:
            return
        for pattern in _NEVER_RETURNED:
            m = pattern.search(e.message)
            if m:
                g = m.groupdict()
                what = (f"{g['function']} in thread {g['thread']}" if g.get("function") else
                        f"call #{g['number']} of process {g['pid']}")
                self.found.append((Evidence(e.seq, e.message), what))

    def finish(self, t: Tracker) -> Iterable[Finding]:
        if not self.found:
            self.found = list(self._unreturned())
        if not self.found:
            return
        ev = [x for x, _ in self.found] + ([self.follow] if self.follow else [])
        what = self.found[0][1]
        yield finding(self.name, ev, what=what, n=len(self.found),
                      data={"calls": [w for _, w in self.found]})


RULES = (ClientStopped, NeverReturned,)
