"""Masks PINs in pcsc-spy traces, the raw stream and the decoded text (decoder/pcscspy_text.py
says what both look like).

What carries a PIN there: the command of an SCardTransmit that is a VERIFY, CHANGE REFERENCE
DATA or RESET RETRY COUNTER in clear (apdu_pin.pin_field decides, as everywhere else), and the
PIN_VERIFY/MODIFY structure an SCardControl sends to a PIN-pad reader (the control codes are
learnt from the reader's GET_FEATURE_REQUEST answer, as the spy learns them at capture). The
masked bytes become 2A in hex and `*` in the decoded text's ASCII column; every line keeps its
length. pcsc-spy shows no PKCS#11 arguments and no key material. With --strict the data of
every response is masked too (its status word stays): certificates, card serials and
cardholder data travel there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import BinaryIO

from p11spy.decoder.apdu import pin_field
from p11spy.decoder.masking import (
    MARK_CHAR,
    MARK_HEX,
    Finding,
    Options,
    Report,
    hex_pairs,
    printable,
)
from p11spy.facts import pcsc

_RAW = re.compile(r"([0-9A-Fa-f]{1,16})@")
# A raw line behind bytes that are no text (NULs of a crash or a bad disk): read as one.
_RAW_DAMAGED = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]+([0-9A-Fa-f]{1,16})@")
_ENTRY = re.compile(r">\|\d+\|\d+\|(SCard\w+)")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2} ?)+\Z")
_ANSI = r"(?:\x1b\[[0-9;]*m)*"
_PREFIX = re.compile(r"( *)(?:\(t(\d{1,6})\) )?" + _ANSI)
_FUNCTION = re.compile(r"(SCard\w+|SCarControl)" + _ANSI + r"\s*\Z")
_ARG = re.compile(r" ([io]) (\w+)(?:.*?(0x[0-9A-Fa-f]+))?")
_ROW = re.compile(r" ([io])  ([0-9A-Fa-f]{4}) ")
_HEX_NUM = re.compile(r"0x[0-9A-Fa-f]+\Z")
RESPONSE = "APDU response data (identifying)"


@dataclass
class _Call:
    """What a thread's open call has shown so far."""

    function: str
    values: int = 0  # raw: value lines read
    code: int | None = None  # SCardControl's control code
    buffers: int = 0  # raw: hex lines read (the first is what was sent)
    section: str = ""  # decoded: the buffer the rows belong to ("i bSendBuffer", ...)
    span: tuple[int, int] | None = None  # the bytes of the sent buffer to mask
    received: bytes = b""
    recv_len: int = 0  # decoded: the response's length, as its bRecvLength line says


class _Masker:
    def __init__(self, opts: Options, report: Report) -> None:
        self.opts = opts
        self.report = report
        self.calls: dict[str, _Call] = {}
        self.pin_codes: set[int] = set()

    def _span(self, call: _Call, data: bytes) -> tuple[int, int] | None:
        """Which bytes of what a call sends to mask, from its first bytes (the header)."""
        if call.function == "SCardTransmit":
            if len(data) >= 5:  # pin_field reads the lengths: give it the whole command
                declared = 5 + data[4] if data[4] else 7 + int.from_bytes(data[5:7], "big")
                data = data.ljust(declared, b"\0")
            return pin_field(data)
        if call.function in ("SCardControl", "SCarControl") and call.code in self.pin_codes:
            return 0, 1 << 30  # the whole PIN structure
        return None

    def _learn(self, call: _Call) -> None:
        """The PIN-pad control codes of a GET_FEATURE_REQUEST answer (tag, 4, code)."""
        if call.code != pcsc.CM_IOCTL_GET_FEATURE_REQUEST:
            return
        self.pin_codes |= pcsc.pin_pad_codes(call.received)

    def _mask(self, text: str, start: int, base: int, count: int, span: tuple[int, int],
              ascii_at: int | None, lineno: int, what: str, pin: bool = True) -> str:
        """Bytes base..base+count of a buffer written as hex from text[start:]."""
        chars = list(text)
        hit = False
        keep = self._padding(text, start, base, count, span) if pin else set()
        for j in range(count):
            if not span[0] <= base + j < span[0] + span[1] or j in keep:
                continue
            k = start + 3 * j
            if text[k:k + 2] == MARK_HEX:
                continue
            byte = int(text[k:k + 2], 16)
            chars[k:k + 2] = MARK_HEX
            hit = True
            if ascii_at is not None and ascii_at + j < len(chars) \
                    and chars[ascii_at + j] == printable(byte):
                chars[ascii_at + j] = MARK_CHAR
        if hit:
            self.report(Finding(f"line {lineno}", what))
        return "".join(chars)

    def _padding(self, text: str, start: int, base: int, count: int,
                 span: tuple[int, int]) -> set[int]:
        """The FF bytes that end a PIN field on this line: kept, as PIV pads PINs to 8
        bytes, so the PIN's length stays visible (unless --hide-lengths)."""
        end = span[0] + span[1]
        if self.opts.hide_lengths or span[1] >= 1 << 30 or not base < end <= base + count:
            return set()
        keep = set()
        j = end - base - 1
        while j >= 0 and base + j >= span[0] and text[start + 3 * j:start + 3 * j + 2] in ("FF",
                                                                                          "ff"):
            keep.add(j)
            j -= 1
        return keep

    def line(self, lineno: int, text: str) -> str:
        m = _RAW.match(text) or _RAW_DAMAGED.match(text)
        if m:
            thread, at = m.group(1), m.end()
            glued = text.find(f"{thread}@", at)  # two raw lines glued (a lost newline):
            if glued > 0:  # each is read as itself
                return self._raw(lineno, text[:glued], thread, at) + self.line(lineno,
                                                                               text[glued:])
            return self._raw(lineno, text, thread, at)
        return self._decoded(lineno, text)

    def _raw(self, lineno: int, text: str, thread: str, at: int) -> str:
        tail = text[at:]
        entry = _ENTRY.match(tail)
        if entry:
            self.calls[thread] = _Call(entry.group(1))
            return text
        call = self.calls.get(thread)
        if call is None:
            return text
        if tail.startswith("<|"):
            self._learn(call)
            del self.calls[thread]
            return text
        call.values += 1
        body = tail.strip()
        if call.function == "SCardControl":  # hCard, code, length, sent, length, received
            if call.values == 2 and _HEX_NUM.match(body):
                call.code = int(body, 16)
            if call.values not in (4, 6) or not body or not _HEX.match(body):
                return text
            data = bytes.fromhex(body)
            if call.values == 6:
                call.received = data
                return text
        else:  # SCardTransmit: the first buffer is the command, the last the response
            if body.startswith("0x") or not body or not _HEX.match(body):
                return text
            data = bytes.fromhex(body)
            call.buffers += 1
            if call.buffers > 1:  # the response: its data identifies (--strict)
                if not self.opts.strict or len(data) <= 2:
                    return text
                return self._mask(text, at, 0, len(data), (0, len(data) - 2), None, lineno,
                                  RESPONSE, pin=False)
        span = self._span(call, data)
        if span is None:
            return text
        return self._mask(text, at, 0, len(data), span, None, lineno, _what(call))

    def _decoded(self, lineno: int, text: str) -> str:
        p = _PREFIX.match(text)
        assert p is not None  # every part of it is optional
        rest_at = p.end()
        if p.group(2) is not None:  # -t: the thread's tag
            thread = p.group(2)
        else:  # four spaces per thread; a further space belongs to ` i ` / ` => `
            spaces = len(p.group(1))
            thread = str(spaces // 4)
            if p.end() == spaces:
                rest_at -= spaces % 4
        rest = text[rest_at:]
        fn = _FUNCTION.match(rest)
        if fn:
            self.calls[thread] = _Call(fn.group(1))
            return text
        call = self.calls.get(thread)
        if call is None:
            return text
        if rest.startswith(" => "):
            self._learn(call)
            del self.calls[thread]
            return text
        row = _ROW.match(rest)
        if row:
            start = rest_at + row.end()
            data = bytes(hex_pairs(text[start:], 16))
            count = len(data)
            base = int(row.group(2), 16)
            if call.section == "o bRecvBuffer" or call.section == "o bRecvBuffer[]":
                call.received = (call.received if base else b"") + data
                if not self.opts.strict or call.function != "SCardTransmit" \
                        or call.recv_len <= 2:
                    return text
                return self._mask(text, start, base, count, (0, call.recv_len - 2),
                                  start + 48, lineno, RESPONSE, pin=False)
            if call.section != "i bSendBuffer":
                return text
            if base == 0:
                call.span = self._span(call, data)
            if call.span is None:
                return text
            return self._mask(text, start, base, count, call.span, start + 48, lineno,
                              _what(call))
        arg = _ARG.match(rest)
        if arg:
            call.section = f"{arg.group(1)} {arg.group(2)}"
            if arg.group(2) == "dwControlCode" and arg.group(3):
                call.code = int(arg.group(3), 16)
            if arg.group(2) == "bRecvLength" and arg.group(3):
                call.recv_len = int(arg.group(3), 16)
        return text




def _what(call: _Call) -> str:
    if call.function == "SCardTransmit":
        return "PIN APDU data (PIN)"
    return "PIN-pad structure (PIN)"


def redact(fin: BinaryIO, fout: BinaryIO | None, opts: Options, report: Report) -> None:
    """Line by line, as latin-1 so that a byte stays a byte and lengths stay."""
    masker = _Masker(opts, report)
    for lineno, raw in enumerate(fin, 1):
        text = raw.decode("latin-1")
        eol = "\r\n" if text.endswith("\r\n") else "\n" if text.endswith("\n") else ""
        out = masker.line(lineno, text[:len(text) - len(eol)]) + eol
        if fout is not None:
            fout.write(out.encode("latin-1"))
