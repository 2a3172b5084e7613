"""What a return code or status word means, from the project's knowledge base when it is there.

Why an adapter: decoder/codes.py (explain_rv / explain_sw) is written in parallel and may be
absent or shaped differently; the viewer must show what it can and never fail because of it.
Without codes.py the texts come from decoder/knowledge (CKR texts) and decoder/apdu_sw.py
(status word meanings).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from functools import cache
from types import ModuleType
from typing import Any


@cache
def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a missing or broken optional module is not our failure
        return None


def _as_lines(found: Any) -> list[str]:
    """Lines from whatever the knowledge base returned (text, a record, a list)."""
    if found is None or found == "":
        return []
    if isinstance(found, str):
        return found.splitlines()
    for method in ("lines", "describe", "text"):
        fn = getattr(found, method, None)
        if callable(fn):
            try:
                out = fn()
            except TypeError:
                continue
            return _as_lines(out)
    if isinstance(found, (list, tuple)) and not hasattr(found, "_fields"):
        return [ln for item in found for ln in _as_lines(item)]
    meaning = getattr(found, "meaning", None)
    if meaning is not None:
        lines = [str(meaning)]
        lines += _bullets("Causes", getattr(found, "causes", ()))
        lines += _bullets("Check", getattr(found, "checks", ()))
        note = getattr(found, "note", "")
        if note:
            lines.append(f"Note: {note}")
        maps_to = getattr(found, "maps_to", None)
        if maps_to:
            lines.append(f"Reported one layer up as {maps_to}.")
        return lines
    return [str(found)]


def _bullets(title: str, items: Iterable[str] | None) -> list[str]:
    items = list(items or ())
    return [f"{title}:"] + [f"  - {i}" for i in items] if items else []


def explain_rv(rv: int | None, name: str | None = None) -> list[str]:
    """Why a call may have returned rv: meaning, likely causes, what to check."""
    if rv is None:
        return []
    codes = _module("p11spy.decoder.codes")
    if codes is not None and hasattr(codes, "explain_rv"):
        try:
            lines = _as_lines(codes.explain_rv(rv))
        except Exception:  # noqa: BLE001 - fall back to the plain tables
            lines = []
        if lines:
            return lines
    ckr = _module("p11spy.decoder.knowledge.ckr")
    if ckr is None:
        return []
    if name is None:
        from p11spy.decoder.values import rv_name

        name = rv_name(rv)
    return _as_lines(getattr(ckr, "CKR", {}).get(name))


def explain_sw(sw: int) -> list[str]:
    """What a status word means (one line, more when the knowledge base has more)."""
    codes = _module("p11spy.decoder.codes")
    if codes is not None and hasattr(codes, "explain_sw"):
        try:
            lines = _as_lines(codes.explain_sw(sw))
        except Exception:  # noqa: BLE001
            lines = []
        if lines:
            return lines
    status_words = _module("p11spy.decoder.apdu_sw")
    if status_words is not None:
        return [status_words.sw_meaning(sw)]
    return []


def sw_class(sw: str | None) -> str:
    """ok, more, warning, error or none: how a status word is coloured."""
    if sw is None:
        return "none"
    try:
        value = int(sw, 16)
    except ValueError:
        return "none"
    status_words = _module("p11spy.decoder.apdu_sw")
    if status_words is not None:
        status = status_words.sw_status(value)
        return {"app": "ok"}.get(status, status)
    return "ok" if value == 0x9000 else ("more" if value >> 8 in (0x61, 0x6C) else "error")
