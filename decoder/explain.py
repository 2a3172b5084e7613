"""What a code means, why it usually happens, and what to check: the text of `p11spy explain`.

Why a command of its own: the code in hand (`CKR_PIN_INCORRECT`, `63C2`, `rc=408`, `AMQ9669E`)
is often all an administrator has before any trace exists. Every reading of an ambiguous number
is shown, likeliest first, so nobody has to guess which system produced it.
"""

from __future__ import annotations

import textwrap
from typing import Any, TextIO

from p11spy.decoder import codes
from p11spy.decoder.codes import Code, Match, label

WIDTH = 100
MAX_SOURCES = 5  # OpenSC errors listed behind a CKR before "and N more"
SYSTEM_WORDS = "a CKR, status word, OpenSC, PC/SC, GSKit, CTGSK, AMQ or MQ code"


def _ref(code: Code) -> str:
    """A code as a short reference: its name and, where it helps, its value."""
    if code.value is None:
        return code.name
    if code.system == "OpenSC":
        return f"{code.name} ({code.value})"
    if code.system == "SW":
        return f"SW {code.name}"
    return f"{code.name} ({code.hex})"


def _relations(code: Code) -> list[tuple[str, str]]:
    """How the code travels between layers, as (label, text) lines."""
    lines: list[tuple[str, str]] = []
    chain = codes.follow(code)
    if code.system in ("SW", "PC/SC") and chain:
        text = f"{_ref(chain[0])}"
        if len(chain) > 1:
            text += f", which the client sees as {_ref(chain[1])}"
        lines.append(("in OpenSC", text))
    elif code.system == "OpenSC" and chain:
        lines.append(("client sees", _ref(chain[0])))
    elif code.system == "CKR":
        sources = codes.mapped_from(code)
        if sources:
            shown = ", ".join(_ref(c) for c in sources[:MAX_SOURCES])
            more = len(sources) - MAX_SOURCES
            lines.append(("from OpenSC", shown + (f" and {more} more" if more > 0 else "")))
    return lines


def _wrap(label: str, text: str, indent: str = "  ") -> list[str]:
    head = f"{indent}{label + ':':<14}"
    return textwrap.wrap(text, WIDTH, initial_indent=head,
                         subsequent_indent=" " * len(head)) or [head.rstrip()]


def _bullets(label: str, items: tuple[str, ...]) -> list[str]:
    lines = [f"  {label}:"]
    for item in items:
        lines += textwrap.wrap(item, WIDTH, initial_indent="    - ", subsequent_indent="      ")
    return lines


def code_lines(code: Code) -> list[str]:
    """The text block of one code (also for `diagnose`, which explains the codes it finds)."""
    lines = [f"{code.name}  ({label(code)})"]
    if code.value is not None:
        lines += _wrap("value", code.value_text())
    if code.pattern and code.pattern != code.name:
        lines += _wrap("pattern", code.pattern)
    lines += _wrap("meaning", code.meaning)
    if code.causes:
        lines += _bullets("typical causes", code.causes)
    if code.checks:
        lines += _bullets("what to check", code.checks)
    for relation, detail in _relations(code):
        lines += _wrap(relation, detail)
    if code.note:
        lines += _wrap("note", code.note)
    return lines


def text(query: str, matches: list[Match], out: TextIO) -> None:
    if len(matches) == 1:
        out.write("\n".join(code_lines(matches[0].code)) + "\n")
        return
    out.write(f"{query}: {len(matches)} readings, likeliest first\n")
    for i, m in enumerate(matches, 1):
        block = code_lines(m.code)
        out.write(f"\n[{i}/{len(matches)}] read as {m.read_as}: {block[0]}\n")
        out.write("\n".join(block[1:]) + "\n")


def reading_json(m: Match) -> dict[str, Any]:
    return {**m.code.to_json(), "system_label": label(m.code),
            "read_as": m.read_as, "chain": [c.name for c in codes.follow(m.code)]}
