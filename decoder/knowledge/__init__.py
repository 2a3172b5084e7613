"""Tables of error codes and messages, one module per system, as plain literal data.

Why a package of data: `p11spy explain` and `p11spy diagnose` must give the same answer for a
code, so the facts (names, numbers, how one layer maps to the next) and the advice written for
administrators live here once; decoder/codes.py turns them into Code records and reads what a
user types. Names and numbers come from the project's reference notes; every sentence is ours.

Modules: ckr (texts for the PKCS#11 return values; their names and numbers are the project's
constant table), opensc (SC_ERROR_*), status_words (ISO 7816 SW1 SW2), pcsc (SCARD_*),
gskit (GSKit return codes), ibm_messages (CTGSK*, AMQ* and MQ reason codes).
"""

from __future__ import annotations

from typing import NamedTuple


class Text(NamedTuple):
    """The explanation of a code whose name and number live elsewhere (CKR_*)."""

    meaning: str
    causes: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    note: str = ""


class Entry(NamedTuple):
    """One code of a table: its facts and what an administrator should know about it."""

    name: str
    value: int | None  # None: a message id, or a name whose number is not confirmed
    meaning: str
    causes: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    maps_to: str | None = None  # the code one layer up (SW -> OpenSC, PC/SC -> OpenSC, -> CKR)
    note: str = ""
    aliases: tuple[str, ...] = ()
    short: str = ""  # a status word's few words, for decoded APDUs and the viewer's lists


class Pattern(NamedTuple):
    """A family of status words with a variable part, e.g. 63Cx (x tries left).

    The meaning is a template: {n} is the variable part as a number (sw - lo), {xx} the same
    as two hex digits; zero is the meaning used when the variable part is 0, if it differs.
    """

    name: str  # "63Cx"
    lo: int
    hi: int
    meaning: str
    zero: str | None = None
    causes: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    maps_to: str | None = None
    note: str = ""
