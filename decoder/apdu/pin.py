"""Which bytes of a command are a PIN, and what kind of PIN without showing it: shared by the
decoder and every redactor, so they agree on what to mask."""

from __future__ import annotations

from p11spy.decoder.apdu.framing import pick_case
from p11spy.facts import iso7816


def pin_class(data: bytes) -> str:
    """What kind of bytes a reference data field holds, without saying what they are."""
    if len(data) == 8 and data[0] >> 4 == 2 and 4 <= data[0] & 0x0F <= 12:
        digits = data[0] & 0x0F
        return f"ISO 9564 format-2 PIN block ({digits} digits)"
    core = data.rstrip(b"\xff")
    pad = len(data) - len(core)
    if not core:
        kind = "only FF bytes"
    elif all(0x30 <= x <= 0x39 for x in core):
        kind = "ASCII digits"
    elif all(0xF0 <= x <= 0xF9 for x in core):
        kind = "EBCDIC digits"
    elif all(0x20 <= x < 0x7F for x in core):
        kind = "ASCII characters"
    elif core.rstrip(b"\x00") != core and all(0x30 <= x <= 0x39 for x in core.rstrip(b"\x00")):
        kind = "ASCII digits padded with 00"
    else:
        kind = "binary (not ASCII text)"
    text = f"{len(core)} {kind}" if core else kind
    return text + (f" + {pad} bytes FF padding" if pad and core else "")


def pin_summary(data: bytes, ins: int | None = None, app: str | None = None) -> str:
    """Length and kind of PIN data; CHANGE/RESET data of 16 bytes is two 8-byte blocks."""
    if ins is not None and ins & 0xFE in (0x24, 0x2C) and len(data) == 16 and app != "openpgp":
        return (f"16 bytes: first block {pin_class(data[:8])}; "
                f"second block {pin_class(data[8:])}")
    return f"{len(data)} bytes: {pin_class(data)}"


PIN_INS = iso7816.PIN_INS


def carries_pin(command: bytes) -> bool:
    """True when a command's data field is reference data (a PIN, PUK or resetting code)
    sent in clear: VERIFY, CHANGE REFERENCE DATA or RESET RETRY COUNTER with data and no
    secure messaging. Under secure messaging the data is a cryptogram, not a PIN."""
    span = pin_field(command)
    return span is not None


def pin_field(command: bytes) -> tuple[int, int] | None:
    """(offset, length) of the PIN-carrying data field in the raw command, or None. For a
    command whose lengths do not fit, everything after the length byte(s): masking too much
    is the safe mistake."""
    if len(command) < 6 or not iso7816.pin_in_clear(command[0], command[1]):
        return None
    case, _ = pick_case(command[4:])
    if case in ("3S", "4S"):
        return 5, command[4]
    if case in ("3E", "4E"):
        return 7, int.from_bytes(command[5:7], "big")
    if case is None:  # malformed: everything after the length byte(s) may be a PIN
        start = 7 if command[4] == 0 and len(command) > 7 else 5
        return start, len(command) - start
    return None
