"""The rules of `p11spy diagnose`, one class each, registered in diagnose.RULES by @rule.

Each rule watches the events (with the Tracker's facts as they were just before the event) and
reports its findings when the trace ends; the words come from decoder/knowledge/findings.py.
A rule keeps only counters and the evidence it will cite. Return values are compared by
number, taken from the project's constant table.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable
from typing import Any

from p11spy.spy import logformat as lf
from p11spy.spy.pkcs11 import attributes
from p11spy.spy.pkcs11.constants import FAMILIES

from . import codes
from .apdu_names import ins_name
from .diagnose import Evidence, Finding, Rule, Tracker, _in, _out, finding, rule, template_values
from .events import Apdu, Call, Event, LogLine, PcscCall
from .tlv import aid_info
from .values import PIN_CLASS_NAMES, PIN_EXTRA_NAMES

_CKR = FAMILIES["CKR"].names
PIN_INCORRECT = _CKR["CKR_PIN_INCORRECT"]
PIN_LOCKED = _CKR["CKR_PIN_LOCKED"]
PIN_LEN_RANGE = _CKR["CKR_PIN_LEN_RANGE"]
NOT_LOGGED_IN = _CKR["CKR_USER_NOT_LOGGED_IN"]
ALREADY_INIT = _CKR["CKR_CRYPTOKI_ALREADY_INITIALIZED"]
NOT_INIT = _CKR["CKR_CRYPTOKI_NOT_INITIALIZED"]
TOKEN_NOT_RECOGNIZED = _CKR["CKR_TOKEN_NOT_RECOGNIZED"]
DEVICE_REMOVED = _CKR["CKR_DEVICE_REMOVED"]
TOKEN_NOT_PRESENT = _CKR["CKR_TOKEN_NOT_PRESENT"]
SESSION_HANDLE_INVALID = _CKR["CKR_SESSION_HANDLE_INVALID"]
SESSION_CLOSED = _CKR["CKR_SESSION_CLOSED"]
MECHANISM_INVALID = _CKR["CKR_MECHANISM_INVALID"]
KEY_FUNCTION_NOT_PERMITTED = _CKR["CKR_KEY_FUNCTION_NOT_PERMITTED"]
BUFFER_TOO_SMALL = _CKR["CKR_BUFFER_TOO_SMALL"]
SCARD_E_NO_SERVICE = 0x8010001D
SCARD_E_NO_READERS_AVAILABLE = 0x8010002E
SCARD_GONE = {"SCARD_W_REMOVED_CARD": "removed", "SCARD_E_NO_SMARTCARD": "removed",
              "SCARD_W_RESET_CARD": "reset", "SCARD_E_READER_UNAVAILABLE": "removed"}
PIN_FUNCTIONS = ("C_Login", "C_SetPIN", "C_InitPIN", "C_LoginUser")
PIN_ARGS = ("pPin", "pOldPin", "pNewPin")
PIN_INS = (0x20, 0x24, 0x2C)  # VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER


MAX_KEPT = 1000  # evidence a rule keeps per finding while reading (the first ones; a finding
#                  shows at most diagnose.MAX_EVIDENCE of them)


def keep(items: list, item: object) -> None:
    """Appends while the list is short, so a rule's memory stays bounded on huge traces."""
    if len(items) < MAX_KEPT:
        items.append(item)


def call_ev(c: Call, note: str = "") -> Evidence:
    return Evidence(c.seq, f"{c.function} -> {c.rv_name or 'no return value recorded'}"
                           + (f" ({note})" if note else ""))


def sw_int(a: Apdu) -> int | None:
    return None if a.sw is None else int(a.sw, 16)


def apdu_ev(a: Apdu, note: str = "") -> Evidence:
    name = ins_name(a.command[0], a.command[1]) if len(a.command) >= 2 else "APDU"
    if a.sw is None and a.response is not None:
        text = f"{name} -> empty response, no status word"
    elif a.sw is None:
        text = f"{name} -> no response: {a.error or 'not recorded'}"
    else:
        meaning = codes.explain_sw(int(a.sw, 16))
        text = f"{name} -> SW {a.sw}" + (f": {meaning.meaning}" if meaning else "")
    return Evidence(a.seq, text + (f" ({note})" if note else ""))


def pcsc_ev(p: PcscCall) -> Evidence:
    return Evidence(p.seq, f"{p.function} -> {p.rv_name or hex(p.rv or 0)}")


def log_ev(line: LogLine) -> Evidence:
    return Evidence(line.seq, f"log: {line.text.strip()[:160]}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _ms(us: float) -> str:
    return f"{us / 1000:.1f} ms" if us >= 1000 else f"{us:.0f} us"


# --- PINs -------------------------------------------------------------------------------------

def classify_pin(data: bytes) -> tuple[str, list[str]]:
    """The character class and extras of PIN bytes, in the terms the shim records for a masked
    PIN (spy/logformat.py PinClass, PinExtra). UTF-16 is recognised before trailing NULs are
    stripped, so "1234" as UTF-16LE (31 00 32 00 33 00 34 00) reads as UTF-16 digits."""
    x = 0
    end = len(data)
    if end and data[end - 1] == 0xFF:
        x |= lf.PinExtra.PADDED
        while end and data[end - 1] == 0xFF:
            end -= 1
    body = data[:end]
    if len(body) >= 4 and len(body) % 2 == 0:
        lo_zero = all(b == 0 for b in body[0::2])
        hi_zero = all(b == 0 for b in body[1::2])
        if hi_zero and not lo_zero:
            x |= lf.PinExtra.UTF16
            body = body[0::2]
        elif lo_zero and not hi_zero:
            x |= lf.PinExtra.UTF16
            body = body[1::2]
    while body and body[-1] == 0:
        x |= lf.PinExtra.HAS_NUL
        body = body[:-1]
    if body and body[-1] in (0x0A, 0x0D):
        x |= lf.PinExtra.TRAILING_NEWLINE
        body = body.rstrip(b"\r\n")
    if 0 in body:
        x |= lf.PinExtra.HAS_NUL
    if any(b > 0x7F for b in body):
        x |= lf.PinExtra.NON_ASCII
    if not body:
        cls = lf.PinClass.EMPTY
    elif all(0x30 <= b <= 0x39 for b in body):
        cls = lf.PinClass.ASCII_DIGITS
    elif all(0x20 <= b <= 0x7E for b in body):
        cls = lf.PinClass.ASCII_OTHER
    elif all(0xF0 <= b <= 0xF9 for b in body):
        cls = lf.PinClass.EBCDIC_DIGITS
    else:
        cls = lf.PinClass.OTHER
    return PIN_CLASS_NAMES[cls], [n for bit, n in PIN_EXTRA_NAMES.items() if x & bit]


def pin_facts(value: Any) -> tuple[int | None, str | None, list[str]]:
    """(length, class, extras) of a PIN argument however the reader rendered it: a masked
    record ({"masked", "length", "class", "extras"}) or the bytes as hex (clear traces)."""
    if isinstance(value, dict) and value.get("masked"):
        return value.get("length"), value.get("class"), list(value.get("extras", []))
    if isinstance(value, str):
        try:
            data = bytes.fromhex(value)
        except ValueError:
            return None, None, []
        cls, extras = classify_pin(data)
        return len(data), cls, extras
    return None, None, []


def pin_length(c: Call) -> int | None:
    for name in ("ulPinLen",):
        v = c.args.get(name)
        if isinstance(v, int):
            return v
    return pin_facts(c.args.get("pPin"))[0]


def is_pin_apdu(a: Apdu) -> bool:
    return len(a.command) >= 4 and a.command[1] in PIN_INS and a.command[0] & 0x80 == 0


def apdu_has_data(a: Apdu) -> bool:
    return len(a.command) > 5


@rule
class WrongPin(Rule):
    """CKR_PIN_INCORRECT, and the retry counter (63Cx) as it fell across the attempts."""

    name = "pin-incorrect"

    def __init__(self) -> None:
        self.failed: list[Evidence] = []
        self.counter: list[tuple[int, int, bool]] = []  # (seq, tries left, was an attempt)
        self.evidence: list[Evidence] = []
        self.last_fail = -1
        self.ok_after = False
        self.pid: int | None = None
        self.n_failed = 0
        self.n_attempts = 0
        self.last_left: int | None = None

    def observe(self, e: Event, t: Tracker) -> None:
        if isinstance(e, Call) and e.function in PIN_FUNCTIONS:
            if e.rv == PIN_INCORRECT:
                self.n_failed += 1
                label = t.token_label(e.pid, t.slot_of(e))
                keep(self.failed, call_ev(e, f"token '{label}'" if label else ""))
                self.last_fail = e.seq
                self.ok_after = False
                self.pid = e.pid
            elif e.rv == 0 and e.function == "C_Login" and self.failed:
                self.ok_after = True
                keep(self.evidence, call_ev(e, "a later login worked"))
        elif isinstance(e, Apdu) and is_pin_apdu(e):
            sw = sw_int(e)
            if sw is not None and 0x63C0 <= sw <= 0x63CF:
                attempt = apdu_has_data(e)
                self.n_attempts += attempt
                self.last_left = sw & 0x0F
                keep(self.counter, (e.seq, sw & 0x0F, attempt))
                keep(self.evidence, apdu_ev(e, "a wrong PIN" if attempt else
                                            "asking the tries left, no PIN sent"))

    def finish(self, t: Tracker) -> Iterable[Finding]:
        if not self.n_failed and not self.n_attempts:
            return
        n = max(self.n_failed, self.n_attempts)
        tries = ""
        fall = ""
        if self.counter:
            left = self.last_left
            tries = f"; {left} {'try' if left == 1 else 'tries'} left" if left else \
                "; no tries left"
            shown = [c for i, c in enumerate(self.counter)
                     if c[2] or i == 0 or self.counter[i - 1][1] != c[1]]
            steps = " -> ".join(f"{c[1]} (#{c[0]}{'' if c[2] else ', asked'})"
                                for c in shown[:20]) + (" -> ..." if len(shown) > 20 else "")
            fall = f" The card's counter of tries left went {steps}."
        if self.ok_after:
            fall += " A later login worked, so the right PIN was known."
        yield finding(self.name, self.failed + self.evidence,
                      severity="warning" if self.ok_after else None, pid=self.pid,
                      data={"failed_logins": self.n_failed,
                            "tries_left": [c[1] for c in self.counter],
                            "recovered": self.ok_after},
                      n=n, tries=tries, fall=fall)


@rule
class PinLocked(Rule):
    """CKR_PIN_LOCKED or SW 6983: the PIN is blocked."""

    name = "pin-locked"

    def __init__(self) -> None:
        self.evidence: list[Evidence] = []
        self.label: str | None = None
        self.ran_out_here = False  # the trace shows the counter reaching 0
        self.pid: int | None = None

    def observe(self, e: Event, t: Tracker) -> None:
        if isinstance(e, Call) and e.rv == PIN_LOCKED:
            keep(self.evidence, call_ev(e))
            self.label = self.label or t.token_label(e.pid, t.slot_of(e))
            self.pid = e.pid
        elif isinstance(e, Apdu) and is_pin_apdu(e):
            sw = sw_int(e)
            if sw == 0x6983:
                keep(self.evidence, apdu_ev(e))
            elif sw == 0x63C0 and apdu_has_data(e) and not self.evidence:
                self.ran_out_here = True

    def finish(self, t: Tracker) -> Iterable[Finding]:
        if not self.evidence:
            return
        after = (" The wrong PINs of this trace used up the last tries (see the wrong-PIN "
                 "finding)." if self.ran_out_here else
                 " The trace does not show it being blocked: it already was when the trace "
                 "began.")
        where = f" on token '{self.label}'" if self.label else ""
        yield finding(self.name, self.evidence, pid=self.pid, where=where, after=after)


@rule
class PinLength(Rule):
    """A PIN whose length is outside the token's ulMinPinLen..ulMaxPinLen."""

    name = "pin-length"

    def __init__(self) -> None:
        self.hits: dict[tuple[int, Any, Any], list[Evidence]] = {}
        self.pid: int | None = None

    def observe(self, e: Event, t: Tracker) -> None:
        if not isinstance(e, Call) or e.function != "C_Login" or e.rv in (0, None):
            return
        length = pin_length(e)
        slot = t.slot_of(e)
        info = t.proc(e.pid).token_info.get(slot) or {}
        lo, hi = info.get("ulMinPinLen"), info.get("ulMaxPinLen")
        known = isinstance(lo, int) and isinstance(hi, int)
        outside = known and length is not None and not lo <= length <= hi
        if outside or e.rv == PIN_LEN_RANGE:
            key = (length if length is not None else -1, lo if known else "?",
                   hi if known else "?")
            ev = self.hits.setdefault(key, [])
            if known and not ev:
                ev.append(Evidence(info["seq"], f"C_GetTokenInfo: PIN length {lo}-{hi}"))
            keep(ev, call_ev(e, f"PIN of {length} bytes" if length is not None else ""))
            self.pid = e.pid

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for (length, lo, hi), ev in self.hits.items():
            yield finding(self.name, ev, pid=self.pid, length=length if length >= 0 else "?",
                          min=lo, max=hi, data={"length": length, "min": lo, "max": hi})


_ENCODING_WORDS = {
    "EBCDIC digits": "EBCDIC digits (F0-F9), not ASCII",
    "UTF-16": "UTF-16 text (a 00 byte after each character)",
    "trailing newline": "followed by a newline",
    "NUL byte": "with a NUL byte in it",
    "binary": "binary bytes, not ASCII text",
    "non-ASCII bytes": "with bytes above 7F (not ASCII)",
}


def encoding_problem(cls: str | None, extras: list[str], length: int | None = None
                     ) -> list[str]:
    """What is wrong with a PIN's encoding, in words; [] when it looks like ASCII text."""
    found = []
    if cls in ("EBCDIC digits", "binary"):
        found.append(_ENCODING_WORDS[cls])
    for x in ("UTF-16", "trailing newline", "NUL byte"):
        if x in extras:
            found.append(_ENCODING_WORDS[x])
    if "non-ASCII bytes" in extras and cls not in ("EBCDIC digits", "binary"):
        found.append(_ENCODING_WORDS["non-ASCII bytes"])
    return found


@rule
class PinEncoding(Rule):
    """PIN bytes that look wrongly encoded: EBCDIC digits, UTF-16, a newline or NUL at the end,
    binary. Read from the PIN's bytes where the trace has them, else from the character class
    p11spy records for a masked PIN; VERIFY APDUs in clear count too."""

    name = "pin-encoding"

    def __init__(self) -> None:
        self.hits: dict[str, dict[str, Any]] = {}

    def _add(self, what: list[str], ev: Evidence, failed: bool, function: str,
             pid: int | None) -> None:
        key = ", ".join(what)
        h = self.hits.setdefault(key, {"ev": [], "failed": False, "function": function,
                                       "pid": pid})
        keep(h["ev"], ev)
        h["failed"] = h["failed"] or failed

    def observe(self, e: Event, t: Tracker) -> None:
        if isinstance(e, Call) and e.function in PIN_FUNCTIONS:
            for arg in PIN_ARGS:
                if arg not in e.args:
                    continue
                length, cls, extras = pin_facts(e.args[arg])
                what = encoding_problem(cls, extras, length)
                if what:
                    self._add(what, call_ev(e, f"{arg}: {length} bytes, {cls}"
                                               + (f", {', '.join(extras)}" if extras else "")),
                              e.rv not in (0, None), e.function, e.pid)
        elif isinstance(e, Apdu) and is_pin_apdu(e) and apdu_has_data(e) and not e.masked:
            lc = e.command[4]
            data = e.command[5:5 + lc]
            if not data:
                return
            cls, extras = classify_pin(data)
            what = encoding_problem(cls, extras)
            if what:
                sw = sw_int(e)
                self._add(what, apdu_ev(e, f"PIN data {cls}"), sw is not None and sw != 0x9000,
                          "the card (VERIFY)", e.pid)

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for what, h in self.hits.items():
            yield finding(self.name, h["ev"], severity=None if h["failed"] else "info",
                          pid=h["pid"], what=what, function=h["function"],
                          data={"problems": what.split(", "), "login_failed": h["failed"]})


# --- logins -----------------------------------------------------------------------------------

@rule
class NotLoggedIn(Rule):
    """CKR_USER_NOT_LOGGED_IN, with why: no login, a logout, a login on another token, or a
    login the card lost (reset or removed after it, under this very call or before)."""

    name = "not-logged-in"

    def __init__(self) -> None:
        self.groups: dict[tuple[Any, str, str], dict[str, Any]] = {}
        self.gone: list[tuple[Any, int, int | None, str]] = []  # (pid, seq, parent, what)
        self.lost: list[dict[str, Any]] = []  # calls refused although the login stands

    def _card_went(self, e: PcscCall | Apdu | LogLine) -> None:
        name = e.rv_name if isinstance(e, PcscCall) else getattr(e, "error", None)
        if name in SCARD_GONE:
            what = f"the card was {SCARD_GONE[name]} ({name})"
        elif isinstance(e, LogLine) and _GONE_LOG.search(e.text):
            what = "the card was reset" if "reset" in e.text.lower() else "the card was removed"
        else:
            return
        if len(self.gone) >= MAX_KEPT:
            del self.gone[0]
        self.gone.append((e.pid, e.seq, e.parent, what))

    def _group(self, pid: Any, why: str, function: str, detail: str,
               evidence: list[Evidence]) -> None:
        g = self.groups.setdefault((pid, why, function), {"ev": [], "detail": detail})
        for x in evidence:
            if x.seq not in {y.seq for y in g["ev"]}:
                keep(g["ev"], x)

    def observe(self, e: Event, t: Tracker) -> None:
        if isinstance(e, (PcscCall, Apdu, LogLine)):
            self._card_went(e)
        if not isinstance(e, Call) or e.rv != NOT_LOGGED_IN:
            return
        st = t.proc(e.pid)
        slot = t.slot_of(e)
        label = t.token_label(e.pid, slot)
        token = f"token '{label}'" if label else f"slot {slot}"
        extra: list[Evidence] = []
        others = {s: q for s, q in st.logged_in.items() if s != slot}
        if slot is None and "hSession" in e.args:
            why = "its session was not opened in this trace"
            detail = ("The session handle does not come from a C_OpenSession of this trace "
                      "(opened before the trace began, or already closed).")
        elif others:
            other, seq = next(iter(others.items()))
            olabel = t.token_label(e.pid, other)
            why = "the login was on another token"
            where = f"token '{olabel}'" if olabel else f"slot {other}"
            detail = (f"The program logged in on {where} "
                      f"(C_Login #{seq}) but used a session of {token}: a login counts only "
                      "for the token it was made on.")
            extra.append(Evidence(seq, f"C_Login -> CKR_OK on {olabel or other}"))
        elif slot in st.logout:
            seq, how = st.logout[slot]
            why = f"the login ended at #{seq}"
            detail = (f"The login on {token} ended at #{seq} ({how}) before this call.")
            extra.append(Evidence(seq, f"login ended: {how}"))
            if slot in st.logins:
                extra.append(Evidence(st.logins[slot].seq, "C_Login"))
        elif slot in st.logged_in:
            # judged at the end: the card may go away under this very call (its PC/SC calls
            # and APDUs come after it in the trace)
            if len(self.lost) < MAX_KEPT:
                self.lost.append({"pid": e.pid, "seq": e.seq, "function": e.function,
                                  "login": st.logged_in[slot], "token": token,
                                  "ev": call_ev(e, token)})
            return
        elif slot in st.logins and not st.logins[slot].ok:
            seq = st.logins[slot].seq
            why = "the login failed"
            detail = f"The login on {token} failed (#{seq}), and the program went on anyway."
            extra.append(Evidence(seq, "C_Login failed"))
        else:
            why = "no C_Login before it"
            detail = f"No C_Login on {token} appears in the trace before this call."
        self._group(e.pid, why, e.function, detail, [*extra, call_ev(e, token)])

    def _lost_login(self, c: dict[str, Any]) -> None:
        login, token = c["login"], c["token"]
        ev = [Evidence(login, "C_Login -> CKR_OK")]
        gone = [g for g in self.gone if g[0] == c["pid"] and g[1] > login
                and (g[1] < c["seq"] or g[2] == c["seq"])]
        if gone:
            _, seq, _, what = gone[-1]
            why = f"{what.split(' (')[0]} at #{seq}"
            detail = (f"The program logged in on {token} (C_Login #{login}) and did not log "
                      f"out, but {what} at #{seq}: that clears the card's login, and the "
                      "module did not log in again by itself.")
            ev.append(Evidence(seq, what))
        else:
            why = "the token forgot the login"
            detail = (f"The program logged in on {token} (C_Login #{login}) and did not log "
                      "out, yet the token answers as if it had: the card was reset or "
                      "re-inserted, or another program logged it out.")
        self._group(c["pid"], why, c["function"], detail, [*ev, c["ev"]])

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for c in self.lost:
            self._lost_login(c)
        for (pid, why, function), g in self.groups.items():
            lost = why.startswith("the card was") or why == "the token forgot the login"
            yield finding(self.name, g["ev"], pid=pid, function=function, why=why,
                          detail=g["detail"],
                          more=" After a card reset or re-insertion, log in again (or let the "
                               "module do it: OpenSC use_pin_caching)." if lost else "")


# --- library life cycle -----------------------------------------------------------------------

@rule
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


@rule
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


@rule
class NeverFinalized(Rule):
    """A process that initialised the library and whose trace ends without C_Finalize."""

    name = "never-finalized"

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for pid, st in t.processes.items():
            if not st.initialized or st.init_seq is None:
                continue
            n = len(st.sessions)
            ev = [Evidence(st.init_seq, "C_Initialize -> CKR_OK")]
            yield finding(self.name, ev, pid=pid,
                          who=f" (process {pid})" if pid is not None else "",
                          first=f"#{st.init_seq}",
                          sessions=f", with {_plural(n, 'session')} still open" if n else "",
                          data={"open_sessions": n})


@rule
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


# --- PC/SC, readers and cards -----------------------------------------------------------------

_NO_SERVICE_LOG = re.compile(r"SCardEstablishContext failed: 0x8010001d", re.I)
_NO_READERS_LOG = re.compile(r"SCardListReaders failed: 0x8010002e|no readers found", re.I)
_GONE_LOG = re.compile(r"\((Card removed|Card reset)\)|SCARD_W_(REMOVED|RESET)_CARD", re.I)
_DRIVER_LOG = re.compile(r"trying driver '([^']+)'", re.I)
# "ATR = 3b:..", "ATR: 3B ..", or a dump: "... with ATR (13 bytes):\n3B 88 80 ... ;ascii"
_ATR_LOG = re.compile(r"\bATR\b(?: \(\d+ bytes?\))?\s*[=:]\s*((?:[0-9A-Fa-f]{2}[: ]?){4,})")


@rule
class NoPcscService(Rule):
    name = "no-pcsc-service"

    def __init__(self) -> None:
        self.ev: list[Evidence] = []

    def observe(self, e: Event, t: Tracker) -> None:
        if isinstance(e, PcscCall) and e.function == "SCardEstablishContext" \
                and e.rv == SCARD_E_NO_SERVICE:
            keep(self.ev, pcsc_ev(e))
        elif isinstance(e, LogLine) and _NO_SERVICE_LOG.search(e.text):
            keep(self.ev, log_ev(e))

    def finish(self, t: Tracker) -> Iterable[Finding]:
        if self.ev:
            yield finding(self.name, self.ev, data={"times": len(self.ev)})


@rule
class NoReaders(Rule):
    name = "no-readers"

    def __init__(self) -> None:
        self.ev: list[Evidence] = []
        self.no_service = False

    def observe(self, e: Event, t: Tracker) -> None:
        if isinstance(e, PcscCall):
            if e.function == "SCardEstablishContext" and e.rv == SCARD_E_NO_SERVICE:
                self.no_service = True
            elif e.function == "SCardListReaders" and e.rv == SCARD_E_NO_READERS_AVAILABLE:
                keep(self.ev, pcsc_ev(e))
        elif isinstance(e, LogLine):
            if _NO_SERVICE_LOG.search(e.text):
                self.no_service = True
            elif _NO_READERS_LOG.search(e.text):
                keep(self.ev, log_ev(e))

    def finish(self, t: Tracker) -> Iterable[Finding]:
        if self.ev and not self.no_service:  # no service: that finding says it all
            yield finding(self.name, self.ev, detail=" (SCardListReaders: "
                          "SCARD_E_NO_READERS_AVAILABLE)")


def _uninitialised(t: Tracker, c: Call) -> bool:
    """The slot's token said it is not initialised (SoftHSM's free slot answers
    CKR_TOKEN_NOT_RECOGNIZED to a session): that is no unrecognised card."""
    info = t.proc(c.pid).token_info.get(t.slot_of(c)) or {}
    flags = info.get("flags")
    return isinstance(flags, str) and "CKF_TOKEN_INITIALIZED" not in flags.split("|")


@rule
class CardNotRecognised(Rule):
    """CKR_TOKEN_NOT_RECOGNIZED, with the card's ATR, what was probed and how long it took."""

    name = "card-not-recognised"

    def __init__(self) -> None:
        self.ev: list[Evidence] = []
        self.atr: str | None = None
        self.atr_seq: int | None = None
        self.selects: dict[str, int] = {}  # AID or application -> seq, refused selects
        self.drivers: list[str] = []
        self.apdus = 0
        self.apdu_us = 0.0
        self.parents: set[int] = set()
        self.parent_us = 0.0

    def observe(self, e: Event, t: Tracker) -> None:
        if isinstance(e, Call):
            if e.rv == TOKEN_NOT_RECOGNIZED and not _uninitialised(t, e):
                keep(self.ev, call_ev(e))
            if e.seq in self.parents and e.duration_us:
                self.parent_us += e.duration_us
        elif isinstance(e, PcscCall):
            states = _out(e.args.get("rgReaderStates"))
            if isinstance(states, list):
                for s in states:
                    if isinstance(s, dict) and s.get("atr") and s.get("atr") != self.atr:
                        self.atr, self.atr_seq = s["atr"], e.seq
            atr = e.args.get("pbAtr")
            if isinstance(_out(atr), str) and _out(atr):
                self.atr, self.atr_seq = _out(atr), e.seq
        elif isinstance(e, Apdu):
            self.apdus += 1
            self.apdu_us += e.duration_us or 0.0
            c = e.command
            if len(c) > 5 and c[1] == 0xA4 and c[2] == 0x04 and e.sw != "9000" \
                    and not (e.sw or "").startswith("61"):
                aid = c[5:5 + c[4]]
                name = aid_info(aid)[0] or aid.hex().upper()
                self.selects.setdefault(name, e.seq)
        elif isinstance(e, LogLine):
            m = _DRIVER_LOG.search(e.text)
            if m and m.group(1) not in self.drivers:
                self.drivers.append(m.group(1))
            m = _ATR_LOG.search(e.text)
            if m:
                self.atr, self.atr_seq = m.group(1).replace(":", "").replace(" ", ""), e.seq

    def finish(self, t: Tracker) -> Iterable[Finding]:
        if not self.ev:
            return
        ev = list(self.ev)
        atr = ""
        if self.atr:
            atr = f" (ATR {self.atr.upper()})"
            if self.atr_seq is not None:
                ev.append(Evidence(self.atr_seq, f"the card's ATR: {self.atr.upper()}"))
        parts = []
        if self.drivers:
            parts.append(f"Drivers tried: {', '.join(self.drivers)}.")
        if self.selects:
            names = list(self.selects)
            parts.append(f"Applications the card refused to select: {', '.join(names[:8])}"
                         + (f" and {len(names) - 8} more" if len(names) > 8 else "") + ".")
            ev += [Evidence(q, f"SELECT {n} refused") for n, q in list(self.selects.items())[:8]]
        if self.apdus:
            parts.append(f"{_plural(self.apdus, 'APDU')} went to the card, "
                         f"{_ms(self.apdu_us)} in all.")
        if not parts:
            parts.append("The trace shows no probing of the card (a p11spy trace of the "
                         "client, or OPENSC_DEBUG=3 or more, shows the drivers and APDUs).")
        yield finding(self.name, ev, atr=atr, probe=" ".join(parts),
                      data={"atr": self.atr, "drivers": self.drivers,
                            "refused_selects": list(self.selects), "apdus": self.apdus,
                            "apdu_us": self.apdu_us})


SCARD_LOST = frozenset({"SCARD_E_NOT_TRANSACTED", "SCARD_F_COMM_ERROR", "SCARD_E_COMM_DATA_LOST",
                        "SCARD_W_UNRESPONSIVE_CARD", "SCARD_W_UNPOWERED_CARD"})
SCARD_STATE_EMPTY = 0x10
SCARD_STATE_PRESENT = 0x20


@rule
class CardRemoved(Rule):
    """The card removed, reset or silent mid-operation: PC/SC says so (a removed or reset
    card, a reader that now shows no card), exchanges that got no answer after the card had
    been answering, or the module says the device was removed. When every call the card went
    away under still returned CKR_OK, the card answering again under them (OpenSC reconnects
    after a reset and, with the PIN cached, verifies it again), it is a warning that says how
    the module recovered."""

    name = "card-removed"
    PCSC_OPS = ("SCardTransmit", "SCardBeginTransaction", "SCardEndTransaction", "SCardStatus",
                "SCardControl", "SCardReconnect")
    MAX_SHOWN = 8  # failed exchanges cited (the calls they failed are all cited)
    DETAIL = {
        "removed": "the reader reported the card gone (SCARD_W_REMOVED_CARD, no card, or the "
                   "reader's state turned empty)",
        "reset": "the card was reset (SCARD_W_RESET_CARD): another program connected to it "
                 "and reset it, or the reader did",
        "stopped answering": "commands that had been answered got no answer any more (an empty "
                             "response or a failed transmit), as when the card is pulled or "
                             "loses contact in the middle of an exchange",
    }

    def __init__(self) -> None:
        self.ev: list[Evidence] = []
        self.what: set[str] = set()
        self.answered = False  # the card answered some command before
        self.present: set[str] = set()  # readers seen with a card
        self.calls: dict[int, bool] = {}  # seq of a call the card went away under -> it failed
        self.failed = False  # a call failed for it, or an event with no call to judge by
        self.seen = 0
        self.reconnect: Evidence | None = None  # SCardReconnect that worked, after the reset
        self.reverify: Evidence | None = None  # the module verified the PIN again, after it
        self.resumed = False  # the card answered again under such a call

    def _gone(self, what: str, ev: Evidence, e: Event, t: Tracker) -> None:
        self.what.add(what)
        self.seen += 1
        if self.seen <= self.MAX_SHOWN:
            self.ev.append(ev)
        parent = t.parent(e)
        if parent is None:
            self.failed = self.failed or not isinstance(e, Call) or bool(e.rv)
            return
        if parent.seq not in self.calls:
            self.calls[parent.seq] = bool(parent.rv)
            self.failed = self.failed or bool(parent.rv)
            keep(self.ev, Evidence(parent.seq, parent.text()))

    def _after(self, e: Event) -> None:
        """What the module did about it, under the calls the card went away under."""
        if getattr(e, "parent", None) not in self.calls:
            return
        if isinstance(e, Apdu) and e.sw is not None:
            self.resumed = True
        if isinstance(e, PcscCall) and e.function == "SCardReconnect" and e.rv == 0 \
                and self.reconnect is None:
            self.reconnect = Evidence(e.seq, f"{e.function} -> {e.rv_name or 'SCARD_S_SUCCESS'}"
                                             " (the module connected again)")
        elif isinstance(e, Apdu) and is_pin_apdu(e) and apdu_has_data(e) and e.sw == "9000" \
                and self.reverify is None:
            self.reverify = apdu_ev(e, "the module sent the PIN again")

    def observe(self, e: Event, t: Tracker) -> None:
        if self.calls:
            self._after(e)
        if isinstance(e, Apdu):
            if e.error in SCARD_GONE:
                self._gone(SCARD_GONE[e.error], apdu_ev(e), e, t)
            elif self.answered and (e.error in SCARD_LOST or
                                    (e.response is not None and e.sw is None)):
                self._gone("stopped answering", apdu_ev(e), e, t)
            elif e.sw is not None:
                self.answered = True
        elif isinstance(e, PcscCall):
            if e.function in self.PCSC_OPS and (e.rv_name or "") in SCARD_GONE:
                self._gone(SCARD_GONE[e.rv_name or ""], pcsc_ev(e), e, t)
            states = _out(e.args.get("rgReaderStates"))
            for s in states if isinstance(states, list) else ():
                if not isinstance(s, dict):
                    continue
                try:
                    state = int(str(s.get("event_state", "0")), 0)
                except ValueError:
                    continue
                reader = str(s.get("reader"))
                if state & SCARD_STATE_PRESENT:
                    self.present.add(reader)
                elif state & SCARD_STATE_EMPTY and reader in self.present:
                    self.present.discard(reader)
                    self._gone("removed", Evidence(e.seq, f"{e.function}: reader '{reader}' "
                                                          "now has no card"), e, t)
        elif isinstance(e, Call) and e.rv == DEVICE_REMOVED:
            self._gone("removed", call_ev(e), e, t)
        elif isinstance(e, Call) and e.rv in (TOKEN_NOT_PRESENT, SESSION_HANDLE_INVALID,
                                              SESSION_CLOSED) and self.what:
            self.failed = True
            keep(self.ev, call_ev(e, "after the card went"))
        elif isinstance(e, Call) and e.rv == TOKEN_NOT_PRESENT \
                and e.args.get("hSession") in t.proc(e.pid).sessions:
            self._gone("removed", call_ev(e, "a session was open on this token"), e, t)
        elif isinstance(e, LogLine) and _GONE_LOG.search(e.text):
            self._gone("reset" if "reset" in e.text.lower() else "removed", log_ev(e), e, t)

    def finish(self, t: Tracker) -> Iterable[Finding]:
        if not self.ev:
            return
        kinds = [w for w in self.DETAIL if w in self.what]
        what = " and ".join(kinds)
        detail = "; ".join(self.DETAIL[w] for w in kinds)
        if self.seen > self.MAX_SHOWN:
            detail += f" ({self.seen} failed exchanges in all)"
        ev = list(self.ev)
        # recovered: every call it hit returned CKR_OK, the card answering again under them
        recovered = not self.failed and bool(self.calls) and self.resumed
        if recovered:
            ev += [x for x in (self.reconnect, self.reverify) if x is not None]
            first = min(self.calls)
            fn = t.recent[first].function if first in t.recent else "the call"
            outcome = (f"; the module recovered and {fn} #{first} returned CKR_OK"
                       if len(self.calls) == 1 else
                       f"; the module recovered and the {len(self.calls)} calls it hit "
                       "returned CKR_OK")
            how = []
            if self.reconnect is not None:
                how.append(f"connected to the card again (#{self.reconnect.seq})")
            if self.reverify is not None:
                how.append(f"sent the PIN again (VERIFY #{self.reverify.seq}): a reset clears "
                           "the card's login, and the module had kept the PIN (OpenSC: "
                           "use_pin_caching) to log in again by itself")
            consequence = (
                "The module " + (", ".join(how) if how else "carried on")
                + ", so the program did not notice. Not every set-up recovers: without the "
                "PIN cached (use_pin_caching = false, a PIN-pad reader, another module) the "
                "same interruption fails the call (CKR_USER_NOT_LOGGED_IN, "
                "CKR_DEVICE_REMOVED), and each recovery costs time.")
            then = (" The program needs no change; find what resets or drops the card before "
                    "it meets a set-up that cannot recover.")
        else:
            failed = [q for q, bad in self.calls.items() if bad and q in t.recent]
            outcome = ""
            if failed:
                c = t.recent[failed[0]]
                outcome = f": {c.function} #{c.seq} failed ({c.rv_name or c.rv})"
                if len(failed) > 1:
                    outcome += f" and {_plural(len(failed) - 1, 'more call')}"
            if kinds == ["reset"]:
                consequence = ("The operation failed: a reset clears what was established on "
                               "the card (the selected application, the verified PIN), so the "
                               "login is lost even when the session survives.")
            else:
                consequence = ("The operation failed and the sessions of that token are gone; "
                               "a reset also loses the login.")
            then = " The program must open a new session and log in again."
        yield finding(self.name, ev, severity="warning" if recovered else None,
                      what=what, detail=detail, outcome=outcome, consequence=consequence,
                      then=then,
                      data={"what": kinds, "failed_exchanges": self.seen,
                            "recovered": recovered, "calls": sorted(self.calls)})


# --- the token the client wanted --------------------------------------------------------------

def _count(v: Any) -> int | None:
    v = _out(v)
    return v if isinstance(v, int) else None


@rule
class NoToken(Rule):
    """A process whose every C_GetSlotList came back empty."""

    name = "no-token"

    def __init__(self) -> None:
        self.lists: dict[Any, list[Evidence]] = {}
        self.nonempty: set[Any] = set()
        self.no_service = False
        self.no_readers = False

    def observe(self, e: Event, t: Tracker) -> None:
        if isinstance(e, Call) and e.function == "C_GetSlotList" and e.rv in (0, None):
            n = _count(e.args.get("pulCount"))
            if n == 0:
                keep(self.lists.setdefault(e.pid, []), call_ev(e, "0 slots"))
            elif n:
                self.nonempty.add(e.pid)
        elif isinstance(e, PcscCall) and e.rv == SCARD_E_NO_SERVICE:
            self.no_service = True
        elif isinstance(e, PcscCall) and e.rv == SCARD_E_NO_READERS_AVAILABLE:
            self.no_readers = True
        elif isinstance(e, LogLine) and _NO_SERVICE_LOG.search(e.text):
            self.no_service = True

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for pid, ev in self.lists.items():
            if pid in self.nonempty:
                continue
            detail = (" because the PC/SC service was not reachable (see that finding)"
                      if self.no_service else " because the PC/SC service lists no reader "
                      "(see that finding)" if self.no_readers else "")
            yield finding(self.name, ev, pid=pid, detail=detail)


def _near(wanted: str, labels: list[str]) -> str | None:
    """A label that is probably the one meant: other case or spaces, or OpenSC's
    'UserPIN (<label>)' naming one way or the other."""
    w = wanted.strip().casefold()
    for lab in labels:
        c = lab.strip().casefold()
        if c == w or c == f"userpin ({w})" or w == f"userpin ({c})" or \
                re.sub(r"\s+", " ", c) == re.sub(r"\s+", " ", w):
            return lab
    return None


@rule
class TokenLabel(Rule):
    """The token the client was configured for (diagnose --token-label) is not among those the
    module reported; without the option, a process that listed tokens and opened none."""

    name = "token-label-not-found"

    def __init__(self) -> None:
        self.labels: dict[str, int] = {}  # label -> first seq
        self.sessions: set[Any] = set()
        self.infos: dict[Any, list[int]] = {}

    def observe(self, e: Event, t: Tracker) -> None:
        if not isinstance(e, Call):
            return
        if e.function == "C_GetTokenInfo" and e.rv == 0:
            info = e.args.get("pInfo")
            if isinstance(info, dict) and isinstance(info.get("label"), str):
                self.labels.setdefault(info["label"], e.seq)
                keep(self.infos.setdefault(e.pid, []), e.seq)
        elif e.function == "C_OpenSession":
            self.sessions.add(e.pid)

    def finish(self, t: Tracker) -> Iterable[Finding]:
        wanted = self.options.get("token_label")
        seen = ", ".join(f"'{lab}'" for lab in self.labels) or "none (no token was listed)"
        if wanted is not None:
            if wanted in self.labels or wanted.rstrip() in self.labels:
                return
            near = _near(wanted, list(self.labels))
            ev = [Evidence(q, f"C_GetTokenInfo: label '{lab}'")
                  for lab, q in self.labels.items()]
            yield finding(self.name, ev, wanted=wanted, seen=seen,
                          near=f" (did you mean '{near}'?)" if near else "",
                          data={"wanted": wanted, "seen": list(self.labels), "near": near})
            return
        for pid, seqs in self.infos.items():
            if pid in self.sessions:
                continue
            ev = [Evidence(q, "C_GetTokenInfo") for q in seqs[:6]]
            yield finding("tokens-without-session", ev, pid=pid, seen=seen,
                          data={"seen": list(self.labels)})


@rule
class ObjectNotFound(Rule):
    """A search by CKA_LABEL (or by CKA_ID for a key) that found nothing, and no later one
    that did."""

    name = "object-not-found"
    # Programs look for the certificate or public key that goes with a key by its ID as a
    # matter of course (NSS, pkcs11-tool); a miss there is no error.
    PROBED_BY_ID = ("CKO_CERTIFICATE", "CKO_PUBLIC_KEY")

    def __init__(self) -> None:
        self.open: dict[tuple[Any, Any], tuple[str, int, int]] = {}  # (pid, session) -> ..
        self.missed: dict[str, list[Evidence]] = {}
        self.hit: set[str] = set()

    def _close(self, key: tuple[Any, Any]) -> None:
        what, seq, found = self.open.pop(key)
        if found:
            self.hit.add(what)
            self.missed.pop(what, None)
        elif what not in self.hit:
            keep(self.missed.setdefault(what, []),
                 Evidence(seq, f"C_FindObjectsInit for {what}: nothing found"))

    def observe(self, e: Event, t: Tracker) -> None:
        if not isinstance(e, Call):
            return
        key = (e.pid, e.args.get("hSession"))
        if e.function == "C_FindObjectsInit" and e.rv in (0, None):
            if key in self.open:
                self._close(key)
            tv = template_values(e.args.get("pTemplate"))
            parts = []
            if "CKA_LABEL" in tv:
                parts.append(f"label '{tv['CKA_LABEL']}'")
            if "CKA_ID" in tv and ("CKA_LABEL" in tv or
                                   tv.get("CKA_CLASS") not in self.PROBED_BY_ID):
                parts.append(f"ID {tv['CKA_ID']}")
            if parts:
                if "CKA_CLASS" in tv:
                    parts.append(f"class {tv['CKA_CLASS']}")
                self.open[key] = (", ".join(parts), e.seq, 0)
        elif e.function == "C_FindObjects" and key in self.open and e.rv in (0, None):
            n = _count(e.args.get("pulObjectCount"))
            if n is None:
                found = _out(e.args.get("phObject"))
                n = len(found) if isinstance(found, list) else 0
            what, seq, total = self.open[key]
            self.open[key] = (what, seq, total + n)
        elif e.function == "C_FindObjectsFinal" and key in self.open:
            self._close(key)

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for key in list(self.open):
            self._close(key)
        for what, ev in self.missed.items():
            yield finding(self.name, ev, what=what, n=len(ev), data={"search": what})


# --- mechanisms and keys ----------------------------------------------------------------------

@rule
class MechanismNotSupported(Rule):
    name = "mechanism-not-supported"

    def __init__(self) -> None:
        self.groups: dict[str, dict[str, Any]] = {}

    def observe(self, e: Event, t: Tracker) -> None:
        if not isinstance(e, Call) or e.rv != MECHANISM_INVALID \
                or e.function == "C_GetMechanismInfo":
            return
        mech = e.args.get("pMechanism")
        name = mech.get("mechanism") if isinstance(mech, dict) else None
        name = str(name) if name is not None else "the mechanism"
        slot = t.slot_of(e)
        listed = t.proc(e.pid).mechanisms.get(slot)
        g = self.groups.setdefault(name, {"ev": [], "function": e.function, "pid": e.pid})
        if listed is not None and not g.get("listed"):
            seq, mechs = listed
            g["listed"] = name in mechs
            g["list_seq"] = seq
            g["ev"].append(Evidence(seq, f"C_GetMechanismList: {len(mechs)} mechanisms, "
                                         + ("including" if name in mechs else "without")
                                         + f" {name}"))
        keep(g["ev"], call_ev(e, name))

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for name, g in self.groups.items():
            if "listed" not in g:
                listed = ("The trace has no C_GetMechanismList of this token to compare with.")
            elif g["listed"]:
                listed = (f"The token does list it (C_GetMechanismList #{g['list_seq']}), but "
                          "not for this function or key type: C_GetMechanismInfo tells what "
                          "it may do (CKF_SIGN, CKF_DECRYPT, ...).")
            else:
                listed = (f"It is not in the token's mechanism list (C_GetMechanismList "
                          f"#{g['list_seq']}).")
            yield finding(self.name, g["ev"], pid=g["pid"], mechanism=name,
                          function=g["function"], listed=listed,
                          data={"mechanism": name, "listed": g.get("listed")})


_OPERATION = {"CKA_SIGN": "signing", "CKA_VERIFY": "verifying", "CKA_ENCRYPT": "encrypting",
              "CKA_DECRYPT": "decrypting", "CKA_WRAP": "wrapping keys",
              "CKA_UNWRAP": "unwrapping keys", "CKA_DERIVE": "deriving keys",
              "CKA_SIGN_RECOVER": "signing with recovery",
              "CKA_VERIFY_RECOVER": "verifying with recovery",
              "CKA_ENCAPSULATE": "encapsulating", "CKA_DECAPSULATE": "decapsulating"}


@rule
class KeyUsage(Rule):
    """CKR_KEY_FUNCTION_NOT_PERMITTED and the usage attribute that forbids it."""

    name = "key-usage"

    def __init__(self) -> None:
        self.groups: dict[tuple[Any, str, Any], dict[str, Any]] = {}

    def observe(self, e: Event, t: Tracker) -> None:
        if not isinstance(e, Call) or e.rv != KEY_FUNCTION_NOT_PERMITTED:
            return
        usage = attributes.KEY_USAGE.get(e.function)
        if usage is None:
            return
        attr, param = usage
        handle = e.args.get(param)
        known = t.proc(e.pid).objects.get(handle, {})
        g = self.groups.setdefault((e.pid, e.function, handle),
                                   {"ev": [], "attr": attr, "known": known.get(attr)})
        if not g["ev"] and attr in known:
            v, seq = known[attr]
            g["ev"].append(Evidence(seq, f"{attr} = {str(v).lower()} for key {handle}"))
        keep(g["ev"], call_ev(e, f"key {handle}"))

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for (pid, function, handle), g in self.groups.items():
            attr = g["attr"]
            known = g["known"]
            if known is not None:
                value = str(known[0]).lower()
                state = f"is {value} (#{known[1]})"
            else:
                value = "not true"
                state = "is not true (the trace does not show its value)"
            yield finding(self.name, g["ev"], pid=pid, function=function, attribute=attr,
                          value=value, state=state, operation=_OPERATION.get(attr, function),
                          data={"attribute": attr, "key": handle, "value": value})


@rule
class BufferTooSmallLoop(Rule):
    """CKR_BUFFER_TOO_SMALL again and again from one function in one session."""

    name = "buffer-too-small-loop"
    THRESHOLD = 3
    MAX_LOOPS = 10  # loops reported (each its own finding)

    def __init__(self) -> None:
        self.runs: dict[tuple[Any, str, Any], list[tuple[Evidence, Any]]] = {}
        self.done: list[tuple[str, list[tuple[Evidence, Any]], Any]] = []

    def observe(self, e: Event, t: Tracker) -> None:
        if not isinstance(e, Call):
            return
        key = (e.pid, e.function, e.args.get("hSession", e.args.get("slotID")))
        if e.rv == BUFFER_TOO_SMALL:
            size = next((_in(v) for k, v in e.args.items()
                         if k.startswith("pul") and isinstance(v, dict)), None)
            keep(self.runs.setdefault(key, []), (call_ev(e), size))
        elif key in self.runs:
            run = self.runs.pop(key)
            if len(run) >= self.THRESHOLD and len(self.done) < self.MAX_LOOPS:
                self.done.append((e.function, run, e.pid))

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for (pid, function, _h), run in self.runs.items():
            if len(run) >= self.THRESHOLD and len(self.done) < self.MAX_LOOPS:
                self.done.append((function, run, pid))
        for function, run, pid in self.done:
            sizes = [s for _, s in run if s is not None]
            growth = ""
            if sizes and len(set(map(str, sizes))) == 1:
                growth = f", each time with the same buffer size ({sizes[0]})"
            yield finding(self.name, [ev for ev, _ in run], pid=pid, function=function,
                          n=len(run), growth=growth, data={"calls": len(run)})


# --- where the time went ----------------------------------------------------------------------

@rule
class WhereTimeWent(Rule):
    """The slowest calls with the APDUs under them (one pass: a call's APDUs follow it)."""

    name = "where-time-went"
    TOP = 5
    MIN_TOTAL_US = 20_000.0  # below this nothing is worth pointing at

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, str, int, float, Any]] = []
        self.current: list[Any] | None = None  # [dur, seq, fn, apdus, apdu_us, slowest apdu]
        self.total_us = 0.0
        self.apdu_total_us = 0.0
        self.calls = 0

    def _flush(self) -> None:
        c = self.current
        if c is None:
            return
        item = (c[0], c[1], c[2], c[3], c[4], c[5])
        if len(self.heap) < self.TOP:
            heapq.heappush(self.heap, item)
        else:
            heapq.heappushpop(self.heap, item)
        self.current = None

    def observe(self, e: Event, t: Tracker) -> None:
        if isinstance(e, Call):
            self._flush()
            if e.duration_us is not None:
                self.calls += 1
                self.total_us += e.duration_us
                self.current = [e.duration_us, e.seq, e.function, 0, 0.0, None]
        elif isinstance(e, Apdu):
            us = e.duration_us or 0.0
            self.apdu_total_us += us
            c = self.current
            if c is not None and e.parent == c[1]:
                c[3] += 1
                c[4] += us
                if c[5] is None or us > c[5][0]:
                    c[5] = (us, e.seq, apdu_ev(e).what)

    def finish(self, t: Tracker) -> Iterable[Finding]:
        self._flush()
        if not self.heap or self.total_us < self.MIN_TOTAL_US:
            return
        top = sorted(self.heap, reverse=True)
        ev = []
        for dur, seq, fn, n, apdu_us, slowest in top:
            note = f"{_ms(dur)}"
            if n:
                note += f", {_plural(n, 'APDU')} taking {_ms(apdu_us)}"
            ev.append(Evidence(seq, f"{fn}: {note}"))
            if slowest is not None and slowest[0] > 0:
                ev.append(Evidence(slowest[1], f"the slowest APDU under #{seq}, "
                                               f"{_ms(slowest[0])}: {slowest[2]}"))
        dur, seq, fn, n, _, _ = top[0]
        head = f"#{seq} {fn} {_ms(dur)}" + (f" ({_plural(n, 'APDU')})" if n else "")
        shown = sum(x[0] for x in top)
        share = (f"These {len(top)} calls took {_ms(shown)} of the {_ms(self.total_us)} spent "
                 f"in {self.calls} timed calls ({100 * shown / self.total_us:.0f}%)")
        if self.apdu_total_us:
            share += f"; the card's APDUs took {_ms(self.apdu_total_us)} in all"
        yield finding(self.name, ev, in_order=False, top=head, share=share + ".",
                      data={"total_us": self.total_us, "apdu_us": self.apdu_total_us,
                            "slowest": [{"seq": s, "function": f, "duration_us": d,
                                         "apdus": n} for d, s, f, n, _, _ in top]})
