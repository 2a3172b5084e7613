"""How a program uses the library, beyond single calls: setting up a session and a login (or
the whole library) for every operation, and calling from several threads at once after telling
the library it need not lock.

Neither makes a call fail, so no return value shows them; they are read from counts and times:
a session and a login per signature is what makes a program slow on a network HSM, and threads
a module was not told about are what make some modules crash.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from p11spy.decoder.diagnose.base import Evidence, Finding, Rule, Tracker, finding
from p11spy.decoder.diagnose.rules.common import call_ev, ms, plural
from p11spy.decoder.events import Call, Event

# calls that complete one cryptographic operation, and what one is called
OPERATIONS = {
    "C_Sign": "signature", "C_SignFinal": "signature", "C_SignRecover": "signature",
    "C_Verify": "verification", "C_VerifyFinal": "verification",
    "C_Encrypt": "encryption", "C_EncryptFinal": "encryption",
    "C_Decrypt": "decryption", "C_DecryptFinal": "decryption",
    "C_Digest": "digest", "C_DigestFinal": "digest",
    "C_WrapKey": "key wrap", "C_UnwrapKey": "key unwrap", "C_DeriveKey": "key derivation",
}
# the setup a program pays for before an operation, and the calls that undo it
SETUP = ("C_Initialize", "C_OpenSession", "C_Login")
SETUP_TIME = (*SETUP, "C_Logout", "C_CloseSession", "C_Finalize")
# what is set up per operation, most expensive first: (call, words, severity)
PER_OPERATION = (
    ("C_Initialize", "the library (C_Initialize), a session and a login", "warning"),
    ("C_Login", "a session and a login", "warning"),
    ("C_OpenSession", "a session", "info"),
)


class SetupPerOperation(Rule):
    """As many logins (or C_Initialize, or sessions) as operations: the program keeps nothing
    open between operations. From counts, with the share of time where the trace has it."""

    name = "setup-per-operation"
    MIN_OPERATIONS = 8  # below this a program has not shown a pattern yet
    SHARE = 0.5  # setups per operation from which setup counts as per operation
    CITED = 3  # the first setups and operations cited

    def __init__(self) -> None:
        self.ops: Counter[str] = Counter()
        self.setups: Counter[str] = Counter()
        self.us: Counter[str] = Counter()  # setup call -> time spent in it
        self.total_us = 0.0
        self.timed = False
        self.ev: dict[str, list[Evidence]] = {}  # call -> the first ones

    def observe(self, e: Event, t: Tracker) -> None:
        if not isinstance(e, Call):
            return
        if e.duration_us is not None:
            self.timed = True
            self.total_us += e.duration_us
            if e.function in SETUP_TIME:
                self.us[e.function] += e.duration_us
        if e.rv not in (0, None) or e.length_query:
            return
        key = OPERATIONS.get(e.function) or (e.function if e.function in SETUP else None)
        if key is None:
            return
        if e.function in SETUP:
            self.setups[e.function] += 1
        else:
            self.ops[key] += 1
        cited = self.ev.setdefault(e.function if e.function in SETUP else "op", [])
        if len(cited) < self.CITED:
            cited.append(call_ev(e))

    def finish(self, t: Tracker) -> Iterable[Finding]:
        n = sum(self.ops.values())
        if n < self.MIN_OPERATIONS:
            return
        per = next((p for p in PER_OPERATION if self.setups[p[0]] >= self.SHARE * n), None)
        if per is None:
            return
        call, words, severity = per
        noun = self.ops.most_common(1)[0][0] if len(self.ops) == 1 else "operation"
        done = [f"{c} {plural(self.setups[c], 'time')}" for c in SETUP if self.setups[c]]
        counts = ", ".join(done[:-1]) + (" and " if len(done) > 1 else "") + done[-1]
        share = ""
        setup_us = sum(self.us.values())
        if self.timed and self.total_us:
            parts = ", ".join(f"{c} {ms(self.us[c])}" for c in SETUP_TIME if self.us[c])
            share = (f" Setting up and tearing down took {ms(setup_us)} of the "
                     f"{ms(self.total_us)} the module spent ({100 * setup_us / self.total_us:.0f}"
                     f"%): {parts}.")
        ev = [*self.ev.get(call, []), *self.ev.get("op", [])]
        yield finding(self.name, ev, severity=severity, what=words, n=n,
                      ops=plural(n, noun), counts=counts, share=share,
                      data={"operations": n, "setups": dict(self.setups),
                            "setup_us": setup_us if self.timed else None,
                            "total_us": self.total_us if self.timed else None})


def _locks(args: Any) -> bool | None:
    """Whether C_Initialize's arguments let the module lock: None when the trace does not say."""
    if args is None:
        return False  # NULL: the application will not call from several threads
    if not isinstance(args, dict):
        return None
    mutexes = [args.get(k) for k in ("CreateMutex", "DestroyMutex", "LockMutex", "UnlockMutex")]
    return "CKF_OS_LOCKING_OK" in str(args.get("flags", "")) or \
        any(m not in (None, 0, "0x0", "NULL", "(nil)") for m in mutexes)


class ThreadsWithoutLocking(Rule):
    """C_Initialize without CKF_OS_LOCKING_OK or mutex callbacks (NULL arguments: the
    application says it will not call from several threads at once), then calls of two or more
    threads of that process that overlap in time. Needs the calls' times and durations."""

    name = "threads-without-locking"

    def __init__(self) -> None:
        self.init: dict[Any, tuple[int, str]] = {}  # pid -> C_Initialize seq, how it was called
        self.running: dict[Any, dict[Any, tuple[float, float, Call]]] = {}  # pid -> tid -> call
        self.pairs: dict[Any, list[tuple[Call, Call]]] = {}
        self.threads: dict[Any, set[Any]] = {}
        self.overlaps: Counter[Any] = Counter()
        self.found_init: dict[Any, tuple[int, str]] = {}  # pid -> the C_Initialize it was under

    def observe(self, e: Event, t: Tracker) -> None:
        if not isinstance(e, Call):
            return
        if e.function == "C_Initialize" and e.rv == 0 and "pInitArgs" in e.args:
            locks = _locks(e.args["pInitArgs"])
            if locks is False:
                how = "NULL" if e.args["pInitArgs"] is None else "no CKF_OS_LOCKING_OK, no mutexes"
                self.init[e.pid] = (e.seq, how)
            else:
                self.init.pop(e.pid, None)
            return
        if e.pid not in self.init or e.time is None or e.duration_us is None or e.tid is None:
            return
        start, end = e.time, e.time + e.duration_us / 1e6
        running = self.running.setdefault(e.pid, {})
        for tid, (s, f, other) in running.items():
            if tid != e.tid and s < end and start < f:
                self.overlaps[e.pid] += 1
                self.threads.setdefault(e.pid, set()).update((tid, e.tid))
                pairs = self.pairs.setdefault(e.pid, [])
                self.found_init.setdefault(e.pid, self.init[e.pid])
                if len(pairs) < 2:
                    pairs.append((other, e))
        running[e.tid] = (start, end, e)

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for pid, pairs in self.pairs.items():
            seq, how = self.found_init[pid]
            ev = [Evidence(seq, f"C_Initialize -> CKR_OK (pInitArgs: {how})")]
            for a, b in pairs:
                ev += [Evidence(a.seq, f"{a.function} in thread {a.tid}, "
                                       f"{ms(a.duration_us or 0)}"),
                       Evidence(b.seq, f"{b.function} in thread {b.tid}, at the same time")]
            threads = len(self.threads[pid])
            yield finding(self.name, {x.seq: x for x in ev}.values(), pid=pid, how=how,
                          init=seq, threads=threads, overlaps=self.overlaps[pid],
                          data={"init_args": how, "threads": threads,
                                "overlaps": self.overlaps[pid]})


RULES = (SetupPerOperation, ThreadsWithoutLocking,)
