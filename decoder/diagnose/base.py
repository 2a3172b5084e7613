"""The vocabulary of diagnosis, which the engine and every rule share: findings and their
evidence, the Tracker of facts and the Rule base class.

Why diagnose exists: the tracers users have print what happened; none says why it failed, and
the codes mislead (a "key file" error that is a wrong token label, a right PIN in EBCDIC). The
engine streams the events once, keeps the light facts every rule needs (sessions and their
slots, logins, token info, mechanism lists, what is known of each key) in a `Tracker`, and lets
each rule of the diagnose/rules/ package watch the events and report `Finding`s at the end.
The words of every finding come from decoder/knowledge/findings.py, next to the code tables
`p11spy explain` uses.

Memory: per process the open sessions, per slot the token facts, per object the few usage
attributes seen, and a short window of recent calls (APDUs and PC/SC calls follow their call);
rules keep counters and the seqs they cite. Nothing grows with the number of events otherwise.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from p11spy.decoder import codes
from p11spy.decoder.events import Apdu, Call, Event, LogLine, PcscCall, Process, TraceWarning
from p11spy.decoder.knowledge.findings import FINDINGS

ALREADY_INIT = 0x191  # CKR_CRYPTOKI_ALREADY_INITIALIZED
SEVERITIES = ("error", "warning", "info")
RANK = {s: i for i, s in enumerate(SEVERITIES)}
# calls a program makes to tidy up or look around after a failure: not work, so a failure
# followed only by these is where the program gave up
CLEANUP_CALLS = frozenset({
    "C_Finalize", "C_CloseSession", "C_CloseAllSessions", "C_Logout", "C_FindObjectsFinal",
    "C_GetSessionInfo", "C_GetInfo", "C_GetSlotInfo", "C_GetTokenInfo", "C_GetFunctionList",
})
RECENT_CALLS = 512  # calls kept for looking up the parent of an APDU / PC/SC call
MAX_EVIDENCE = 40  # evidence lines kept per finding (the first ones; a count says the rest)


@dataclass
class Evidence:
    seq: int
    what: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "what": self.what}


@dataclass
class Finding:
    """One diagnosis: what went wrong, why, the events that show it, and what to do."""

    rule: str
    severity: str
    title: str
    explanation: str
    action: str
    evidence: list[Evidence] = field(default_factory=list)
    codes: tuple[str, ...] = ()  # the codes of the situation that this trace shows
    pid: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    more_evidence: int = 0  # evidence lines left off
    related_codes: tuple[str, ...] = ()  # the situation's other codes, not in this trace
    # the failures the finding is about (seqs of failed calls or APDUs; default: its evidence),
    # and the facts its words were filled with: the engine's ranking reads them
    subjects: tuple[int, ...] = field(default=(), repr=False)
    facts: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def seqs(self) -> list[int]:
        return [e.seq for e in self.evidence]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "finding", "rule": self.rule, "severity": self.severity,
            "title": self.title, "explanation": self.explanation, "action": self.action,
            "evidence": [e.to_json() for e in self.evidence], "seqs": self.seqs,
            "more_evidence": self.more_evidence, "codes": list(self.codes),
            "related_codes": list(self.related_codes),
            "code_meanings": {c: m for c in (*self.codes, *self.related_codes)
                              if (m := code_meaning(c))},
            "pid": self.pid, "data": self.data,
        }


def finding(rule: str, evidence: Iterable[Evidence] = (), severity: str | None = None,
            pid: int | None = None, data: dict[str, Any] | None = None, in_order: bool = True,
            subjects: Iterable[int] | None = None, **facts: Any) -> Finding:
    """A finding with the knowledge base's words for the rule, filled with the trace's facts.
    Evidence is put in trace order unless in_order is False (a ranking). subjects: the seqs of
    the failures it is about, when not all of its evidence is."""
    advice = FINDINGS[rule]
    ev = sorted(evidence, key=lambda e: e.seq) if in_order else list(evidence)
    more = max(0, len(ev) - MAX_EVIDENCE)
    return Finding(rule, severity or advice.severity, advice.title.format(**facts),
                   advice.explanation.format(**facts), advice.action.format(**facts),
                   ev[:MAX_EVIDENCE], advice.codes, pid, data or {}, more,
                   subjects=tuple(subjects) if subjects is not None else
                   tuple(e.seq for e in ev), facts=facts)


def code_meaning(name: str) -> str | None:
    """The one-line meaning `p11spy explain` gives for a code named by a finding."""
    found = codes.lookup(name)
    return found[0].code.meaning if found else None


# Code names and numbers as OpenSC's debug log writes them ("returning with: -1210",
# "SCardEstablishContext failed: 0x8010001d", "C_Login() = CKR_PIN_INCORRECT"): OpenSC's
# errors and PC/SC's only, so that handles and addresses in the log are not kept
_LOG_NAMES = re.compile(r"\b(?:CKR|SCARD_[EWFS]|SC_ERROR)_[A-Z0-9_]+|\b(?:AMQ|CTGSK)\d{4}[EWI]\b")
_LOG_NUMBERS = re.compile(r"(?<![\w-])(-1\d{3}|0x8010[0-9a-fA-F]{4})\b")


class CodesSeen:
    """The codes a trace showed: return values of calls and PC/SC calls, status words of APDUs,
    names and numbers in log lines. A finding lists the codes of its situation in two groups,
    those the trace showed and the related ones (what a card, OpenSC, IBM MQ or GSKit would
    report instead), so that it never presents a code the trace never had. Bounded by the
    number of distinct codes."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.sws: set[str] = set()
        self.numbers: set[int] = set()

    def update(self, e: Event) -> None:
        if isinstance(e, (Call, PcscCall)) and e.rv_name:
            self.names.add(e.rv_name)
        elif isinstance(e, Apdu):
            if e.sw is not None:
                self.sws.add(e.sw)
            if e.error:
                self.names.add(e.error)
        elif isinstance(e, LogLine):
            self.names.update(_LOG_NAMES.findall(e.text))
            self.numbers.update(int(n, 0) for n in _LOG_NUMBERS.findall(e.text))

    def shows(self, name: str) -> bool:
        if name in self.names:
            return True
        if re.fullmatch(r"[0-9A-F]{2}[0-9A-Fx]{2}", name):  # a status word or family (63Cx)
            return any(re.fullmatch(name.replace("x", "[0-9A-F]"), sw) for sw in self.sws)
        found = codes.lookup(name)
        value = found[0].code.value if found else None
        if value is None or not self.numbers:
            return False
        return value in self.numbers or (value & 0xFFFFFFFF) in self.numbers

    def split(self, f: Finding) -> None:
        """The finding's codes, cut into those this trace showed and the related rest."""
        every = (*f.codes, *f.related_codes)
        f.codes = tuple(c for c in every if self.shows(c))
        f.related_codes = tuple(c for c in every if c not in f.codes)


# --- what the trace established so far --------------------------------------------------------

@dataclass
class CallFacts:
    """The light facts of a call kept for later lookups."""

    seq: int
    function: str
    rv: int | None
    rv_name: str | None
    pid: int | None
    module: str | None = None  # the module that answered, where the trace says

    def text(self) -> str:
        return f"{self.function} -> {self.rv_name or 'no return value recorded'}"


@dataclass
class Login:
    seq: int
    ok: bool
    user_type: str | None = None


@dataclass
class ProcessState:
    """What one process (pid; None when the trace has no pids) did so far."""

    pid: int | None
    init_seq: int | None = None  # last successful C_Initialize
    initialized: bool = False
    finalize_seq: int | None = None
    forked: bool = False  # forked from a traced process, and no C_Initialize of its own yet
    ppid: int | None = None  # the process it was forked from
    parent_init: int | None = None  # that process's C_Initialize the fork inherited
    parent_sessions: dict[Any, Any] = field(default_factory=dict)  # handle -> slot, at fork
    sessions: dict[Any, Any] = field(default_factory=dict)  # handle -> slot
    opened: int = 0
    closed: int = 0
    logins: dict[Any, Login] = field(default_factory=dict)  # slot -> last login attempt
    logged_in: dict[Any, int] = field(default_factory=dict)  # slot -> seq of the login
    logout: dict[Any, tuple[int, str]] = field(default_factory=dict)  # slot -> (seq, how)
    token_info: dict[Any, dict[str, Any]] = field(default_factory=dict)  # slot -> info + seq
    mechanisms: dict[Any, tuple[int, frozenset[str]]] = field(default_factory=dict)
    objects: dict[Any, dict[str, tuple[Any, int]]] = field(default_factory=dict)
    calls: int = 0
    last_work: int | None = None  # seq of the last successful call that was not clean-up


def out_value(v: Any) -> Any:
    """The output half of an in/out argument ({"in": .., "out": ..}), or the value itself."""
    if isinstance(v, dict) and ("out" in v or "in" in v) and not v.get("masked"):
        return v.get("out")
    return v


def in_value(v: Any) -> Any:
    if isinstance(v, dict) and ("out" in v or "in" in v) and not v.get("masked"):
        return v.get("in")
    return v


def template_values(t: Any) -> dict[str, Any]:
    """{CKA_*: value} of a template as a reader rendered it (values only where present)."""
    if isinstance(t, dict):
        t = t.get("out") or t.get("in")
    out: dict[str, Any] = {}
    if isinstance(t, list):
        for a in t:
            if isinstance(a, dict) and "type" in a and "value" in a:
                out[str(a["type"])] = a["value"]
    return out


class Tracker:
    """The facts the rules share, updated after every rule has seen the event."""

    USAGE_ATTRIBUTES = frozenset({
        "CKA_SIGN", "CKA_VERIFY", "CKA_ENCRYPT", "CKA_DECRYPT", "CKA_WRAP", "CKA_UNWRAP",
        "CKA_DERIVE", "CKA_SIGN_RECOVER", "CKA_VERIFY_RECOVER", "CKA_LABEL", "CKA_ID",
        "CKA_CLASS", "CKA_KEY_TYPE", "CKA_PRIVATE",
    })

    def __init__(self) -> None:
        self.processes: dict[int | None, ProcessState] = {}
        self.recent: OrderedDict[int, CallFacts] = OrderedDict()
        self.process_headers = 0
        self.formats: set[str] = set()
        self.codes = CodesSeen()
        # kind (TRUNCATED, DROPPED) -> the reader's first warning of that kind: the trace is
        # incomplete, so what it does not show (a C_Finalize, a return) may have happened
        self.gaps: dict[str, TraceWarning] = {}

    def proc(self, pid: int | None) -> ProcessState:
        st = self.processes.get(pid)
        if st is None:
            st = self.processes[pid] = ProcessState(pid)
        return st

    def parent(self, e: Event) -> CallFacts | None:
        p = getattr(e, "parent", None)
        return None if p is None else self.recent.get(p)

    def slot_of(self, c: Call) -> Any:
        """The slot a call works on: its slotID, or its session's slot."""
        if "slotID" in c.args:
            return c.args["slotID"]
        h = c.args.get("hSession")
        if h is None:
            return None
        return self.proc(c.pid).sessions.get(h)

    def token_label(self, pid: int | None, slot: Any) -> str | None:
        info = self.proc(pid).token_info.get(slot)
        return None if info is None else info.get("label")

    def update(self, e: Event) -> None:
        self.codes.update(e)
        if isinstance(e, TraceWarning) and e.kind:
            self.gaps.setdefault(e.kind, e)
        if isinstance(e, Process):
            self.process_headers += 1
            st = self.proc(e.pid)
            if e.info.get("forked"):
                st.forked = True
                ppid = e.info.get("ppid")
                parent = self.processes.get(ppid) if isinstance(ppid, int) else None
                st.ppid = ppid if isinstance(ppid, int) else None
                if parent is not None and parent.initialized:
                    st.parent_init = parent.init_seq
                    st.parent_sessions = dict(parent.sessions)
            return
        if not isinstance(e, Call):
            return
        self.recent[e.seq] = CallFacts(e.seq, e.function, e.rv, e.rv_name, e.pid, e.module)
        if len(self.recent) > RECENT_CALLS:
            self.recent.popitem(last=False)
        st = self.proc(e.pid)
        st.calls += 1
        ok = e.rv == 0 or e.rv is None
        fn = e.function
        a = e.args
        if e.rv == 0 and fn not in CLEANUP_CALLS:
            st.last_work = e.seq
        if fn == "C_Initialize" and ok:
            st.initialized, st.init_seq, st.forked = True, e.seq, False
        elif fn == "C_Initialize" and e.rv == ALREADY_INIT and st.forked:
            # a child that did call C_Initialize; the module kept the parent's state
            st.initialized, st.forked = True, False
        elif fn == "C_Finalize" and ok:
            st.initialized, st.finalize_seq = False, e.seq
            st.sessions.clear()
            st.logged_in.clear()
        elif fn == "C_OpenSession" and ok:
            h = out_value(a.get("phSession"))
            if h is not None:
                st.sessions[h] = a.get("slotID")
                st.opened += 1
        elif fn == "C_CloseSession" and ok:
            slot = st.sessions.pop(a.get("hSession"), None)
            st.closed += 1
            if slot is not None and slot not in st.sessions.values() and slot in st.logged_in:
                del st.logged_in[slot]
                st.logout[slot] = (e.seq, "its last session was closed")
        elif fn == "C_CloseAllSessions" and ok:
            slot = a.get("slotID")
            for h in [h for h, s in st.sessions.items() if s == slot]:
                del st.sessions[h]
                st.closed += 1
            if st.logged_in.pop(slot, None) is not None:
                st.logout[slot] = (e.seq, "C_CloseAllSessions")
        elif fn == "C_Login":
            slot = self.slot_of(e)
            st.logins[slot] = Login(e.seq, e.rv in (0, None, 0x100), a.get("userType"))
            if e.rv in (0, 0x100):  # CKR_USER_ALREADY_LOGGED_IN: logged in all the same
                st.logged_in[slot] = e.seq
        elif fn == "C_Logout" and ok:
            slot = self.slot_of(e)
            st.logged_in.pop(slot, None)
            st.logout[slot] = (e.seq, "C_Logout")
        elif fn == "C_GetTokenInfo" and e.rv == 0:
            info = a.get("pInfo")
            if isinstance(info, dict):
                st.token_info[a.get("slotID")] = {**info, "seq": e.seq}
        elif fn == "C_GetMechanismList" and e.rv == 0 and not e.length_query:
            mechs = out_value(a.get("pMechanismList"))
            if isinstance(mechs, list):
                st.mechanisms[a.get("slotID")] = (e.seq, frozenset(map(str, mechs)))
        if e.rv == 0:
            self._objects(e, st)

    def _objects(self, e: Call, st: ProcessState) -> None:
        """What is known of each object's usage attributes, with the seq that showed it."""
        a = e.args
        fn = e.function
        if fn == "C_GetAttributeValue":
            self._remember(st, a.get("hObject"), template_values(out_value(a.get("pTemplate"))),
                           e.seq)
        elif fn in ("C_CreateObject", "C_GenerateKey", "C_CopyObject", "C_UnwrapKey",
                    "C_DeriveKey"):
            handle = next((out_value(a[k]) for k in ("phObject", "phKey", "phNewObject")
                           if k in a), None)
            self._remember(st, handle, template_values(a.get("pTemplate")), e.seq)
        elif fn == "C_GenerateKeyPair":
            self._remember(st, out_value(a.get("phPublicKey")),
                           template_values(a.get("pPublicKeyTemplate")), e.seq)
            self._remember(st, out_value(a.get("phPrivateKey")),
                           template_values(a.get("pPrivateKeyTemplate")), e.seq)
        elif fn == "C_SetAttributeValue":
            self._remember(st, a.get("hObject"), template_values(a.get("pTemplate")), e.seq)

    def _remember(self, st: ProcessState, handle: Any, values: dict[str, Any],
                  seq: int) -> None:
        if handle is None or isinstance(handle, (dict, list)):
            return
        kept = {k: (v, seq) for k, v in values.items() if k in self.USAGE_ATTRIBUTES}
        if kept:
            st.objects.setdefault(handle, {}).update(kept)


# --- rules ------------------------------------------------------------------------------------

class Rule:
    """A rule watches every event (with the tracker's facts as they were before it) and says
    what it found when the trace ends. One instance per diagnosis."""

    name = ""
    options: dict[str, Any] = {}  # the command's options (e.g. token_label), set per run

    def observe(self, e: Event, t: Tracker) -> None:  # pragma: no cover - default
        pass

    def finish(self, t: Tracker) -> Iterable[Finding]:  # pragma: no cover - default
        return ()



