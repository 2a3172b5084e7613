"""`/` search: what a query means, and finding the next row that matches it.

Why several kinds: the fastest test differs. A function name or a return code compares numbers
already in the index arrays; hex bytes and free text are looked for in the raw records first
(one pass over the file in 1 MiB reads for p11spy traces) and only the hits are decoded. Text
formats, whose events are in memory, match against the decoded text. Runs in a worker thread:
`cancelled` is polled and `progress` reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain

from p11spy.decoder.events import Apdu, Call, LogLine, PcscCall
from p11spy.decoder.render import apdu_text, call_text, pcsc_text
from p11spy.facts.pkcs11 import constants
from p11spy.tui.trace_index import APDU, PCSC, TraceIndex
from p11spy.tui.view import LOW, SHIFT, View

_HEX = re.compile(r"(?:[0-9a-fA-F]{2}[\s:]?)+")
_NUMBER = re.compile(r"(0x[0-9a-fA-F]+|\d+)")
_SW = re.compile(r"[69][0-9A-Fa-f]{3}")  # 6A82, 9000: a status word, not a decimal number


@dataclass
class Query:
    text: str
    kind: str  # "function", "rv", "bytes", "text"
    functions: frozenset[int] = field(default_factory=frozenset)
    rv: int | None = None
    needle: bytes = b""
    pattern: re.Pattern[bytes] | None = None
    verify: bool = False  # a raw hit must also show the text once decoded (constants)

    def describe(self) -> str:
        return {"function": "function", "rv": "return code", "bytes": "bytes",
                "text": "text"}[self.kind] + f" {self.text!r}"


def parse(text: str, index: TraceIndex) -> Query:
    """What the user typed: a function name (or the start of one), a CKR name or number, hex
    bytes (four digits starting with 6 or 9 are a status word), or free text."""
    t = text.strip()
    low = t.lower()
    exact = {i for i, n in enumerate(index.func_names)
             if n.lower() in (low, "c_" + low, "scard" + low)}
    if exact:
        return Query(t, "function", functions=frozenset(exact))
    if t.upper().startswith("CKR_"):
        value = constants.FAMILIES["CKR"].names.get(t.upper())
        if value is not None:
            return Query(t, "rv", rv=value)
    if _NUMBER.fullmatch(t) and not _SW.fullmatch(t):
        return Query(t, "rv", rv=int(t, 0))
    compact = re.sub(r"[\s:]", "", t)
    if (_HEX.fullmatch(t) and len(compact) % 2 == 0 and len(compact) >= 4):
        needle = bytes.fromhex(compact)
        return Query(t, "bytes", needle=needle, pattern=re.compile(re.escape(needle)))
    partial = {i for i, n in enumerate(index.func_names)
               if n.lower().startswith((low, "c_" + low, "scard" + low))}
    if partial and len(low) >= 3 and " " not in low:
        return Query(t, "function", functions=frozenset(partial))
    for fam in constants.FAMILIES.values():
        value = fam.names.get(t.upper())
        if value is not None:  # a constant recorded as a number: look for its 8 bytes
            needle = value.to_bytes(8, "little")
            return Query(t, "text", needle=needle, verify=True, pattern=re.compile(
                re.escape(needle) + b"|" + re.escape(t.encode()), re.IGNORECASE))
    return Query(t, "text", needle=t.encode(), pattern=re.compile(
        re.escape(t.encode("utf-8")), re.IGNORECASE))


def record_text(index: TraceIndex, rec: int) -> str:
    """A call with its children as text, lower-cased, for matching."""
    e = index.event(rec)
    lines: list[str] = []
    if isinstance(e, Call):
        lines += call_text(e)
    else:
        lines.append(str(e.to_json()))
    for k in index.kids(rec):
        c = index.event(k)
        if isinstance(c, Apdu):
            lines += apdu_text(c)
            lines.append(c.command.hex())
            if c.response:
                lines.append(c.response.hex())
        elif isinstance(c, PcscCall):
            lines.append(pcsc_text(c))
        elif isinstance(c, LogLine):
            lines.append(c.text)
    return "\n".join(lines).lower()


def matches(index: TraceIndex, q: Query, rec: int) -> bool:
    if q.kind == "function":
        return index.funcs[rec] in q.functions
    if q.kind == "rv":
        return index.rv_values[index.rvs[rec]] == q.rv
    raw_bytes = getattr(index, "record_bytes", None)
    if raw_bytes is not None and q.pattern is not None:
        hit = q.pattern.search(raw_bytes(rec)) or any(
            q.pattern.search(raw_bytes(k)) for k in index.kids(rec))
        return bool(hit) and (not q.verify or q.text.lower() in record_text(index, rec))
    text = record_text(index, rec)
    if q.kind == "bytes":
        return q.needle.hex() in text or q.needle.hex(" ") in text
    return q.text.lower() in text


def find(view: View, start: int, q: Query, backwards: bool = False,
         cancelled: Callable[[], bool] = lambda: False,
         progress: Callable[[float], None] = lambda _f: None) -> int | None:
    """The position of the next row after start (before it, backwards) that matches, wrapping
    around the end once; None when nothing matches."""
    n = len(view)
    if n == 0:
        return None
    index = view.index
    if (not backwards and q.pattern is not None and q.kind in ("bytes", "text")
            and hasattr(index, "record_bytes")):
        return _find_raw(view, start, q, cancelled, progress)
    if q.kind in ("function", "rv"):
        return _find_in_arrays(view, start, q, backwards, cancelled)
    step = -1 if backwards else 1
    for i in range(1, n + 1):
        if i & 0x3FF == 0:
            if cancelled():
                return None
            progress(i / n)
        pos = (start + step * i) % n
        rec, kid = view.record(pos)
        if kid is None and matches(index, q, rec):
            return pos
    return None


def _find_in_arrays(view: View, start: int, q: Query, backwards: bool,
                    cancelled: Callable[[], bool]) -> int | None:
    """Function and return code queries: a tight loop over the index arrays, no decoding."""
    index = view.index
    if q.kind == "function":
        values, wanted = index.funcs, q.functions
    else:
        values = index.rvs
        wanted = frozenset(i for i, v in enumerate(index.rv_values) if v == q.rv)
    n = len(view)
    entries = view.entries
    rows = index.rows if entries is None else entries
    shift = 0 if entries is None else SHIFT
    order = (chain(range(start - 1, -1, -1), range(n - 1, start - 1, -1)) if backwards
             else chain(range(start + 1, n), range(0, start + 1)))
    for i, pos in enumerate(order):
        if i & 0xFFFF == 0 and cancelled():
            return None
        e = rows[pos]
        if shift and e & LOW:
            continue  # an APDU row: queries name calls
        if values[e >> shift] in wanted:
            return pos
    return None


def _find_raw(view: View, start: int, q: Query, cancelled: Callable[[], bool],
              progress: Callable[[float], None]) -> int | None:
    """Forward search in a p11spy trace: the file's bytes first, then only the hits."""
    index = view.index
    n = len(view)
    first = (start + 1) % n
    for lo, hi in ((first, n), (0, first)):  # to the end, then wrap around
        if lo >= hi:
            continue
        rec = view.record(lo)[0]
        kids = index.kids(rec)
        at = min([rec, *kids]) if kids else rec
        while not cancelled():
            hit = index.raw_find(q.pattern, at, cancelled)  # type: ignore[attr-defined]
            if hit is None:
                break
            progress(hit / max(1, len(index.kinds)))
            top = hit
            if index.kind(hit) in (APDU, PCSC):
                top = index.owner(hit)  # type: ignore[attr-defined]
                if top is None:
                    top = hit
            pos = view.pos_of(top)
            if pos is not None and lo <= pos < hi and (
                    not q.verify or q.text.lower() in record_text(index, top)):
                return pos
            at = hit + 1
    return None
