"""Rules about the token the client wanted: no token at all, a token label the module did not
report (diagnose --token-label), and a search for an object that found nothing.

A client configured for a token or key by name fails far from the cause when the name is
wrong; these rules set what the client asked for against what the module offered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from p11spy.decoder.diagnose.base import (
    Evidence,
    Finding,
    Rule,
    Tracker,
    finding,
    out_value,
    template_values,
)
from p11spy.decoder.diagnose.rules.common import (
    NO_SERVICE_LOG,
    SCARD_E_NO_READERS_AVAILABLE,
    SCARD_E_NO_SERVICE,
    SCARD_STATE_EMPTY,
    SCARD_STATE_PRESENT,
    call_ev,
    keep,
    log_ev,
    pcsc_ev,
    reader_states,
)
from p11spy.decoder.events import Call, Event, LogLine, PcscCall


def _count(v: Any) -> int | None:
    v = out_value(v)
    return v if isinstance(v, int) else None


class NoToken(Rule):
    """A process whose every C_GetSlotList came back empty."""

    name = "no-token"

    def __init__(self) -> None:
        self.lists: dict[Any, list[Evidence]] = {}
        self.nonempty: set[Any] = set()
        self.no_service: Evidence | None = None  # the first sign of each, cited as the cause
        self.no_readers: Evidence | None = None
        self.empty: dict[str, Evidence] = {}  # reader -> where PC/SC first said it had no card
        self.card_seen = False  # a reader said it held a card

    def observe(self, e: Event, t: Tracker) -> None:
        if isinstance(e, Call) and e.function == "C_GetSlotList" and e.rv in (0, None):
            n = _count(e.args.get("pulCount"))
            if n == 0:
                keep(self.lists.setdefault(e.pid, []), call_ev(e, "0 slots"))
            elif n:
                self.nonempty.add(e.pid)
        elif isinstance(e, PcscCall) and e.rv == SCARD_E_NO_SERVICE:
            self.no_service = self.no_service or pcsc_ev(e)
        elif isinstance(e, PcscCall) and e.rv == SCARD_E_NO_READERS_AVAILABLE:
            self.no_readers = self.no_readers or pcsc_ev(e)
        elif isinstance(e, PcscCall):
            for reader, state in reader_states(e):
                if state & SCARD_STATE_PRESENT:
                    self.card_seen = True
                elif state & SCARD_STATE_EMPTY and reader not in self.empty:
                    self.empty[reader] = Evidence(e.seq, f"{e.function}: reader '{reader}' "
                                                         "has no card")
        elif isinstance(e, LogLine) and NO_SERVICE_LOG.search(e.text):
            self.no_service = self.no_service or log_ev(e)

    def finish(self, t: Tracker) -> Iterable[Finding]:
        for pid, ev in self.lists.items():
            if pid in self.nonempty:
                continue
            empty = list(self.empty.values()) if not self.card_seen else []
            detail = (" because the PC/SC service was not reachable (see that finding)"
                      if self.no_service else " because the PC/SC service lists no reader "
                      "(see that finding)" if self.no_readers else
                      _no_card(list(self.empty)) if empty else "")
            causes = [self.no_service] if self.no_service else [self.no_readers] \
                if self.no_readers else empty
            yield finding(self.name, [*ev, *causes], pid=pid, detail=detail,
                          subjects=[x.seq for x in ev], n=len(ev),
                          data={"empty_readers": list(self.empty)} if empty else None)


def _no_card(readers: list[str]) -> str:
    names = ", ".join(f"'{r}'" for r in readers)
    if len(readers) == 1:
        return f" because no card was in the reader {names} (PC/SC reported it empty)"
    return f" because no card was in any reader ({names}: PC/SC reported them empty)"


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
                found = out_value(e.args.get("phObject"))
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


RULES = (NoToken, TokenLabel, ObjectNotFound,)
