"""`p11spy redact --check --pin VALUE`: find a known PIN in a trace, in any encoding.

Why so many encodings: a PIN reaches a trace as the application typed it (ASCII or UTF-8), as
a z/OS program hands it over (EBCDIC), as a card wants it (BCD, ISO 9564 PIN blocks, FF
padding), or as a Windows program keeps it (UTF-16); and each of those may be written as raw
bytes, as hex (`313233`, `31 32 33`) or in a dump's ASCII column. The hex forms are searched in
the stream of hex bytes of consecutive lines, so a PIN split across two dump rows is found.

A raw ASCII match of a PIN made of letters or digits must not touch other letters or digits:
`1234` is not reported inside `0x7fff12345678`. Hex matches have no such limit (they are
long: eight hex digits for a four-digit PIN). BCD, as short as half the PIN, is searched as
hex only (whole bytes), and raw in binary traces only inside an ISO 9564 PIN block.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from p11spy.decoder.masking import Finding

CHUNK = 1 << 20
HEX_WINDOW = 4096  # hex digits of the lines before kept, for matches across lines
_OFFSET = re.compile(rb"    [0-9A-Fa-f]{8}  ")
_POINTER = re.compile(rb"[0-9A-Fa-f]{8,16} / -?[0-9]+")
_DUMP_ROW = re.compile(rb"(?:[0-9A-Fa-f]{2} ){1,16}")
_HEX_TOKEN = re.compile(rb"(?<![0-9A-Za-z])(?:[0-9A-Fa-f]{2})+(?![0-9A-Za-z])")


@dataclass(frozen=True)
class Encoding:
    name: str
    raw: bytes


def encodings(pin: str) -> list[Encoding]:
    """The byte forms a PIN may take."""
    out = [Encoding("ASCII", pin.encode("utf-8"))]
    for codec in ("cp037", "cp500"):
        try:
            out.append(Encoding("EBCDIC", pin.encode(codec)))
        except UnicodeEncodeError:
            pass
    out.append(Encoding("UTF-16LE", pin.encode("utf-16-le")))
    out.append(Encoding("UTF-16BE", pin.encode("utf-16-be")))
    if pin.isdigit() and pin.isascii():
        digits = pin + ("F" if len(pin) % 2 else "")
        out.append(Encoding("BCD", bytes.fromhex(digits)))
        if len(pin) <= 14:
            block = f"2{len(pin):X}{pin}".ljust(16, "F")
            out.append(Encoding("ISO 9564 PIN block", bytes.fromhex(block)))
    seen: set[bytes] = set()
    unique = []
    for e in out:
        if e.raw and e.raw not in seen:
            seen.add(e.raw)
            unique.append(e)
    return unique


def _label(e: Encoding) -> str:
    return f"PIN as {e.name}" if e.name != "secret" else "secret bytes"


def _raw_pattern(e: Encoding) -> re.Pattern[bytes]:
    body = re.escape(e.raw)
    if e.name == "ASCII" and re.fullmatch(rb"[0-9A-Za-z].*[0-9A-Za-z]|[0-9A-Za-z]", e.raw):
        return re.compile(rb"(?<![0-9A-Za-z])" + body + rb"(?![0-9A-Za-z])")
    return re.compile(body)


def search(f: BinaryIO, pin: str, binary: bool) -> Iterator[Finding]:
    """Every place the PIN appears: (line N | offset N, "PIN as <encoding>[, hex]")."""
    if pin:
        yield from search_encodings(f, encodings(pin), binary)


def search_encodings(f: BinaryIO, encs: list[Encoding], binary: bool) -> Iterator[Finding]:
    """Every place one of these byte strings appears, raw or as hex (also for key values)."""
    ascii_text = {e.raw.lower() for e in encs if e.name == "ASCII"}
    # BCD as raw bytes is as short as half the PIN and, in a binary record full of small
    # numbers, noise: a card's BCD PIN is found as the ISO 9564 block it travels in.
    raws = [(e, _raw_pattern(e)) for e in encs if e.name != "BCD"]
    # BCD of an even number of digits written as hex is the ASCII PIN: found as such already
    hexes = [(e, e.raw.hex()) for e in encs if e.raw.hex().encode() not in ascii_text]
    if binary:
        yield from _search_binary(f, raws, hexes)
    else:
        yield from _search_lines(f, raws, hexes)


def _search_binary(f: BinaryIO, raws: list, hexes: list) -> Iterator[Finding]:
    keep = max(len(h) for _e, h in hexes) + 8
    base = 0
    prev = b""
    while True:
        chunk = f.read(CHUNK)
        if not chunk:
            return
        data = prev + chunk
        start = base - len(prev)
        for e, rx in raws:
            for m in rx.finditer(data):
                if m.end() > len(prev):
                    yield Finding(f"offset {start + m.start()}", f"{_label(e)}")
        low = data.lower()
        for e, h in hexes:
            i = low.find(h.encode())
            while i >= 0:
                if i + len(h) > len(prev):
                    yield Finding(f"offset {start + i}", f"{_label(e)}, hex")
                i = low.find(h.encode(), i + 1)
        prev = data[-keep:]
        base += len(chunk)


def _search_lines(f: BinaryIO, raws: list, hexes: list) -> Iterator[Finding]:
    stream = ""  # hex digits of the dump bytes of recent lines
    owners: list[tuple[int, int]] = []  # (position in stream, line number) where lines start
    reported: set[tuple[str, int]] = set()
    for no, line in enumerate(f, 1):
        for e, rx in raws:
            if rx.search(line):
                yield Finding(f"line {no}", _label(e))
        if _OFFSET.match(line):  # pkcs11-spy's dump offset column is no data
            line = line[14:]
        line = _POINTER.sub(b"", line)  # nor are pkcs11-spy's "<pointer> / <length>"
        dump = _DUMP_ROW.match(line)
        if dump:  # a dump row: its bytes, not the ASCII column after them
            tokens = dump.group().replace(b" ", b"").decode().lower()
        else:
            tokens = b"".join(m.group() for m in _HEX_TOKEN.finditer(line)).decode().lower()
        if not tokens:
            continue
        owners.append((len(stream), no))
        stream += tokens
        for e, h in hexes:
            i = stream.find(h)
            while i >= 0:
                # only matches that reach into this line are new; whole bytes only
                if i + len(h) > owners[-1][0] and i % 2 == 0:
                    first = next(ln for pos, ln in reversed(owners) if pos <= i)
                    if (e.name, first) not in reported:
                        reported.add((e.name, first))
                        yield Finding(f"line {first}", f"{_label(e)}, hex")
                i = stream.find(h, i + 1)
        if len(stream) > HEX_WINDOW:
            cut = len(stream) - HEX_WINDOW // 2
            cut -= cut % 2
            stream = stream[cut:]
            owners = [(pos - cut, ln) for pos, ln in owners if pos - cut >= 0] or \
                [(0, owners[-1][1])]
            if len(reported) > 10000:
                reported.clear()
