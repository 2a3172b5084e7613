"""Status-word meanings (ISO 7816-4 SW1 SW2), kept apart because the viewer's lists and
explanations need them without decoding any APDU."""

from __future__ import annotations

from collections.abc import Callable

SW_TEXT: dict[int, str] = {
    0x9000: "success",
    0x6200: "warning: no information, state unchanged",
    0x6281: "warning: part of the returned data may be corrupted",
    0x6282: "warning: end of file or record reached before Le bytes",
    0x6283: "warning: selected file deactivated (or card locked)",
    0x6284: "warning: FCI not formatted per ISO 7816-4",
    0x6285: "warning: selected file in termination state",
    0x6286: "warning: no input data available from a sensor",
    0x6300: "warning: no information, state changed (often: verification failed)",
    0x6310: "more data available (GET STATUS: ask for the next occurrence)",
    0x6381: "warning: file filled up by the last write",
    0x6400: "execution error, state unchanged",
    0x6401: "execution error: immediate response required by the card",
    0x6500: "execution error, state changed",
    0x6581: "execution error: memory failure",
    0x6700: "wrong length (Lc or Le)",
    0x6800: "function in CLA not supported",
    0x6881: "logical channel not supported",
    0x6882: "secure messaging not supported",
    0x6883: "last command of the chain expected",
    0x6884: "command chaining not supported",
    0x6900: "command not allowed",
    0x6981: "command incompatible with file structure",
    0x6982: "security status not satisfied (PIN or authentication missing)",
    0x6983: "authentication method blocked (PIN or key blocked)",
    0x6984: "reference data not usable",
    0x6985: "conditions of use not satisfied",
    0x6986: "command not allowed: no current EF",
    0x6987: "expected secure messaging data objects missing",
    0x6988: "secure messaging data objects incorrect",
    0x6999: "applet selection failed (Java Card)",
    0x6A00: "wrong parameters P1-P2",
    0x6A80: "incorrect parameters in the data field",
    0x6A81: "function not supported",
    0x6A82: "file or application not found",
    0x6A83: "record not found",
    0x6A84: "not enough memory space in the file",
    0x6A85: "Lc inconsistent with TLV structure",
    0x6A86: "incorrect parameters P1-P2",
    0x6A87: "Lc inconsistent with P1-P2",
    0x6A88: "referenced data (key, PIN, data object) not found",
    0x6A89: "file already exists",
    0x6A8A: "DF name already exists",
    0x6B00: "wrong parameters P1-P2 (e.g. offset outside the EF)",
    0x6D00: "instruction not supported (or wrong application selected)",
    0x6E00: "class not supported",
    0x6F00: "no precise diagnosis (often an applet exception)",
}


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
