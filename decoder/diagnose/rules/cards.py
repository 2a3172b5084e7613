"""PC/SC, reader and card rules: no PC/SC service, no reader, a card no driver recognised, and
a card removed, reset or gone silent in the middle of an operation.

Below the PKCS#11 calls: these read the PC/SC calls, the APDUs and OpenSC's debug log lines,
since a module's return value alone (CKR_TOKEN_NOT_RECOGNIZED, CKR_DEVICE_REMOVED) does not
say what happened to the card.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from p11spy.decoder.apdu import aid_info
from p11spy.decoder.codes import pcsc_name
from p11spy.decoder.diagnose.base import Evidence, Finding, Rule, Tracker, finding, out_value
from p11spy.decoder.diagnose.rules.common import (
    DEVICE_REMOVED,
    GONE_LOG,
    NO_SERVICE_LOG,
    SCARD_E_NO_READERS_AVAILABLE,
    SCARD_E_NO_SERVICE,
    SCARD_GONE,
    SCARD_STATE_EMPTY,
    SCARD_STATE_PRESENT,
    SESSION_CLOSED,
    SESSION_HANDLE_INVALID,
    TOKEN_NOT_PRESENT,
    TOKEN_NOT_RECOGNIZED,
    apdu_ev,
    apdu_has_data,
    call_ev,
    is_pin_apdu,
    keep,
    log_ev,
    ms,
    pcsc_ev,
    plural,
    reader_states,
)
from p11spy.decoder.events import Apdu, Call, Event, LogLine, PcscCall
from p11spy.decoder.knowledge.findings import (
    CARD_REFUSED,
    CARD_UNSEEN,
    NO_PCSC_NEEDED,
    NO_PCSC_UNUSED,
)

_NO_READERS_LOG = re.compile(
    rf"SCardListReaders failed: {SCARD_E_NO_READERS_AVAILABLE:#x}|no readers found", re.I)
_DRIVER_LOG = re.compile(r"trying driver '([^']+)'", re.I)
_NO_DRIVER_LOG = re.compile(r"unable to find driver for inserted card", re.I)
# "ATR = 3b:..", "ATR: 3B ..", or a dump: "... with ATR (13 bytes):\n3B 88 80 ... ;ascii"
_ATR_LOG = re.compile(r"\bATR\b(?: \(\d+ bytes?\))?\s*[=:]\s*((?:[0-9A-Fa-f]{2}[: ]?){4,})")


class NoPcscService(Rule):
    """SCARD_E_NO_SERVICE. An error when the module the program used needed the service; only
    information when the modules that wanted it are not the one the program worked with (p11-kit
    loads OpenSC next to SoftHSM, and OpenSC finds no pcscd while SoftHSM does the work)."""

    name = "no-pcsc-service"

    def __init__(self) -> None:
        self.ev: list[Evidence] = []
        self.modules: dict[str | None, None] = {}  # the modules that wanted the service
        self.sessions: dict[str, int] = {}  # module -> its first session opened

    def observe(self, e: Event, t: Tracker) -> None:
        if isinstance(e, PcscCall) and e.function == "SCardEstablishContext" \
                and e.rv == SCARD_E_NO_SERVICE:
            keep(self.ev, pcsc_ev(e))
            parent = t.parent(e)
            self.modules[parent.module if parent is not None else None] = None
        elif isinstance(e, LogLine) and NO_SERVICE_LOG.search(e.text):
            keep(self.ev, log_ev(e))
            self.modules[None] = None
        elif isinstance(e, Call) and e.function == "C_OpenSession" and e.rv == 0 and e.module:
            self.sessions.setdefault(e.module, e.seq)

    def finish(self, t: Tracker) -> Iterable[Finding]:
        if not self.ev:
            return
        named = [m for m in self.modules if m]
        modules = f" {', '.join(map(_base, named))}" if named and None not in self.modules \
            else ""
        used = {m: q for m, q in self.sessions.items() if m not in self.modules}
        if not used or not modules:
            yield finding(self.name, self.ev, modules=modules, used=": is pcscd running?",
                          outcome=NO_PCSC_NEEDED, todo="", data={"times": len(self.ev)})
            return
        other, seq = next(iter(used.items()))
        ev = [*self.ev, Evidence(seq, f"C_OpenSession -> CKR_OK ({_base(other)})")]
        yield finding(self.name, ev, severity="info", modules=modules,
                      used=f" for{modules}, which the program did not need (it used "
                           f"{_base(other)})",
                      outcome=NO_PCSC_UNUSED.format(other=_base(other), seq=seq,
                                                    modules=modules.strip()),
                      todo="Nothing, for this program. If it was meant to use a smart card: ",
                      subjects=[x.seq for x in self.ev],
                      data={"times": len(self.ev), "needed": False, "used": other,
                            "without_service": named})


def _base(module: str) -> str:
    return module.rsplit("/", 1)[-1]


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
            if NO_SERVICE_LOG.search(e.text):
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


class CardNotRecognised(Rule):
    """CKR_TOKEN_NOT_RECOGNIZED, with the card's ATR, what was probed and how long it took.
    Also without a failing call: a client that lists only slots with a token (pkcs11-tool -T)
    just sees none, while OpenSC logs that no driver took the card, or PC/SC shows a card (its
    ATR) in a reader whose slot never had a token."""

    name = "card-not-recognised"

    def __init__(self) -> None:
        self.ev: list[Evidence] = []
        self.no_driver: list[Evidence] = []  # OpenSC's "unable to find driver" lines
        self.empty: dict[Any, list[Evidence]] = {}  # pid -> its empty slot lists
        self.listed: set[Any] = set()  # pids that listed a slot
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
            elif e.function == "C_GetSlotList" and e.rv in (0, None):
                n = out_value(e.args.get("pulCount"))
                if n == 0:
                    keep(self.empty.setdefault(e.pid, []), call_ev(e, "no slot with a token"))
                elif isinstance(n, int) and n:
                    self.listed.add(e.pid)
            if e.seq in self.parents and e.duration_us:
                self.parent_us += e.duration_us
        elif isinstance(e, PcscCall):
            states = out_value(e.args.get("rgReaderStates"))
            if isinstance(states, list):
                for s in states:
                    if isinstance(s, dict) and s.get("atr") and s.get("atr") != self.atr:
                        self.atr, self.atr_seq = s["atr"], e.seq
            atr = e.args.get("pbAtr")
            if isinstance(out_value(atr), str) and out_value(atr):
                self.atr, self.atr_seq = out_value(atr), e.seq
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
            if _NO_DRIVER_LOG.search(e.text):
                keep(self.no_driver, log_ev(e))
            m = _DRIVER_LOG.search(e.text)
            if m and m.group(1) not in self.drivers:
                self.drivers.append(m.group(1))
            m = _ATR_LOG.search(e.text)
            if m:
                self.atr, self.atr_seq = m.group(1).replace(":", "").replace(" ", ""), e.seq

    def finish(self, t: Tracker) -> Iterable[Finding]:
        shows = CARD_REFUSED
        ev = list(self.ev)
        if not ev:
            empty = [x for pid, evs in self.empty.items() if pid not in self.listed for x in evs]
            if not (self.no_driver or (self.atr and empty)):
                return
            shows = CARD_UNSEEN
            ev = [*self.no_driver[:2], *empty]
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
            parts.append(f"{plural(self.apdus, 'APDU')} went to the card, "
                         f"{ms(self.apdu_us)} in all.")
        if not parts:
            parts.append("The trace shows no probing of the card (a p11spy trace of the "
                         "client, or OPENSC_DEBUG=3 or more, shows the drivers and APDUs).")
        pid = next((c.pid for x in ev if (c := t.recent.get(x.seq)) is not None), None)
        yield finding(self.name, ev, atr=atr, probe=" ".join(parts), shows=shows, pid=pid,
                      data={"atr": self.atr, "drivers": self.drivers,
                            "refused_selects": list(self.selects), "apdus": self.apdus,
                            "apdu_us": self.apdu_us})


# OpenSC's log of a failed exchange: "p11spy vpcd 00 00:SCardTransmit/Control failed: 0x80100016"
_PCSC_FAILED_LOG = re.compile(r"SCard(?:Transmit|Control)\S* failed: (0x[0-9a-fA-F]{8})")
# PC/SC codes of an exchange that got no answer
SCARD_LOST = frozenset({"SCARD_E_NOT_TRANSACTED", "SCARD_F_COMM_ERROR", "SCARD_E_COMM_DATA_LOST",
                        "SCARD_W_UNRESPONSIVE_CARD", "SCARD_W_UNPOWERED_CARD"})


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
        self.last: Evidence | None = None  # the last failed exchange, when past MAX_SHOWN
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
        else:  # cited too: a program gives up on the last one (the engine's prime suspect)
            self.last = Evidence(ev.seq, ev.what + " (the last)")
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
            for reader, state in reader_states(e):
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
        elif isinstance(e, LogLine) and (m := _PCSC_FAILED_LOG.search(e.text)):
            name = pcsc_name(int(m.group(1), 16)) or ""
            if name in SCARD_GONE:
                self._gone(SCARD_GONE[name], log_ev(e), e, t)
            elif name in SCARD_LOST and self.answered:
                self._gone("stopped answering", log_ev(e), e, t)
        elif isinstance(e, LogLine) and GONE_LOG.search(e.text):
            self._gone("reset" if "reset" in e.text.lower() else "removed", log_ev(e), e, t)

    def finish(self, t: Tracker) -> Iterable[Finding]:
        if not self.ev:
            return
        kinds = [w for w in self.DETAIL if w in self.what]
        what = " and ".join(kinds)
        detail = "; ".join(self.DETAIL[w] for w in kinds)
        if self.seen > self.MAX_SHOWN:
            detail += f" ({self.seen} failed exchanges in all)"
        ev = list(self.ev) + ([self.last] if self.last is not None else [])
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
                    outcome += f" and {plural(len(failed) - 1, 'more call')}"
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


RULES = (NoPcscService, NoReaders, CardNotRecognised, CardRemoved,)
