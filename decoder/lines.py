"""A text trace as blocks of whole lines: what every text reader, masker and the viewer read.

Why blocks and not lines: decoding a block at once and splitting it is the same as decoding
each line (a newline byte is never part of a multi-byte sequence) and lets Python touch each
line once, so a multi-gigabyte log reads at the speed of its line machine. Memory stays at a
block, which is why a reader gives a limit to a line: a longer one comes as a `LongLine`, its
first bytes kept and the rest skipped, and the reader says so in its own words (skipped with a
warning, or cut). A masker gives no limit: it must copy every byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

CHUNK = 1 << 20  # bytes read at a time (at most max_line)


@dataclass
class LongLine:
    """A line longer than a reader's limit, in the place of its text."""

    head: bytes  # its first max_line bytes
    seen: int  # its length in bytes as far as it was read when it passed the limit
    length: int  # its whole length in bytes, without the newline


def blocks(f: BinaryIO, max_line: int | None = None, chunk: int = CHUNK,
           whole_blocks: bool = False) -> Iterator[bytes | LongLine]:
    """The file's bytes as blocks of whole lines, each ending with a newline but the file's
    last line when it has none, which comes alone.

    With max_line, a longer line comes as a LongLine between blocks. Reads are never larger
    than max_line, so such a line always crosses the end of a read, where it is looked for.
    With whole_blocks a block also never ends before an indented line, so that a template or
    a dump stays in one block (for the maskers: it takes no max_line)."""
    size = chunk if max_line is None else min(chunk, max_line)
    carry = b""  # the start of a line whose end is not read yet
    long: LongLine | None = None  # an over-long line whose rest is being skipped
    while data := f.read(size):
        if long is not None:
            k = data.find(b"\n")
            if k < 0:
                long.length += len(data)
                continue
            long.length += k
            yield long
            long = None
            data = data[k + 1:]
        elif max_line is not None:
            k = data.find(b"\n")
            known = len(carry) + (len(data) if k < 0 else k)
            if known > max_line:
                long = LongLine((carry + data[:max_line])[:max_line], known, known)
                carry = b""
                if k < 0:
                    continue
                yield long
                long = None
                data = data[k + 1:]
        if carry:
            data = carry + data
        cut = _cut(data) if whole_blocks else data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        yield data[:cut + 1]
        carry = data[cut + 1:]
    if long is not None:
        yield long
    elif carry:
        yield carry


def text_blocks(f: BinaryIO, max_line: int) -> Iterator[tuple[list[str], bool | None] | LongLine]:
    """blocks() as text: each block's lines decoded as UTF-8 (errors replaced), without their
    LF or CRLF, and whether the block had CRLFs (None for the file's last line when it has no
    newline: that line loses every CR it ends with)."""
    for block in blocks(f, max_line):
        if isinstance(block, LongLine):
            yield block
        elif block[-1:] != b"\n":
            yield [block.decode("utf-8", "replace").rstrip("\r")], None
        else:
            text = block.decode("utf-8", "replace")
            crlf = "\r\n" in text
            if crlf:
                text = text.replace("\r\n", "\n")
            lines = text.split("\n")
            lines.pop()  # the empty string after the last newline
            yield lines, crlf


def _cut(data: bytes) -> int:
    """The last newline that the byte after it shows no indented line follows."""
    cut = data.rfind(b"\n", 0, len(data) - 1)
    while cut >= 0 and data[cut + 1:cut + 2] == b" ":
        cut = data.rfind(b"\n", 0, cut)
    return cut
