"""Redacts OpenSC debug logs (OPENSC_DEBUG) line by line, in constant memory.

Why APDUs are judged by their bytes: at level 8/9 OpenSC logs the VERIFY, CHANGE REFERENCE
DATA and RESET RETRY COUNTER commands with the PIN in clear, as `Outgoing APDU (N bytes):`
dumps (or the `Outgoing APDU data [ N bytes] ===` of old versions) and sometimes as inline hex
in a message. Each command is read whole (it may span several dump lines), and
apdu_pin.pin_field says which bytes are the PIN; those become `2A` in the hex and `*` in the
ASCII column, so the log still reads as the same APDUs. Commands under secure messaging carry
a cryptogram and are left alone (pin_field says so); so are responses. The FF padding PIV adds
after a PIN stays (it shows the PIN's length, as p11spy keeps it) unless --hide-lengths.

Other PIN lines: values after a PIN-like name (`pin=1234`, `new_pin: '1234'`) are masked;
the lengths OpenSC logs (`PIN length 6`, `value(0x..:6)`, `data(8)` of a PIN command) only
with --hide-lengths. --strict also masks reader names, labels, serial numbers, user names
and file system paths in the message text.
"""

from __future__ import annotations

import re
from typing import BinaryIO

from p11spy.decoder.apdu import ins_name, pin_field
from p11spy.decoder.masking import (
    MARK,
    MARK_CHAR,
    MARK_HEX,
    Finding,
    Options,
    Report,
    hex_pairs,
    printable,
)
from p11spy.decoder.masking.lines import Lookout, run

_APDU_HEAD = re.compile(r"(?:\x1b\[[0-9;]*m)*(Outgoing|Incoming) APDU( data)? *[\[(] *([0-9]+) "
                        r"bytes?")
# Hex written inline: pairs, possibly separated by single spaces (sc_dump_hex, pcscd style).
_INLINE_HEX = re.compile(r"(?<![\w:])[0-9A-Fa-f]{2}(?: ?[0-9A-Fa-f]{2}){5,}(?![\w:])")
# Cheap searches for the lines that may need masking, each starting with a literal so that the
# regex engine skips through the text fast: APDU headers, PIN words, and inline hex whose
# second byte is a PIN instruction (the lookbehind, after the literal, checks the CLA byte).
_JUNK = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]*")
_PINPAD_HEAD = re.compile(r"pinpad block \((\d+) bytes?\):")
_LOOKS = (re.compile(r"APDU"), re.compile(r"pinpad block"),
          *(re.compile(w + r"[12]? ?[=:]") for w in ("pin", "PIN", "Pin", "puk", "PUK", "Puk")),
          *(re.compile(w + r"(?:word|wd|phrase)?[12]? ?[=:]") for w in ("pass", "Pass", "PASS")),
          re.compile(r"2[0145CDcd](?<=[^\w:][0-9A-Fa-f]{2}2[0145CDcd])[0-9A-Fa-f]{8}"),
          re.compile(r"2[0145CDcd](?<=[^\w:][0-9A-Fa-f]{2} 2[0145CDcd])(?: [0-9A-Fa-f]{2}){4}"))
_LENGTH_LOOKS = (re.compile(r"PIN length "), re.compile(r"value\("), re.compile(r"data\("))
_PIN_VALUE = re.compile(r"(?i)\b((?:new|old|so|user|cur(?:rent)?)?[_ -]?(?:pin|puk|passphrase|"
                        r"password|passwd)[12]?)( ?[=:] ?)(['\"]?)([^\s'\",;)]+)\3")
_PIN_LENGTHS = (re.compile(r"(PIN length )(\d+)"), re.compile(r"(value\([^:()]*:)(\d+)"),
                re.compile(r"(INS:(?:20|21|24|25|2C|2D), P1:[0-9A-F]+, P2:[0-9A-F]+, "
                           r"data\()(\d+)"))
_STRICT = (
    (re.compile(r"(?i)(\breader\s+')([^']+)"), "reader name"),
    (re.compile(r"^()(.+?)(?=: (?:Detecting smart card|card absent|Card changed|Connecting|"
                r"Connected SC card|card removed))"), "reader name"),
    (re.compile(r"(?i)(\blabel\s*[:=]?\s*')([^']+)"), "label"),
    (re.compile(r"(?i)(serial(?:[ _]?(?:number|nr|no))?\s*[:=]?\s*'?)([0-9A-Za-z:]{4,})"),
     "serial number"),
    (re.compile(r"(?i)(\buser(?:name)?\s*[:=]\s*'?)([^\s',)]+)"), "user name"),
    (re.compile(r"()((?<![\w.~-])(?:[A-Za-z]:\\|~?/)[\w.+@~-]+(?:[/\\][\w.+@~ -]*[\w.+@~-])+)"),
     "path"),
)
_PREFIX = re.compile(r"(?:\x1b\[[0-9;]*m)*(?:P:\d+; T:\S+ |0x[0-9a-fA-F]+ |\d{4}-\d\d-\d\d )"
                     r"(?:\d{4}-\d\d-\d\d )?[0-9:.]+(?:\x1b\[[0-9;]*m)* ?"
                     r"(?:(?:\x1b\[[0-9;]*m)*\[[^\]]*\] ?)?(?:[\w.+-]+:\d+:\w+:(?: |$))?")


class _Dump:
    """An Outgoing APDU being collected: its lines and bytes."""

    def __init__(self, declared: int, whole: bool = False) -> None:
        self.whole = whole  # every byte is masked (a PIN-pad structure)
        self.left = declared
        self.lines: list[tuple[int, str, str, str]] = []  # (number, junk, text, line end)
        self.data = bytearray()
        self.counts: list[int] = []  # bytes on each line


class _Redactor:
    def __init__(self, opts: Options, report: Report) -> None:
        self.opts = opts
        self.report = report
        self.dump: _Dump | None = None
        self.incoming = 0  # bytes of an Incoming dump still to pass
        self.incoming_total = 0  # bytes of that dump in all
        self.out: list[str] = []  # text for fout, written a chunk at a time
        rx = [*_LOOKS, *(_LENGTH_LOOKS if opts.hide_lengths else ())]
        # lines that need a look; all others are copied as they are (unless --strict)
        self.interest = None if opts.strict else Lookout(rx)

    def busy(self) -> bool:
        """Inside a dump: the next line must be seen."""
        return self.dump is not None or self.incoming > 0

    def finish(self) -> None:
        self.end_dump()

    def wants_block(self) -> bool:
        return False

    def block(self, no: int, text: str) -> None:
        raise AssertionError("never asked for")

    def write(self, text: str, eol: str) -> None:
        self.out.append(text + eol)

    def line(self, no: int, text: str, eol: str) -> None:
        d = self.dump
        if d is not None:
            if self.dump_line(d, no, text, eol):
                return
            self.end_dump()
        if self.incoming > 0:
            got = hex_pairs(text, min(16, self.incoming))
            if got:
                if self.opts.strict:
                    text = self.strict_response(no, text, got)
                self.incoming -= len(got)
                self.write(text, eol)
                return
            self.incoming = 0
        pinpad = _PINPAD_HEAD.search(text) if "pinpad" in text else None
        if pinpad is not None:  # a PIN-pad structure (PC/SC part 10) dumped: masked whole
            self.dump = _Dump(int(pinpad.group(1)), whole=True)
            self.write(text, eol)
            return
        head = _APDU_HEAD.search(text) if "APDU" in text else None
        if head is not None:
            n = int(head.group(3))
            if head.group(1) == "Outgoing" and n > 0:
                self.dump = _Dump(n)
            elif head.group(1) == "Incoming":
                self.incoming = self.incoming_total = n
            colon = text.find(":", head.end())
            if self.dump is not None and 0 < colon < len(text) - 1:
                # the dump's first line glued to its head (a lost newline): read as one
                self.write(text[:colon + 1], "")
                if not self.dump_line(self.dump, no, text[colon + 1:], eol):
                    self.end_dump()
                return
            self.write(text, eol)
            return
        self.write(self.message(no, text), eol)

    # -- APDU dumps ---------------------------------------------------------------------------

    def dump_line(self, d: _Dump, no: int, text: str, eol: str) -> bool:
        """Takes one line of a dump; False if it is none (the dump was cut short)."""
        want = min(16, d.left)
        junk = _JUNK.match(text).end()  # bytes that are no text before it (a crash's NULs)
        got = hex_pairs(text[junk:], want)
        if not got:
            return False
        d.lines.append((no, text[:junk], text[junk:], eol))
        d.counts.append(len(got))
        d.data += bytes(got)
        d.left -= len(got)
        if d.left <= 0 or len(got) < want:
            self.end_dump()
        return True

    def end_dump(self) -> None:
        d, self.dump = self.dump, None
        if d is None:
            return
        command = bytes(d.data)
        span = None if d.whole else pin_field(command)
        masked = set()
        if d.whole:
            masked = {i for i, b in enumerate(command) if b != MARK}
        if span is not None:
            start, n = span
            end = min(start + n, len(command))
            if not self.opts.hide_lengths:
                while end > start and command[end - 1] == 0xFF:
                    end -= 1
            masked = {i for i in range(start, end) if command[i] != MARK}
        if masked:
            what = "PIN-pad structure (PIN)" if d.whole else f"{_name(command)} APDU data (PIN)"
            self.report(Finding(f"line {d.lines[0][0]}", what))
        base = 0
        for k, ((_no, junk, text, eol), count) in enumerate(zip(d.lines, d.counts,
                                                                 strict=True)):
            if masked:
                text = _mask_dump_line(text, command, base, count, masked, first=k == 0)
            self.write(junk + text, eol)
            base += count

    def strict_response(self, no: int, text: str, got: list[int]) -> str:
        """--strict: a response's data (certificates, card serials, cardholder data) masked
        on this dump line; its status word, the last two bytes, stays."""
        base = self.incoming_total - self.incoming
        data = bytes(base) + bytes(got)
        masked = {i for i in range(base, base + len(got))
                  if i < self.incoming_total - 2 and data[i] != MARK}
        if not masked:
            return text
        if base == 0 or len(masked) == len(got):
            self.report(Finding(f"line {no}", "APDU response data (identifying)"))
        return _mask_dump_line(text, data, base, len(got), masked, first=base == 0)

    # -- other lines ---------------------------------------------------------------------------

    def message(self, no: int, text: str) -> str:
        """A log line or a continuation: inline APDUs, PIN values, lengths, --strict."""
        out = text
        whats: list[str] = []
        if "PIN" in text or "pin" in text or "Pin" in text or "PUK" in text or "pass" in text:
            new = _PIN_VALUE.sub(lambda m: m.group(1) + m.group(2) + m.group(3) +
                                 MARK_CHAR * len(m.group(4)) + m.group(3), out)
            if new != out:
                whats.append("PIN value")
                out = new
        if self.opts.hide_lengths:
            for rx in _PIN_LENGTHS:
                new = rx.sub(lambda m: m.group(1) + MARK_CHAR * len(m.group(2)), out)
                if new != out:
                    whats.append("PIN length")
                    out = new
        m = _INLINE_HEX.search(out)
        while m is not None:
            out, what = self.inline_apdu(out, m)
            if what:
                whats.append(what)
            m = _INLINE_HEX.search(out, m.end())
        if self.opts.strict:
            p = _PREFIX.match(out)
            cut = p.end() if p else 0
            body = out[cut:]
            for rx, what in _STRICT:
                new = rx.sub(lambda m: m.group(1) + re.sub(r"[^ /\\]", MARK_CHAR, m.group(2)),
                             body)
                if new != body:
                    whats.append(f"{what} (identifying)")
                    body = new
            out = out[:cut] + body
        for what in dict.fromkeys(whats):
            self.report(Finding(f"line {no}", what))
        return out

    def inline_apdu(self, text: str, m: re.Match[str]) -> tuple[str, str | None]:
        digits = [i for i in range(m.start(), m.end()) if text[i] != " "]
        try:
            command = bytes.fromhex("".join(text[i] for i in digits))
        except ValueError:
            return text, None
        span = pin_field(command)
        if span is None:
            return text, None
        start, n = span
        end = min(start + n, len(command))
        if not self.opts.hide_lengths:
            while end > start and command[end - 1] == 0xFF:
                end -= 1
        if all(b == MARK for b in command[start:end]):
            return text, None
        chars = list(text)
        for i in range(start, end):
            chars[digits[2 * i]], chars[digits[2 * i + 1]] = MARK_HEX[0], MARK_HEX[1]
        return "".join(chars), f"{_name(command)} APDU data, inline hex (PIN)"


def _mask_dump_line(text: str, command: bytes, base: int, count: int, masked: set[int],
                    first: bool) -> str:
    """One sc_hex_dump line with the masked bytes as 2A and * (ASCII column checked)."""
    chars = list(text)
    asc = 3 * count if first else 48
    secret_text = ""
    for j in range(count):
        i = base + j
        if i not in masked:
            continue
        chars[3 * j:3 * j + 2] = MARK_HEX
        secret_text += printable(command[i])
        k = asc + j
        if k < len(chars) and chars[k] == printable(command[i]):
            chars[k] = MARK_CHAR
    out = "".join(chars)
    # a column that is not where sc_hex_dump puts it (edited by whoever posted the log)
    tail = out[asc:] if len(out) > asc else ""
    if len(secret_text) > 1 and secret_text.strip(".") and secret_text in tail:
        tail = tail.replace(secret_text, MARK_CHAR * len(secret_text))
        out = out[:asc] + tail
    return out


def _name(command: bytes) -> str:
    return (ins_name(command[0], command[1]) if len(command) > 1 else None) or "PIN"


def redact(fin: BinaryIO, fout: BinaryIO | None, opts: Options, report: Report) -> None:
    """Only lines that may hold a PIN (an APDU, inline hex, a PIN word) and the dumps after
    an APDU header go through the line machine; the rest is copied (see redact_lines)."""
    run(fin, fout, _Redactor(opts, report))
