"""How p11spy's binary traces (facts/LOGFORMAT.md) are framed: records, their fields, and the
payloads with inner structure (templates, mechanism structs, reader states).

Why one module: the reader, the masker and the viewer's index must agree to the byte on where
a record starts, what makes a header valid and where a damaged stretch ends, or a redacted
trace would not read as its original did. They differ only in what they do with the pieces:
the reader decodes them and phrases the damage, the masker masks them in place.

Walkers that the reader and the masker share take `strict`: the reader's walk lets a payload
that ends early raise (it shows that field undecodable), the masker's stops there (it masks
what there is).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import BinaryIO

from p11spy.decoder.formats.p11spy import byteorder
from p11spy.facts import logformat
from p11spy.facts.pkcs11 import structs
from p11spy.facts.pkcs11.model import Param, Role

CHUNK = 1 << 20  # bytes read at a time
MIN_RECORD = logformat.RECORD.size  # a record is at least its header
# A larger length is damage, not a record: the shim records at most 16 MiB of any buffer, and
# three such buffers (C_EncryptMessage's associated data, plaintext and ciphertext) fit; a
# reader must hold no more than this because one length field was hit (LOGFORMAT.md), so
# that it stays within 100 MB. (Only a call filling a fourth buffer, its mechanism
# parameter, with P11SPY_MAX_BUFFER at its 16 MiB ceiling would write more.)
MAX_RECORD = 50 << 20
# The most the shim records of one buffer (P11SPY_MAX_BUFFER's ceiling in spy/shim_runtime.c):
# a single-buffer field holding more is damage, decoded as such rather than rendered whole.
MAX_BUFFER = 16 << 20

# No function has more than 16 parameters, each recorded before and after the call at most,
# with a few fields of the record's own: a record with more fields is damage, and its fields
# beyond these are not walked (a record of zeros would otherwise be millions of empty fields).
MAX_FIELDS = 64

# What frames() yields: a whole record; the first piece of a stretch that is no record and
# further pieces of it (a long stretch comes in pieces, so memory stays flat); a record the
# file ends inside (from its header to the end); a piece of a tail too short for a header
# (cut at any marker in it, as a stretch is).
RECORD, JUNK, MORE, CUT, SHORT = range(5)
# Bytes of a stretch kept back when a piece is cut off: a marker may begin in them.
_OVERLAP = len(logformat.MAGIC) - 1


def header_ok(magic: bytes, length: int) -> bool:
    """Whether a record header is valid: the marker, and a length a record can have.

    The viewer's index inlines this test in its hot loop, with these same names."""
    return magic == logformat.MAGIC and MIN_RECORD <= length <= MAX_RECORD


def u64(b: bytes | bytearray, off: int = 0) -> int:
    """The little-endian unsigned 64-bit number at b[off:] (fewer bytes give a smaller one)."""
    return int.from_bytes(b[off:off + 8], "little")


def frames(f: BinaryIO) -> Iterator[tuple[int, int, bytes | bytearray]]:
    """(kind, file offset, bytes) in file order; the pieces joined are the whole file, but
    that a big-endian writer's records (its process record says so) come little-endian.
    Pieces larger than CHUNK may come as a bytearray: read them, do not keep or change them.

    After a CUT nothing follows. A stretch that is no record ends at the next record marker
    (not the one it starts at) or at the end of the file."""
    buf = bytearray()
    base = 0  # file offset of buf[0]
    eof = False

    def fill(n: int) -> bool:
        """Makes n bytes available, unless the file ends first (read a chunk at a time: one
        read of a large length would hold it twice)."""
        nonlocal eof
        while len(buf) < n and not eof:
            more = f.read(CHUNK)
            if more:
                buf.extend(more)
            else:
                eof = True
        return len(buf) >= n

    seekable = f.seekable()
    origin = f.tell() if seekable else 0  # where in the file reading began

    def peek(at: int, n: int) -> bytes:
        """The n bytes at buf offset `at`, or fewer at the end of the file. Beyond what buf
        holds, a file is read there and put back where it was (so what a resynchronisation
        looks at costs no memory); a pipe must be buffered up to them."""
        if at + n <= len(buf) or not seekable:
            fill(at + n)
            with memoryview(buf) as view:
                return view[at:at + n].tobytes()
        here = f.tell()
        f.seek(origin + base + at)
        got = f.read(n)
        f.seek(here)
        return got

    def take(n: int) -> tuple[int, bytes | bytearray]:
        """The next n bytes. A piece that is most of a large buffer is the buffer itself (a
        bytearray; the few bytes after it move to a new one): the largest record is held once."""
        nonlocal base, buf
        start = base
        if n > CHUNK and 2 * n > len(buf):
            piece, buf = buf, buf[n:]
            del piece[n:]
        else:
            with memoryview(buf) as view:  # one copy (buf[:n] would make a second)
                piece = bytes(view[:n])
            del buf[:n]
            if sys.getsizeof(buf) > 4 * CHUNK + 2 * len(buf):
                buf = bytearray(buf)  # del from the front keeps the memory: let it go
        base += n
        return start, piece

    magic = logformat.MAGIC
    big = False  # the byte order the last process record named
    while fill(1):
        if not fill(MIN_RECORD):
            nxt = buf.find(magic, 1)
            yield SHORT, *take(len(buf) if nxt < 0 else nxt)
            continue
        if buf[:4] == magic:
            big = byteorder.order_from(bytes(buf[:MIN_RECORD]), big)
        length = byteorder.record_length(buf, big)
        if header_ok(bytes(buf[:4]), length):
            at = _resync(peek, length, big)
            if at > 0:  # the length is damaged: the record is lost, what follows is not
                kind = JUNK
                while at > 0:  # in pieces: memory stays flat however long the claim
                    n = min(at, CHUNK)
                    fill(n)
                    yield kind, *take(n)
                    kind, at = MORE, at - n
                continue
            kind, n = (RECORD, length) if fill(length) else (CUT, len(buf))
            start, piece = take(n)
            yield kind, start, byteorder.to_little(piece) if big else piece
            if kind == CUT:
                return
            continue
        kind, start = JUNK, 1
        nxt = buf.find(magic, start)
        while nxt < 0 and not eof:
            if len(buf) > CHUNK:
                yield kind, *take(len(buf) - _OVERLAP)
                kind = MORE
            start = len(buf) - _OVERLAP
            fill(len(buf) + CHUNK)
            nxt = buf.find(magic, start)
        end = len(buf) if nxt < 0 else nxt
        if end:
            yield kind, *take(end)


def _chain(peek, p: int, big: bool) -> bool:
    """Whether a valid record starts at buffer offset p and ends where another starts, or
    exactly where the file does."""
    head = peek(p, MIN_RECORD)
    if len(head) < MIN_RECORD or head[:4] != logformat.MAGIC:
        return False
    n = byteorder.record_length(head, big)
    if not header_ok(head[:4], n):
        return False
    after = peek(p + n, 4)
    return after == logformat.MAGIC or (after == b"" and peek(p + n - 1, 1) != b"")


def _resync(peek, length: int, big: bool) -> int:
    """Where the records go on when the length of the record at the buffer's start is wrong,
    or 0 when it is right. Right: its end is the start of a record, or the end of the file
    (so a damaged record after it is no reason to doubt it). Wrong: the first marker inside
    its span that begins a record which ends where another begins (or the file). The span is
    searched a chunk at a time through peek, so a file need not be held to search it."""
    if peek(length, 4) == logformat.MAGIC or (peek(length, 1) == b"" and
                                              peek(length - 1, 1) != b""):
        return 0
    magic = logformat.MAGIC
    pos = MIN_RECORD
    while pos < length:
        block = peek(pos, min(CHUNK, length - pos) + _OVERLAP)
        i = block.find(magic)
        while 0 <= i and pos + i < length:
            if _chain(peek, pos + i, big):
                return pos + i
            i = block.find(magic, i + 1)
        if len(block) <= _OVERLAP:
            break  # the file ends inside the span
        pos += CHUNK
    return 0


def fields(rec: bytes, start: int = 0,
           end: int | None = None) -> Iterator[tuple[int, int, int, int, int, int]]:
    """(parameter, phase, kind, flags, data offset, data length) of the fields of the record at
    rec[start:end], at most MAX_FIELDS of them. The last field's data may run past the
    record's end: a caller that must not read past it compares."""
    field = logformat.FIELD
    off = start + MIN_RECORD
    end = len(rec) if end is None else end
    for _ in range(MAX_FIELDS):
        if off + field.size > end:
            return
        param, phase, kind, flags, n = field.unpack_from(rec, off)
        off += field.size
        yield param, phase, kind, flags, off, n
        off += n


def attributes(data: bytes | bytearray, off: int = 0,
               strict: bool = True) -> Iterator[tuple[int, int, int, int, int]]:
    """(type, length as seen, value kind, payload start, payload end) of the attributes of the
    TEMPLATE payload at data[off:]; a payload that runs past the data ends with it."""
    attribute = logformat.ATTRIBUTE
    if not strict and off + 8 > len(data):
        return
    count = u64(data, off)
    off += 8
    for _ in range(count):
        if not strict and off + attribute.size > len(data):
            return
        atype, alen, vkind, n = attribute.unpack_from(data, off)
        off += attribute.size
        yield atype, alen, vkind, off, min(off + n, len(data))
        off += n


def struct_blobs(name: str, data: bytes | bytearray,
                 off: int) -> Iterator[tuple[Param, int, int, int]]:
    """(struct field, blob kind, start, end) of the buffers a mechanism struct points to, which
    follow the struct from data[off:] in the table's field order; `end` may run past the data.
    """
    blob = logformat.BLOB
    desc = structs.STRUCTS[name]
    lengths = {f.name: f for f in desc.fields}
    for f in desc.fields:
        if f.role not in (Role.BYTES_IN, Role.PIN) or not f.length or f.size is not None:
            continue
        if lengths[f.length].ctype != "CK_ULONG" or off + blob.size > len(data):
            continue
        kind, n = blob.unpack_from(data, off)
        off += blob.size
        yield f, kind, off, off + n
        off += n


# A reader state: current state, event state (u64 each), u8 ATR length, ATR, u8 name length,
# name.
_STATE = 17


def reader_states(data: bytes | bytearray,
                  strict: bool = True) -> Iterator[tuple[int, int, int, int]]:
    """(start, ATR start, name start, name end) of each reader state an rgReaderStates payload
    holds; `name end` may run past the data."""
    off = 0
    while off + _STATE <= len(data):
        start, atr = off, off + _STATE
        off = atr + data[off + _STATE - 1]
        if not strict and off >= len(data):
            return
        nl = data[off]
        yield start, atr, off + 1, off + 1 + nl
        off += 1 + nl
