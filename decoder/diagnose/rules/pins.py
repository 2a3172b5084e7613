"""PIN rules: a wrong PIN and the card's retry counter, a blocked PIN, a PIN of the wrong
length, and PIN bytes that look wrongly encoded (EBCDIC, UTF-16, a trailing newline).

The PIN is the commonest reason a login fails, and the trace can show why without showing the
PIN: the length and character class p11spy records for a masked PIN, or the bytes of a clear
trace, read here in the same terms.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from p11spy.decoder.diagnose.base import Evidence, Finding, Rule, Tracker, finding
from p11spy.decoder.diagnose.rules.common import (
    PIN_INCORRECT,
    PIN_LEN_RANGE,
    PIN_LOCKED,
    apdu_ev,
    apdu_has_data,
    call_ev,
    is_pin_apdu,
    keep,
    log_ev,
    sw_int,
)
from p11spy.decoder.events import Apdu, Call, Event, LogLine
from p11spy.decoder.knowledge.findings import (
    PIN_ASCII,
    PIN_SEE_ENCODING,
    PIN_UNSEEN,
    TRACE_PIN_CLEAR,
    TRACE_PIN_MASKED,
)
from p11spy.decoder.values import PIN_CLASS_NAMES, PIN_EXTRA_NAMES
from p11spy.facts.logformat import PinClass, PinExtra
from p11spy.facts.pkcs11.functions import BY_NAME
from p11spy.facts.pkcs11.model import Role

# the calls a login or a PIN change goes through (C_InitToken's SO PIN is left out), and their
# PIN arguments as the function table names them
PIN_FUNCTIONS = ("C_Login", "C_SetPIN", "C_InitPIN", "C_LoginUser")
PIN_ARGS = tuple(dict.fromkeys(p.name for f in PIN_FUNCTIONS for p in BY_NAME[f].params
                               if p.role is Role.PIN))  # pPin, pOldPin, pNewPin


def classify_pin(data: bytes) -> tuple[str, list[str]]:
    """The character class and extras of PIN bytes, in the terms the shim records for a masked
    PIN (facts/logformat.py PinClass, PinExtra). UTF-16 is recognised before trailing NULs are
    stripped, so "1234" as UTF-16LE (31 00 32 00 33 00 34 00) reads as UTF-16 digits."""
    x = 0
    end = len(data)
    if end and data[end - 1] == 0xFF:
        x |= PinExtra.PADDED
        while end and data[end - 1] == 0xFF:
            end -= 1
    body = data[:end]
    if len(body) >= 4 and len(body) % 2 == 0:
        lo_zero = all(b == 0 for b in body[0::2])
        hi_zero = all(b == 0 for b in body[1::2])
        if hi_zero and not lo_zero:
            x |= PinExtra.UTF16
            body = body[0::2]
        elif lo_zero and not hi_zero:
            x |= PinExtra.UTF16
            body = body[1::2]
    while body and body[-1] == 0:
        x |= PinExtra.HAS_NUL
        body = body[:-1]
    if body and body[-1] in (0x0A, 0x0D):
        x |= PinExtra.TRAILING_NEWLINE
        body = body.rstrip(b"\r\n")
    if 0 in body:
        x |= PinExtra.HAS_NUL
    if any(b > 0x7F for b in body):
        x |= PinExtra.NON_ASCII
    if not body:
        cls = PinClass.EMPTY
    elif all(0x30 <= b <= 0x39 for b in body):
        cls = PinClass.ASCII_DIGITS
    elif all(0x20 <= b <= 0x7E for b in body):
        cls = PinClass.ASCII_OTHER
    elif all(0xF0 <= b <= 0xF9 for b in body):
        cls = PinClass.EBCDIC_DIGITS
    else:
        cls = PinClass.OTHER
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
        if data and data == b"*" * len(data):  # masked by p11spy redact: the bytes are gone
            return len(data), None, []
        cls, extras = classify_pin(data)
        return len(data), cls, extras
    return None, None, []


def pin_length(c: Call) -> int | None:
    for name in ("ulPinLen",):
        v = c.args.get(name)
        if isinstance(v, int):
            return v
    return pin_facts(c.args.get("pPin"))[0]


def pin_view(e: Call | Apdu) -> tuple[str, str]:
    """What the trace shows of a PIN (a call's, or a VERIFY's data in clear): ("ascii", what)
    when it looks right, ("wrong", ..) when its encoding looks wrong, ("unseen", "") when the
    trace does not show it."""
    if isinstance(e, Apdu):
        data = e.command[5:5 + e.command[4]].rstrip(b"\xff")  # PIV pads with FF
        length, (cls, extras) = len(data), classify_pin(data)
        if e.masked or not data:
            cls = None
    else:
        length, cls, extras = next((pin_facts(e.args[a]) for a in PIN_ARGS if a in e.args),
                                   (None, None, []))
    if cls is None:
        return "unseen", ""
    if encoding_problem(cls, extras):
        return "wrong", ""
    return "ascii", f"{length} bytes of {cls}" if length is not None else cls


# OpenSC's card layer refusing a PIN: "sec.c:259:sc_pin_cmd: returning with: -1214 (PIN code or
# key incorrect)", logged once per refused PIN from OPENSC_DEBUG=2 on (asking the tries left
# returns 0 there)
_PIN_REFUSED_LOG = re.compile(r"\bsc_pin_cmd: returning with: -1214\b")


class WrongPin(Rule):
    """CKR_PIN_INCORRECT, and the retry counter (63Cx) as it fell across the attempts. Says
    whether the PIN's encoding can be the cause, from what the trace shows of the bytes."""

    name = "pin-incorrect"

    def __init__(self) -> None:
        self.views: dict[str, str] = {}  # what the failed logins' PINs look like -> example
        self.users: set[Any] = set()  # the user types (CKU_*) of the failed logins
        self.attempts: list[int] = []  # seqs of VERIFY commands that spent a try
        self.failed: list[Evidence] = []
        self.counter: list[tuple[int, int, bool]] = []  # (seq, tries left, was an attempt)
        self.evidence: list[Evidence] = []
        self.last_fail = -1
        self.ok_after = False
        self.pid: int | None = None
        self.n_failed = 0
        self.n_attempts = 0
        self.last_left: int | None = None
        self.last_reading: tuple[int, int | None, bool] | None = None  # (seq, parent, attempt)
        self.log_refusals: list[Evidence] = []  # OpenSC's own line for a refused PIN

    def observe(self, e: Event, t: Tracker) -> None:
        if isinstance(e, Call) and e.function in PIN_FUNCTIONS:
            if e.rv == PIN_INCORRECT:
                self.n_failed += 1
                label = t.token_label(e.pid, t.slot_of(e))
                keep(self.failed, call_ev(e, f"token '{label}'" if label else ""))
                view, what = pin_view(e)
                self.views.setdefault(view, what)
                self.users.add(e.args.get("userType"))
                self.last_fail = e.seq
                self.ok_after = False
                self.pid = e.pid
            elif e.rv == 0 and e.function == "C_Login" and self.failed \
                    and self._same_user(e.args.get("userType")):
                self.ok_after = True
                keep(self.evidence, call_ev(e, "a later login worked"))
        elif isinstance(e, LogLine) and _PIN_REFUSED_LOG.search(e.text):
            keep(self.log_refusals, log_ev(e))
            self.pid = e.pid
        elif isinstance(e, Apdu) and is_pin_apdu(e):
            sw = sw_int(e)
            if sw is not None and 0x63C0 <= sw <= 0x63CF:
                attempt = apdu_has_data(e)
                self.n_attempts += attempt
                if attempt:
                    keep(self.attempts, e.seq)
                    view, what = pin_view(e)
                    if view != "unseen":
                        self.views.setdefault(view, what)
                self.last_left = sw & 0x0F
                self.last_reading = (e.seq, e.parent, attempt)
                keep(self.counter, (e.seq, sw & 0x0F, attempt))
                keep(self.evidence, apdu_ev(e, "a wrong PIN" if attempt else
                                            "asking the tries left, no PIN sent"))

    def _read_before_last_failure(self) -> bool:
        """Whether the last reading of the counter was a question asked before the last failed
        login spent a try: in that login (its parent) or an earlier call, or earlier in a
        trace that does not tie APDUs to calls."""
        if self.last_reading is None or self.last_fail < 0:
            return False
        seq, parent, attempt = self.last_reading
        if attempt:
            return False
        return parent == self.last_fail or (parent is not None and parent < self.last_fail) \
            or (parent is None and seq < self.last_fail)

    def _same_user(self, user: Any) -> bool:
        """A later login shows the right PIN was known only for the user who failed: the
        security officer's login (CKU_SO) says nothing of the user's PIN. A trace that does not
        say who logged in (None) is taken at its word."""
        return user is None or None in self.users or user in self.users

    def finish(self, t: Tracker) -> Iterable[Finding]:
        if not self.n_failed and not self.n_attempts and self.log_refusals:
            # a log that shows neither the calls nor the APDUs (OPENSC_DEBUG=1 or 2): OpenSC's
            # own line for each refused PIN is the evidence
            self.failed, self.n_failed = self.log_refusals, len(self.log_refusals)
            self.views.setdefault("unseen", "")
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
            if self._read_before_last_failure() and left:
                # the count was asked before the last failed login, whose VERIFY the trace
                # does not show (OpenSC below level 9 hides it): that login spent one more
                tries = f"; at most {left - 1} {'try' if left == 2 else 'tries'} left"
                fall += (f" The last failed login (#{self.last_fail}) came after that reading "
                         "and its VERIFY is not in the trace: it used up one more try.")
        if self.ok_after:
            fall += " A later login worked, so the right PIN was known."
        if "wrong" in self.views:
            encoding = PIN_SEE_ENCODING
        elif "unseen" in self.views or not self.views:
            encoding = PIN_UNSEEN
        else:
            encoding = PIN_ASCII.format(what=self.views["ascii"])
        yield finding(self.name, self.failed + self.evidence,
                      severity="warning" if self.ok_after else None, pid=self.pid,
                      data={"failed_logins": self.n_failed,
                            "tries_left": [c[1] for c in self.counter],
                            "recovered": self.ok_after},
                      subjects=[e.seq for e in self.failed] or self.attempts,
                      n=n, tries=tries, fall=fall, encoding=encoding)


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


# function -> the PIN argument whose length the token checks against its range, and what the
# finding calls it: a login's PIN, or the new PIN being set
CHECKED_PINS = {"C_Login": ("pPin", "PIN"), "C_LoginUser": ("pPin", "PIN"),
                "C_SetPIN": ("pNewPin", "new PIN"), "C_InitPIN": ("pPin", "new PIN")}


class PinLength(Rule):
    """A PIN whose length is outside the token's ulMinPinLen..ulMaxPinLen: one to log in with,
    or a new one being set (C_SetPIN, C_InitPIN)."""

    name = "pin-length"

    def __init__(self) -> None:
        self.hits: dict[tuple[int, Any, Any, str], list[Evidence]] = {}
        self.pid: int | None = None

    def observe(self, e: Event, t: Tracker) -> None:
        if not isinstance(e, Call) or e.function not in CHECKED_PINS or e.rv in (0, None):
            return
        arg, which = CHECKED_PINS[e.function]
        length = pin_length(e) if arg == "pPin" else pin_facts(e.args.get(arg))[0]
        slot = t.slot_of(e)
        info = t.proc(e.pid).token_info.get(slot) or {}
        lo, hi = info.get("ulMinPinLen"), info.get("ulMaxPinLen")
        known = isinstance(lo, int) and isinstance(hi, int)
        outside = known and length is not None and not lo <= length <= hi
        if outside or e.rv == PIN_LEN_RANGE:
            key = (length if length is not None else -1, lo if known else "?",
                   hi if known else "?", which)
            ev = self.hits.setdefault(key, [])
            if known and not ev:
                ev.append(Evidence(info["seq"], f"C_GetTokenInfo: PIN length {lo}-{hi}"))
            keep(ev, call_ev(e, f"{which} of {length} bytes" if length is not None else ""))
            self.pid = e.pid

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for (length, lo, hi, which), ev in self.hits.items():
            yield finding(self.name, ev, pid=self.pid, length=length if length >= 0 else "?",
                          min=lo, max=hi, which=which, Which=which[0].upper() + which[1:],
                          data={"length": length, "min": lo, "max": hi, "which": which})


class VerifyFailedNoCounter(Rule):
    """VERIFY with a PIN answered 6300: verification failed, and the card keeps the tries left
    to itself. The module may pass it up as anything: OpenSC's PIV driver says
    CKR_GENERAL_ERROR, so the client never hears "wrong PIN"."""

    name = "pin-verify-failed"

    def __init__(self) -> None:
        self.ev: list[Evidence] = []
        self.calls: dict[int, str] = {}  # seq of the call above each such VERIFY -> its rv
        self.apdus: list[int] = []
        self.pid: int | None = None

    def observe(self, e: Event, t: Tracker) -> None:
        if not (isinstance(e, Apdu) and is_pin_apdu(e) and apdu_has_data(e)
                and sw_int(e) == 0x6300):
            return
        keep(self.apdus, e.seq)
        keep(self.ev, apdu_ev(e, "a PIN sent, refused without a count of tries left"))
        self.pid = e.pid
        parent = t.parent(e)
        if parent is not None and parent.seq not in self.calls:
            self.calls[parent.seq] = parent.rv_name or "no return value recorded"
            keep(self.ev, Evidence(parent.seq, parent.text()))

    def finish(self, t: Tracker) -> Iterable[Finding]:
        if not self.apdus:
            return
        answers = sorted(set(self.calls.values()))
        if not answers:
            module = "The trace does not tie the VERIFY to a PKCS#11 call."
        elif answers == ["CKR_PIN_INCORRECT"]:
            module = "The module reported it as CKR_PIN_INCORRECT."
        else:
            module = (f"The module passed it up as {', '.join(answers)}, not "
                      "CKR_PIN_INCORRECT, so the program reports some other failure, not a wrong "
                      "PIN (OpenSC's PIV driver turns 6300 into CKR_GENERAL_ERROR).")
        yield finding(self.name, self.ev, pid=self.pid, n=len(self.apdus), module=module,
                      subjects=[*self.calls, *self.apdus],
                      data={"verify_failed": len(self.apdus), "answers": answers})


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


class PinEncoding(Rule):
    """PIN bytes that look wrongly encoded: EBCDIC digits, UTF-16, a newline or NUL at the end,
    binary. Read from the PIN's bytes where the trace has them, else from the character class
    p11spy records for a masked PIN; VERIFY APDUs in clear count too."""

    name = "pin-encoding"

    def __init__(self) -> None:
        self.hits: dict[str, dict[str, Any]] = {}

    def _add(self, what: list[str], ev: Evidence, failed: bool, function: str,
             pid: int | None, clear: bool) -> None:
        key = ", ".join(what)
        h = self.hits.setdefault(key, {"ev": [], "failed": False, "function": function,
                                       "pid": pid, "clear": clear, "subjects": []})
        keep(h["ev"], ev)
        if failed:
            keep(h["subjects"], ev.seq)
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
                              e.rv not in (0, None), e.function, e.pid,
                              clear=isinstance(e.args[arg], str))
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
                          "the card (VERIFY)", e.pid, clear=True)

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for what, h in self.hits.items():
            yield finding(self.name, h["ev"], severity=None if h["failed"] else "info",
                          pid=h["pid"], what=what, function=h["function"],
                          source=TRACE_PIN_CLEAR if h["clear"] else TRACE_PIN_MASKED,
                          subjects=h["subjects"],
                          data={"problems": what.split(", "), "login_failed": h["failed"]})


RULES = (WrongPin, PinLocked, PinLength, PinEncoding, VerifyFailedNoCounter,)
