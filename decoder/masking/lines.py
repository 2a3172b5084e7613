"""Streaming for the text maskers: whole lines a chunk at a time, and a fast skip over lines
that cannot hold a secret.

Why: a multi-gigabyte debug log is mostly lines no masker changes. Looking at each in Python
is what makes a redactor slower than the reader; instead, cheap searches that start with a
literal (`Lookout`) find the next line that may matter, everything before it is copied as
one slice, and the masker's line machine sees only that line (and, while it is `busy`, the
lines after it: a dump, a template). Text is decoded as latin-1, byte for byte, so masking a
character masks a byte and lengths in bytes stay.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO, Protocol

from p11spy.decoder.lines import blocks


class Search(Protocol):
    def search(self, text: str, pos: int) -> re.Match[str] | None: ...


class Word:
    """A literal found with str.find (far faster than a regex of alternatives or a
    case-insensitive one), then checked with a pattern anchored right after it."""

    def __init__(self, word: str, after: str = "") -> None:
        self.word, self.after = word, re.compile(after)

    def search(self, text: str, pos: int) -> re.Match[str] | None:
        i = text.find(self.word, pos)
        while i >= 0:
            m = self.after.match(text, i + len(self.word))
            if m is not None:
                return m
            i = text.find(self.word, i + 1)
        return None


class Lookout:
    """The next place any of several searches matches; each search's next match is kept
    until the reader passes it, so each runs over a stretch of text once."""

    def __init__(self, searches: list[Search]) -> None:
        self.searches = searches
        self.text = ""
        self.starts: list[int] = []

    def search(self, text: str, pos: int) -> int:
        """Where the next match starts at or after pos, or -1."""
        starts = self.starts
        if text is not self.text:
            self.text = text
            starts = self.starts = [-1] * len(self.searches)
        for i, st in enumerate(starts):
            if st < pos:
                m = self.searches[i].search(text, pos)
                starts[i] = m.start() if m is not None else _END
        best = min(starts)
        return -1 if best == _END else best


_END = 1 << 62


class LineMachine(Protocol):
    out: list[str]
    interest: Lookout | None  # None: every line goes through line()

    def busy(self) -> bool: ...

    def line(self, no: int, text: str, eol: str) -> None: ...

    def finish(self) -> None: ...

    def wants_block(self) -> bool: ...  # whether the indented lines ahead go to block()

    def block(self, no: int, text: str) -> None: ...  # consecutive indented lines, whole


# The end of a run of indented lines (bytes that are no text before the indent, NULs of a
# crash, do not end it: the line is still one of the run, damaged).
_BLOCK_END = re.compile(r"\n(?![\x00-\x08\x0e-\x1f\x7f]* )")


def chunks(fin: BinaryIO, whole_blocks: bool = False) -> Iterator[str]:
    """The file as text of whole lines, a block at a time (decoder/lines.py), every byte
    kept. With whole_blocks a chunk also never ends before an indented line, so that a
    template or a dump stays in one chunk."""
    for block in blocks(fin, whole_blocks=whole_blocks):
        if isinstance(block, bytes):  # always: no line is too long for a masker
            yield block.decode("latin-1")


def split_eol(line: str) -> tuple[str, str]:
    if line.endswith("\r\n"):
        return line[:-2], "\r\n"
    if line.endswith("\n"):
        return line[:-1], "\n"
    return line, ""


def run(fin: BinaryIO, fout: BinaryIO | None, m: LineMachine) -> None:
    """Feeds the machine the lines that may matter, copies the rest to fout."""
    no = 0  # number of the line before pos
    out = m.out
    for text in chunks(fin):
        pos, size = 0, len(text)
        while pos < size:
            if not m.busy() and m.interest is not None:
                hit = m.interest.search(text, pos)
                if hit < 0:
                    out.append(text[pos:])
                    no += text.count("\n", pos)
                    break
                start = text.rfind("\n", pos, hit) + 1
                if start > pos:
                    out.append(text[pos:start])
                    no += text.count("\n", pos, start)
                    pos = start
            end = text.find("\n", pos)
            end = size if end < 0 else end + 1
            no += 1
            m.line(no, *split_eol(text[pos:end]))
            pos = end
            if pos < size and text[pos] == " " and m.wants_block():
                stop = _BLOCK_END.search(text, pos)
                if stop is not None and stop.end() < size:  # else it may go on: line by line
                    m.block(no + 1, text[pos:stop.end()])
                    no += text.count("\n", pos, stop.end())
                    pos = stop.end()
        if fout is not None and out:
            fout.write("".join(out).encode("latin-1"))
        out.clear()
    m.finish()
    if fout is not None and out:
        fout.write("".join(out).encode("latin-1"))
    out.clear()
