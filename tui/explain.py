"""What a return code or status word means, as the detail pane lists it: explain's tables
(decoder/codes.py) in a few lines."""

from __future__ import annotations

from p11spy.decoder import codes
from p11spy.decoder.apdu import sw_meaning, sw_status


def _lines(code: codes.Code | None) -> list[str]:
    if code is None:
        return []
    lines = [code.meaning]
    for title, items in (("Causes", code.causes), ("Check", code.checks)):
        if items:
            lines += [f"{title}:"] + [f"  - {i}" for i in items]
    if code.note:
        lines.append(f"Note: {code.note}")
    if code.maps_to:
        lines.append(f"Reported one layer up as {code.maps_to}.")
    return lines


def explain_rv(rv: int | None) -> list[str]:
    """Why a call may have returned rv: meaning, likely causes, what to check."""
    return [] if rv is None else _lines(codes.explain_rv(rv))


def explain_sw(sw: int) -> list[str]:
    """What a status word means (one line, more when the knowledge base has more)."""
    return _lines(codes.explain_sw(sw)) or [sw_meaning(sw)]


def sw_class(sw: str | None) -> str:
    """ok, more, warning, error or none: how a status word is coloured."""
    if sw is None:
        return "none"
    try:
        value = int(sw, 16)
    except ValueError:
        return "none"
    status = sw_status(value)
    return {"app": "ok"}.get(status, status)
