"""Library life-cycle rules: C_Initialize twice or after a fork, calls while not initialised,
no C_Finalize at the end, and sessions left open.

These are mistakes in how a program (or two parts of it) drives the module, not in the token;
they are read from the Tracker's per-process facts (init, finalize, fork, sessions).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from p11spy.decoder.diagnose.base import Evidence, Finding, Rule, Tracker, finding
from p11spy.decoder.diagnose.rules.common import ALREADY_INIT, NOT_INIT, call_ev, keep, plural
from p11spy.decoder.events import Call, Event


class AlreadyInitialized(Rule):
    name = "already-initialized"

    def __init__(self) -> None:
        self.ev: dict[Any, list[Evidence]] = {}
        self.first: dict[Any, str] = {}
        self.forked: dict[Any, tuple[int | None, int | None]] = {}  # pid -> (ppid, init seq)

    def observe(self, e: Event, t: Tracker) -> None:
        if isinstance(e, Call) and e.function == "C_Initialize" and e.rv == ALREADY_INIT:
            st = t.proc(e.pid)
            ev = self.ev.setdefault(e.pid, [])
            if not ev and st.init_seq is not None:
                ev.append(Evidence(st.init_seq, "C_Initialize -> CKR_OK (the first one)"))
                self.first[e.pid] = f"C_Initialize #{st.init_seq}"
            elif not ev and st.forked and st.init_seq is None:
                self.forked[e.pid] = (st.ppid, st.parent_init)
                if st.parent_init is not None:
                    ev.append(Evidence(st.parent_init, f"C_Initialize -> CKR_OK (process "
                                                       f"{st.ppid}, before the fork)"))
            keep(ev, call_ev(e))

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for pid, ev in self.ev.items():
            if pid in self.forked:
                ppid, init = self.forked[pid]
                parent = f"process {ppid}" if ppid is not None else "its parent"
                yield finding(
                    self.name, ev, pid=pid, where=f" (in forked child process {pid})",
                    first=f"inherited from {parent}"
                          + (f", C_Initialize #{init}" if init else "") + ", before the fork",
                    detail="The child did right to call C_Initialize; the module does not "
                           "notice the fork and kept the parent's state, so the child works "
                           "on a copy of it that shares the parent's open files, sockets and "
                           "card connections.",
                    more=" After a fork, this module is not safe to use in the child: "
                         "initialise it only after forking, in each process that uses it, "
                         "or exec a new program in the child.",
                    data={"forked": True, "ppid": ppid})
                continue
            yield finding(self.name, ev, pid=pid, where="",
                          first=self.first.get(pid, "before the trace began"),
                          detail="This happens when two parts of one program (two libraries, "
                                 "a plug-in and the host, an engine and the application) each "
                                 "initialise the same module; whichever then calls C_Finalize "
                                 "pulls the module from under the other.", more="")


NO_INIT_NEEDED = ("C_GetFunctionList", "C_GetInterfaceList", "C_GetInterface", "C_Initialize")


class NotInitialized(Rule):
    """Calls the module refused as not initialised, and calls in a forked child that never
    called C_Initialize, which a module that does not notice the fork answers from the copy
    of its parent's state (undefined in PKCS#11: a warning, even when they return CKR_OK)."""

    name = "not-initialized"
    FORKED = "in a forked child without its own C_Initialize"

    def __init__(self) -> None:
        self.groups: dict[tuple[Any, str], dict[str, Any]] = {}

    def observe(self, e: Event, t: Tracker) -> None:
        if not isinstance(e, Call):
            return
        st = t.proc(e.pid)
        if e.rv != NOT_INIT:
            if st.forked and not st.initialized and e.function not in NO_INIT_NEEDED:
                self._forked(e, st)
            return
        extra = []
        if st.finalize_seq is not None and not st.initialized:
            why = "after C_Finalize"
            detail = (f"The library was finalised at #{st.finalize_seq}; calls after that "
                      "need a new C_Initialize.")
            extra.append(Evidence(st.finalize_seq, "C_Finalize"))
        elif st.forked:
            why = "in a child process after fork"
            detail = ("This process is a fork of one that initialised the library; the child "
                      "must call C_Initialize itself before using it.")
        elif st.init_seq is None:
            why = "before C_Initialize"
            detail = "No C_Initialize of this process comes before these calls."
        else:
            why = "the module says so"
            detail = ("The trace shows a C_Initialize, yet the module answers as if there was "
                      "none: another part of the program may have called C_Finalize.")
        g = self.groups.setdefault((e.pid, why), {"ev": extra, "detail": detail, "n": 0})
        keep(g["ev"], call_ev(e))
        g["n"] += 1

    def _forked(self, e: Call, st: Any) -> None:
        g = self.groups.get((e.pid, self.FORKED))
        if g is None:
            g = self.groups[(e.pid, self.FORKED)] = {"ev": [], "n": 0, "severity": "warning",
                                                     "inherited": {}, "ppid": st.ppid,
                                                     "parent_init": st.parent_init}
            if st.parent_init is not None:
                g["ev"].append(Evidence(st.parent_init, f"C_Initialize -> CKR_OK (process "
                                                        f"{st.ppid}, before the fork)"))
        h = e.args.get("hSession")
        note = ""
        if h is not None and h in st.parent_sessions and h not in st.sessions:
            note = "a session of the parent process"
            g["inherited"].setdefault(h, e.seq)
        keep(g["ev"], call_ev(e, note))
        g["n"] += 1

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for (pid, why), g in self.groups.items():
            if why != self.FORKED:
                yield finding(self.name, g["ev"], pid=pid, n=g["n"], why=why,
                              when=f"while the library was not initialised ({why})",
                              detail=g["detail"])
                continue
            parent = f"process {g['ppid']}" if g["ppid"] is not None else "its parent"
            init = f" (C_Initialize #{g['parent_init']})" if g["parent_init"] else ""
            used = ""
            if g["inherited"]:
                handles = ", ".join(str(h) for h in list(g["inherited"])[:4])
                used = (f" It also used session handle(s) {handles} that the parent had "
                        f"opened (first at #{min(g['inherited'].values())}).")
            detail = (f"Process {pid} was forked from {parent}, which had initialised the "
                      f"library{init}, and called it without a C_Initialize of its own; the "
                      "module answered from the copy of the parent's state it inherited, "
                      "without error." + used + " PKCS#11 (v2.40 section 6.7.6) says a child "
                      "must call C_Initialize before anything else and leaves the rest "
                      "undefined: the copy shares the parent's open files, sockets and card "
                      "connections, so the child's calls can disturb the parent's sessions, "
                      "and a module that notices the fork refuses them "
                      "(CKR_CRYPTOKI_NOT_INITIALIZED).")
            yield finding(self.name, g["ev"], severity=g["severity"], pid=pid, n=g["n"],
                          why=why, when=f"in forked child process {pid} without its own "
                                        "C_Initialize", detail=detail,
                          data={"forked": True, "ppid": g["ppid"], "calls": g["n"],
                                "parent_sessions_used": list(g["inherited"])})


class NeverFinalized(Rule):
    """A process that initialised the library and whose trace ends without C_Finalize; not
    said of a trace that is missing records or was cut short (trace-incomplete says so)."""

    name = "never-finalized"

    def finish(self, t: Tracker) -> Iterable[Finding]:
        if t.gaps:  # records lost or the file cut: the C_Finalize may be among what is missing
            return
        for pid, st in t.processes.items():
            if not st.initialized or st.init_seq is None:
                continue
            n = len(st.sessions)
            ev = [Evidence(st.init_seq, "C_Initialize -> CKR_OK")]
            yield finding(self.name, ev, pid=pid,
                          who=f" (process {pid})" if pid is not None else "",
                          first=f"#{st.init_seq}",
                          sessions=f", with {plural(n, 'session')} still open" if n else "",
                          data={"open_sessions": n})


class SessionsLeftOpen(Rule):
    """Sessions opened and not closed, piling up in one process."""

    name = "sessions-left-open"
    THRESHOLD = 32

    def __init__(self) -> None:
        self.peak: dict[Any, tuple[int, int]] = {}  # pid -> (open at once, seq)
        self.first: dict[Any, int] = {}

    def observe(self, e: Event, t: Tracker) -> None:
        if isinstance(e, Call) and e.function == "C_OpenSession" and e.rv in (0, None):
            st = t.proc(e.pid)
            self.first.setdefault(e.pid, e.seq)
            n = len(st.sessions) + 1
            if n > self.peak.get(e.pid, (0, 0))[0]:
                self.peak[e.pid] = (n, e.seq)

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for pid, (n, seq) in self.peak.items():
            if n < self.THRESHOLD:
                continue
            st = t.proc(pid)
            ev = [Evidence(self.first[pid], "C_OpenSession (the first)"),
                  Evidence(seq, f"C_OpenSession ({n} open at once)")]
            yield finding(self.name, ev, pid=pid, n=n, opened=st.opened, closed=st.closed,
                          peak_at=f"#{seq}", data={"peak": n, "opened": st.opened,
                                                   "closed": st.closed})


RULES = (AlreadyInitialized, NotInitialized, NeverFinalized, SessionsLeftOpen,)
