"""What the rules of several sections share: the return values they test for, the signs of a
card gone, PIN APDUs, and how a rule cites an event as evidence.

Return values are taken by name from the project's tables (the PKCS#11 constant table, the
PC/SC knowledge table), so the rules compare numbers without keeping a second list of them.
Evidence is bounded (keep, MAX_KEPT) so that a rule's memory stays small on huge traces.
"""

from __future__ import annotations

import re

from p11spy.decoder import codes
from p11spy.decoder.apdu import PIN_INS as APDU_PIN_INS
from p11spy.decoder.apdu import ins_name
from p11spy.decoder.diagnose.base import Evidence, out_value
from p11spy.decoder.events import Apdu, Call, LogLine, PcscCall
from p11spy.decoder.knowledge.pcsc import PCSC, PCSC_STATE_FLAGS
from p11spy.facts.pkcs11.constants import FAMILIES

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

_SCARD = {e.name: e.value for e in PCSC + PCSC_STATE_FLAGS}
SCARD_E_NO_SERVICE = _SCARD["SCARD_E_NO_SERVICE"]
SCARD_E_NO_READERS_AVAILABLE = _SCARD["SCARD_E_NO_READERS_AVAILABLE"]
SCARD_STATE_EMPTY = _SCARD["SCARD_STATE_EMPTY"]
SCARD_STATE_PRESENT = _SCARD["SCARD_STATE_PRESENT"]
# PC/SC codes that mean the card went away, and which way
SCARD_GONE = {"SCARD_W_REMOVED_CARD": "removed", "SCARD_E_NO_SMARTCARD": "removed",
              "SCARD_W_RESET_CARD": "reset", "SCARD_E_READER_UNAVAILABLE": "removed"}

# OpenSC's words for the same, in a debug log
NO_SERVICE_LOG = re.compile(rf"SCardEstablishContext failed: {SCARD_E_NO_SERVICE:#x}", re.I)
GONE_LOG = re.compile(r"\((Card removed|Card reset)\)|SCARD_W_(REMOVED|RESET)_CARD", re.I)

# VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER: apdu's PIN instructions without their
# odd (BER-TLV) variants, whose data field wraps the PIN in a data object
PIN_INS = frozenset(ins for ins in APDU_PIN_INS if not ins & 1)


MAX_KEPT = 1000  # evidence a rule keeps per finding while reading (the first ones; a finding
#                  shows at most diagnose.MAX_EVIDENCE of them)


def reader_states(e: PcscCall) -> list[tuple[str, int]]:
    """(reader, event state) of each reader an SCardGetStatusChange reported on."""
    states = out_value(e.args.get("rgReaderStates"))
    out = []
    for s in states if isinstance(states, list) else ():
        if isinstance(s, dict):
            try:
                out.append((str(s.get("reader")), int(str(s.get("event_state", "0")), 0)))
            except ValueError:
                continue
    return out


def keep(items: list, item: object) -> None:
    """Appends while the list is short, so a rule's memory stays bounded on huge traces."""
    if len(items) < MAX_KEPT:
        items.append(item)


def is_pin_apdu(a: Apdu) -> bool:
    return len(a.command) >= 4 and a.command[1] in PIN_INS and a.command[0] & 0x80 == 0


def apdu_has_data(a: Apdu) -> bool:
    return len(a.command) > 5


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


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def ms(us: float) -> str:
    return f"{us / 1000:.1f} ms" if us >= 1000 else f"{us:.0f} us"
