"""Status-word meanings (ISO 7816-4 SW1 SW2), kept apart because the viewer's lists and
explanations need them without decoding any APDU."""

from __future__ import annotations

from collections.abc import Callable

from p11spy.decoder.knowledge.status_words import SHORT_ONLY, SW

# The short texts of decoder/knowledge/status_words.py, which explain gives at length.
SW_TEXT: dict[int, str] = {e.value: e.short for e in SW if e.short and e.value is not None} \
    | SHORT_ONLY


def _sw_61(sw: int) -> str:
    n = sw & 0xFF
    return ("256 or more bytes available" if n == 0 else f"{n} more bytes available") + \
        ": use GET RESPONSE"


def _sw_6c(sw: int) -> str:
    return f"wrong Le: exact length is {(sw & 0xFF) or 256}; resend with Le={sw & 0xFF:02X}"


def _sw_63c(sw: int) -> str:
    n = sw & 0x0F
    if n == 0:
        return "verification failed, no tries left (now blocked)"
    return f"verification failed, {n} {'try' if n == 1 else 'tries'} left"


# (mask, value, text or text function), tried in order after the exact table.
SW_PATTERNS: list[tuple[int, int, str | Callable[[int], str]]] = [
    (0xFF00, 0x6100, _sw_61), (0xFF00, 0x6C00, _sw_6c), (0xFFF0, 0x63C0, _sw_63c),
    (0xFF00, 0x6000, "invalid status (60 is the T=0 NULL procedure byte)"),
    (0xFF00, 0x6200, "warning, state unchanged"), (0xFF00, 0x6300, "warning, state changed"),
    (0xFF00, 0x6400, "execution error, state unchanged"),
    (0xFF00, 0x6500, "execution error, state changed"),
    (0xFF00, 0x6600, "security-related error"), (0xFF00, 0x6700, "wrong length (proprietary)"),
    (0xFF00, 0x6800, "function in CLA not supported"), (0xFF00, 0x6900, "command not allowed"),
    (0xFF00, 0x6A00, "wrong parameters"), (0xFF00, 0x6B00, "wrong parameters P1-P2"),
    (0xFF00, 0x6D00, "instruction not supported (proprietary)"),
    (0xFF00, 0x6E00, "class not supported (proprietary)"),
    (0xFF00, 0x6F00, "no precise diagnosis (proprietary)"),
    (0xF000, 0x9000, "application-specific status"),
]


def sw_meaning(sw: int) -> str:
    """A short text for a status word (SW1 SW2 as one int, e.g. 0x6A82)."""
    if sw in SW_TEXT:
        return SW_TEXT[sw]
    for mask, value, text in SW_PATTERNS:
        if sw & mask == value:
            return text(sw) if callable(text) else text
    return "unknown status word"


def sw_status(sw: int | None) -> str:
    """A coarse class for colouring: ok, more (61xx/6Cxx), warning, error, app, or none."""
    if sw is None:
        return "none"
    if sw == 0x9000:
        return "ok"
    if sw >> 8 in (0x61, 0x6C):
        return "more"
    if sw & 0xFFF0 == 0x63C0:
        return "error"
    if sw >> 8 in (0x62, 0x63):
        return "warning"
    if sw >> 12 == 0x9:
        return "app"
    return "error"
