"""The login rule: CKR_USER_NOT_LOGGED_IN, and why the token no longer counts the program as
logged in (no login, a logout, a login on another token, a card reset or removed under it).

The refusal itself says nothing about why; the reasons are spread over the trace (earlier
logins and logouts, PC/SC calls and APDUs under the very call), so this rule gathers them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from p11spy.decoder.diagnose.base import Evidence, Finding, Rule, Tracker, finding
from p11spy.decoder.diagnose.rules.common import (
    GONE_LOG,
    MAX_KEPT,
    NOT_LOGGED_IN,
    SCARD_GONE,
    call_ev,
    keep,
)
from p11spy.decoder.events import Apdu, Call, Event, LogLine, PcscCall


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
        elif isinstance(e, LogLine) and GONE_LOG.search(e.text):
            what = "the card was reset" if "reset" in e.text.lower() else "the card was removed"
        else:
            return
        if len(self.gone) >= MAX_KEPT:
            del self.gone[0]
        self.gone.append((e.pid, e.seq, e.parent, what))

    def _group(self, pid: Any, why: str, function: str, detail: str,
               evidence: list[Evidence]) -> None:
        """Adds a failure to its group; the failing call is the last evidence given."""
        g = self.groups.setdefault((pid, why, function),
                                   {"ev": [], "detail": detail, "failed": []})
        if len(g["failed"]) < MAX_KEPT:
            g["failed"].append(evidence[-1].seq)
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
                          detail=g["detail"], subjects=g["failed"],
                          more=" After a card reset or re-insertion, log in again (or let the "
                               "module do it: OpenSC use_pin_caching)." if lost else "")


RULES = (NotLoggedIn,)
