"""Decode smart-card APDUs (ISO/IEC 7816-4) for people reading a trace.

construct describes the fixed layouts (header, the seven Lc/Le cases, the class byte's bit
fields, GlobalPlatform responses); BER-TLV framing is in tlv.py and done by hand. Card traffic
is untrusted input: nothing here raises on bad bytes. What does not parse is kept as hex with
a note saying why, and the interpreted (never compiled) construct parsers are used.

This module holds the model (CommandApdu, ResponseApdu, Exchange) and the decoding and folding
around it. The parts live beside it: apdu_framing (header, class byte, Lc/Le cases), apdu_sw
(status words), apdu_pin (PIN fields), apdu_commands and apdu_responses (what each instruction's
fields mean), apdu_names (instruction names).

Entry points: decode_command, decode_response, fold_exchanges; apdu_sw.sw_meaning and
apdu_pin.carries_pin for the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from construct import ConstructError

from .apdu_commands import interpret_command
from .apdu_framing import COMMANDS, HEADER, Cla, parse_cla, pick_case
from .apdu_names import ins_name
from .apdu_pin import PIN_INS, carries_pin, pin_class, pin_field
from .apdu_responses import interpret_response
from .apdu_sw import sw_meaning, sw_status
from .tlv import TlvNode, aid_info, hexs

HEX_LINE = 16  # bytes per hex dump line
MAX_DUMP = 512  # bytes of data shown in describe() before "… N more bytes"

# --------------------------------------------------------------------------------------------
# Small helpers


def hex_lines(b: bytes, indent: str = "    ", limit: int = MAX_DUMP) -> list[str]:
    """A hex dump with an ASCII column, cut after limit bytes."""
    out = []
    for i in range(0, min(len(b), limit), HEX_LINE):
        chunk = b[i:i + HEX_LINE]
        text = "".join(chr(c) if 0x20 <= c < 0x7F else "." for c in chunk)
        out.append(f"{indent}{i:04X}  {chunk.hex(' ').upper():<{HEX_LINE * 3}} {text}")
    if len(b) > limit:
        out.append(f"{indent}… {len(b) - limit} more bytes")
    return out


# --------------------------------------------------------------------------------------------
# Commands


@dataclass
class CommandApdu:
    """A command APDU taken apart. Fields are None where the bytes did not say."""

    raw: bytes
    cla: Cla | None = None
    ins: int | None = None
    p1: int | None = None
    p2: int | None = None
    name: str | None = None
    case: str | None = None  # "1", "2S", "3S", "4S", "2E", "3E", "4E"
    lc: int | None = None
    le: int | None = None  # Ne: the most bytes expected (00 means 256 short, 65536 extended)
    data: bytes = b""
    app: str | None = None  # "piv", "openpgp", "gp", ... when known or inferred
    params: list[tuple[str, str]] = field(default_factory=list)  # ("P1", "04: by DF name")
    details: list[str] = field(default_factory=list)  # what the data field says
    notes: list[str] = field(default_factory=list)  # what is wrong or odd
    brief: str = ""  # a few words for list views: "PIV card application", "key 9A"
    tlv: list[TlvNode] | None = None
    secret: bool = False  # the data is key material: masked like a PIN

    @property
    def masked(self) -> bool:
        """The data field must not be shown (a PIN, or key material) unless asked."""
        return self.secret or carries_pin(self.raw)

    @property
    def ok(self) -> bool:
        """True when the header and the Lc/Le framing parsed."""
        return self.case is not None

    @property
    def extended(self) -> bool:
        return bool(self.case and self.case.endswith("E"))

    @property
    def p1p2(self) -> int | None:
        return None if self.p1 is None or self.p2 is None else (self.p1 << 8) | self.p2

    @property
    def carries_pin(self) -> bool:
        return (self.ok and self.ins in PIN_INS and bool(self.data) and self.cla is not None
                and self.cla.kind in ("interindustry", "proprietary")
                and not self.cla.secure_messaging)

    def title(self) -> str:
        if self.ins is None:
            return "(not an APDU)"
        return self.name or f"INS {self.ins:02X}"

    def summary(self) -> str:
        """One line for a list: name plus the most telling parameter."""
        return f"{self.title()} {self.brief}".strip()

    def shown_hex(self, secrets: bool = False) -> str:
        """The bytes as hex, with reference data (PINs) replaced by ** unless secrets."""
        span = None if secrets else pin_field(self.raw) or (_data_span(self) if self.secret
                                                             else None)
        if span is None:
            return hexs(self.raw, 64)
        start, length = span
        head, tail = self.raw[:start], self.raw[start + length:]
        return " ".join(filter(None, [hexs(head), " ".join(["**"] * length), hexs(tail)]))

    def describe(self, secrets: bool = False) -> list[str]:
        """Text lines: a title line, then indented fields, data and notes."""
        lines = [f"{self.title()}: {self.shown_hex(secrets)}"]
        if self.cla is not None:
            lines.append(f"  CLA {self.cla.value:02X}: {self.cla.describe()}")
        if self.ins is not None and self.ins & 1 and self.name:
            lines.append(f"  INS {self.ins:02X}: odd instruction, data field in BER-TLV")
        for label, text in self.params:
            lines.append(f"  {label} {text}")
        if self.case is not None:
            lines.append(f"  {self._lengths()}")
        pin = self.masked
        if self.data and ((pin and secrets) or (not pin and not self.details)):
            lines.append(f"  data ({len(self.data)} bytes):")
            lines.extend(hex_lines(self.data))
        for d in self.details:
            lines.append(f"  {d}")
        lines.extend(f"  ! {n}" for n in self.notes)
        return lines

    def _lengths(self) -> str:
        form = "extended" if self.extended else "short"
        parts = [f"case {self.case} ({form})"]
        if self.lc is not None:
            parts.append(f"Lc={self.lc}")
        if self.le is not None:
            parts.append(f"Le={self.le}")
        return ", ".join(parts)

    def to_json(self, secrets: bool = False) -> dict[str, Any]:
        masked = self.masked and not secrets
        data: Any = self.data.hex()
        if masked:
            data = {"masked": True, "length": len(self.data),
                    "class": "key material" if self.secret else pin_class(self.data)}
        return {
            "raw": None if masked else self.raw.hex(),
            "cla": self.cla.to_json() if self.cla else None,
            "ins": None if self.ins is None else f"{self.ins:02X}", "ins_name": self.name,
            "p1": None if self.p1 is None else f"{self.p1:02X}",
            "p2": None if self.p2 is None else f"{self.p2:02X}",
            "case": self.case, "lc": self.lc, "le": self.le, "extended": self.extended,
            "data": data, "app": self.app, "summary": self.summary(),
            "params": [{"field": f, "meaning": m} for f, m in self.params],
            "details": self.details, "notes": self.notes,
            "tlv": None if self.tlv is None or masked else [n.to_json() for n in self.tlv],
        }


def _data_span(c: CommandApdu) -> tuple[int, int] | None:
    """(offset, length) of the data field in the raw bytes."""
    if not c.data or c.case is None:
        return None
    return (7 if c.extended else 5), len(c.data)


def decode_command(b: bytes, app: str | None = None) -> CommandApdu:
    """Take a command APDU apart; never raises. app: the selected application if known."""
    c = CommandApdu(bytes(b), app=app)
    try:
        _decode_command(c)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not lose the trace line
        c.notes.append(f"decoder error ({type(exc).__name__}); shown as hex")
    return c


def _decode_command(c: CommandApdu) -> None:
    b = c.raw
    if len(b) < 4:
        c.notes.append(f"too short for a command header ({len(b)} bytes)")
        return
    hdr = HEADER.parse(b[:4])
    c.ins, c.p1, c.p2 = hdr.ins, hdr.p1, hdr.p2
    c.cla = parse_cla(hdr.cla)
    if c.app is None:
        c.app = _infer_app(c)
    c.name = ins_name(hdr.cla, hdr.ins, c.app)
    if hdr.ins >> 4 in (0x6, 0x9):
        c.notes.append(f"INS {hdr.ins:02X} is invalid (6X/9X are T=0 procedure bytes)")
    case, problem = pick_case(b[4:])
    if case is None:
        c.notes.append(problem or "length fields do not fit")
        if pin_field(b) is not None:
            c.notes.append(f"body ({len(b) - 4} bytes) not shown: it may hold a PIN")
        else:
            c.notes.append(f"body after the header left as hex: {hexs(b[4:], 32)}")
        return
    try:
        parsed = COMMANDS[case].parse(b)
    except ConstructError as exc:  # _pick_case guards this; kept so no parse can escape
        c.notes.append(f"length fields do not parse: {exc.__class__.__name__}")
        return
    c.case = case
    body = parsed.body
    c.lc = body.get("lc")
    c.data = body.get("data", b"")
    if "le" in body:
        c.le = body.le or (65536 if case.endswith("E") else 256)
    interpret_command(c)


# Which application a command belongs to when the caller did not say: only when the
# command itself is unmistakable.
_OPENPGP_DOS = {0x006E, 0x0065, 0x007A, 0x00C4, 0x005E, 0x5F50, 0x7F21, 0x0101, 0x0102,
                0x0103, 0x0104, 0x00C0, 0x00CD, 0x00C5, 0x00DE, 0x00F9, 0x00FA}


def _infer_app(c: CommandApdu) -> str | None:
    assert c.cla is not None
    if c.cla.kind == "proprietary" and c.cla.value & 0xF0 in (0x80, 0xC0, 0xE0):
        return "gp"
    if c.ins == 0xCB and c.p1p2 == 0x3FFF:
        return "piv"
    if c.ins == 0x87:
        return "piv"
    if c.ins in (0xCA, 0xDA) and c.p1p2 in _OPENPGP_DOS:
        return "openpgp"
    if c.ins == 0x2A and c.p1p2 in (0x9E9A, 0x8086):
        return "openpgp"
    return None


# --------------------------------------------------------------------------------------------
# Responses


@dataclass
class ResponseApdu:
    """A response APDU: data and the status word with its meaning."""

    raw: bytes
    data: bytes = b""
    sw: int | None = None
    meaning: str = ""
    details: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tlv: list[TlvNode] | None = None

    @property
    def ok(self) -> bool:
        return self.sw is not None

    @property
    def sw1(self) -> int | None:
        return None if self.sw is None else self.sw >> 8

    @property
    def sw2(self) -> int | None:
        return None if self.sw is None else self.sw & 0xFF

    @property
    def status(self) -> str:
        return sw_status(self.sw)

    def summary(self) -> str:
        if self.sw is None:
            return "(no status word)"
        size = f", {len(self.data)} bytes" if self.data else ""
        return f"{self.sw:04X} {self.meaning}{size}"

    def describe(self) -> list[str]:
        lines = [f"SW {self.summary()}" if self.sw is not None else "response: no status word"]
        if self.data:
            if self.details:
                lines.extend(f"  {d}" for d in self.details)
            else:
                lines.append(f"  data ({len(self.data)} bytes):")
                lines.extend(hex_lines(self.data))
        elif self.sw is None and self.raw:
            lines.extend(hex_lines(self.raw))
        lines.extend(f"  ! {n}" for n in self.notes)
        return lines

    def to_json(self) -> dict[str, Any]:
        return {"raw": self.raw.hex(), "data": self.data.hex(),
                "sw": None if self.sw is None else f"{self.sw:04X}",
                "sw_meaning": self.meaning or None, "status": self.status,
                "details": self.details, "notes": self.notes,
                "tlv": None if self.tlv is None else [n.to_json() for n in self.tlv]}


def decode_response(b: bytes, command: CommandApdu | bytes | None = None,
                    app: str | None = None) -> ResponseApdu:
    """Split a response into data and SW and interpret the data using the command when
    given; never raises."""
    r = ResponseApdu(bytes(b))
    try:
        if isinstance(command, bytes | bytearray):
            command = decode_command(bytes(command), app)
        _decode_response(r, command, app if command is None else command.app)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not lose the trace line
        r.notes.append(f"decoder error ({type(exc).__name__}); shown as hex")
    return r


def _decode_response(r: ResponseApdu, c: CommandApdu | None, app: str | None) -> None:
    if len(r.raw) < 2:
        r.notes.append(f"response of {len(r.raw)} bytes has no status word")
        return
    r.data, r.sw = r.raw[:-2], int.from_bytes(r.raw[-2:], "big")
    r.meaning = sw_meaning(r.sw)
    if c is not None and c.ins in (0x20, 0x21) and not c.data and r.sw == 0x9000:
        r.meaning += " (already verified)"
    if not r.data:
        return
    interpret_response(r, c, app or "")


# --------------------------------------------------------------------------------------------
# Folding raw exchanges into logical ones


@dataclass
class Exchange:
    """One logical command and its response, made of one or more raw exchanges (command
    chaining, 6Cxx re-sends, GET RESPONSE after 61xx)."""

    command: CommandApdu
    response: ResponseApdu | None
    raw: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    sources: list[Any] = field(default_factory=list)  # the objects given (e.g. Apdu events)
    folded: list[str] = field(default_factory=list)  # what was folded, in words
    app: str | None = None

    @property
    def sw(self) -> int | None:
        return None if self.response is None else self.response.sw

    def summary(self) -> str:
        resp = self.response.summary() if self.response else "(no response)"
        return f"{self.command.summary()} -> {resp}"

    def describe(self, secrets: bool = False) -> list[str]:
        lines = self.command.describe(secrets)
        if self.response is None:
            lines.append("  -> no response recorded")
        else:
            lines.extend("  -> " + ln if i == 0 else "  " + ln
                         for i, ln in enumerate(self.response.describe()))
        if self.folded:
            lines.append(f"  ({len(self.raw)} raw exchanges: {'; '.join(self.folded)})")
        return lines

    def to_json(self, secrets: bool = False) -> dict[str, Any]:
        raw = []
        for cmd, resp in self.raw:
            span = None if secrets else pin_field(cmd)
            item: dict[str, Any] = {"command": cmd.hex() if span is None
                                    else cmd[:span[0]].hex(),
                                    "response": None if resp is None else resp.hex()}
            if span is not None:
                item |= {"masked": True, "masked_length": span[1]}
            raw.append(item)
        return {"command": self.command.to_json(secrets),
                "response": None if self.response is None else self.response.to_json(),
                "raw": raw, "folded": self.folded, "app": self.app}


def _pair(item: Any) -> tuple[bytes, bytes | None]:
    if isinstance(item, tuple | list):
        cmd, resp = item[0], item[1] if len(item) > 1 else None
    else:
        cmd, resp = getattr(item, "command", b""), getattr(item, "response", None)
    return bytes(cmd or b""), None if resp is None else bytes(resp)


def _sw_of(resp: bytes | None) -> int | None:
    return int.from_bytes(resp[-2:], "big") if resp is not None and len(resp) >= 2 else None


def _channel(cmd: bytes) -> int | None:
    return parse_cla(cmd[0]).channel if cmd else None


def _is_resend(prev: bytes, nxt: bytes, sw2: int) -> bool:
    """nxt is prev sent again with Le set to what a 6Cxx said."""
    a, b = decode_command(prev), decode_command(nxt)
    if not (a.ok and b.ok) or a.raw[:4] != b.raw[:4] or a.data != b.data:
        return False
    return b.le == (sw2 or 256)


def _is_get_response(cmd: bytes, channel: int | None) -> bool:
    return (len(cmd) in (4, 5, 7) and cmd[1] == 0xC0 and cmd[2:4] == b"\x00\x00"
            and _channel(cmd) == channel)


def _chain_next(cur: bytes, nxt: bytes) -> bool:
    """nxt continues the chain cur started: same instruction, same channel."""
    return len(nxt) >= 4 and nxt[1] == cur[1] and _channel(nxt) == _channel(cur)


def _unchained(cmd: CommandApdu, data: bytes) -> bytes:
    """The logical command of a chain: last part's header without the chaining bit, all the
    data, the last part's Le; extended form when the data needs it."""
    assert cmd.cla is not None and cmd.ins is not None
    head = bytes([cmd.cla.value & ~0x10 & 0xFF, cmd.ins, cmd.p1 or 0, cmd.p2 or 0])
    ext = len(data) > 255 or (cmd.le or 0) > 256
    if not data:
        body = b""
    elif ext:
        body = b"\x00" + len(data).to_bytes(2, "big") + data
    else:
        body = bytes([len(data)]) + data
    if cmd.le is not None:
        le = cmd.le
        if ext:
            body += (b"" if data else b"\x00") + (le % 65536).to_bytes(2, "big")
        else:
            body += bytes([le % 256])
    return head + body


def fold_exchanges(items: Iterable[Any], app: str | None = None) -> list[Exchange]:
    """Fold raw exchanges into logical ones. items: (command, response) pairs or objects with
    .command/.response (Apdu events); response None when not recorded. app: the application
    selected before the first item. SELECT by AID updates it per logical channel."""
    pairs: list[tuple[bytes, bytes | None]] = []
    sources: list[Any] = []
    for item in items:
        pairs.append(_pair(item))
        sources.append(item)
    apps: dict[int | None, str | None] = {0: app}
    out: list[Exchange] = []
    i = 0
    while i < len(pairs):
        ex, i = _fold_one(pairs, sources, i, apps)
        out.append(ex)
    return out


def _fold_one(pairs: Sequence[tuple[bytes, bytes | None]], sources: Sequence[Any], start: int,
              apps: dict[int | None, str | None]) -> tuple[Exchange, int]:
    i = start
    first_cmd = pairs[i][0]
    channel = _channel(first_cmd)
    app = apps.get(channel)
    notes: list[str] = []
    # 1. command chaining (CLA bit 10): parts answered 9000 until one without the bit
    data = bytearray()
    parts = 0
    while True:
        cmd, resp = pairs[i]
        dec = decode_command(cmd, app)
        if not (dec.ok and dec.cla is not None and dec.cla.chaining
                and dec.cla.kind in ("interindustry", "proprietary")):
            break
        if _sw_of(resp) != 0x9000 or i + 1 >= len(pairs) or not _chain_next(cmd, pairs[i + 1][0]):
            break
        data += dec.data
        parts += 1
        i += 1
    cmd, resp = pairs[i]
    last = decode_command(cmd, app)
    if parts:
        notes.append(f"command chaining: {parts + 1} parts joined")
        logical = decode_command(_unchained(last, bytes(data) + last.data), app) \
            if last.ok else last
    else:
        logical = last
    # 2. 6Cxx: the same command sent again with the Le the card asked for
    while (sw := _sw_of(resp)) is not None and sw >> 8 == 0x6C and i + 1 < len(pairs) \
            and _is_resend(cmd, pairs[i + 1][0], sw & 0xFF):
        notes.append(f"re-sent with Le={sw & 0xFF:02X} after {sw:04X}")
        i += 1
        cmd, resp = pairs[i]
        if not parts:
            logical = decode_command(cmd, app)
    # 3. 61xx: GET RESPONSE until the card has nothing more
    body = bytearray(resp[:-2] if resp is not None and len(resp) >= 2 else b"")
    fetched = 0
    while (sw := _sw_of(resp)) is not None and sw >> 8 == 0x61 and i + 1 < len(pairs) \
            and _is_get_response(pairs[i + 1][0], channel):
        i += 1
        fetched += 1
        cmd, resp = pairs[i]
        while (sw2 := _sw_of(resp)) is not None and sw2 >> 8 == 0x6C and i + 1 < len(pairs) \
                and _is_resend(cmd, pairs[i + 1][0], sw2 & 0xFF):
            notes.append(f"GET RESPONSE re-sent with Le={sw2 & 0xFF:02X}")
            i += 1
            cmd, resp = pairs[i]
        if resp is not None and len(resp) >= 2:
            body += resp[:-2]
    if fetched:
        notes.append(f"{fetched} GET RESPONSE after 61xx")
    response = None
    if resp is not None:
        response = decode_response(bytes(body) + resp[-2:] if len(resp) >= 2 else resp, logical)
    _track_app(logical, response, apps, channel)
    ex = Exchange(logical, response, list(pairs[start:i + 1]), list(sources[start:i + 1]),
                  notes, logical.app)
    return ex, i + 1


def _track_app(c: CommandApdu, r: ResponseApdu | None, apps: dict[int | None, str | None],
               channel: int | None) -> None:
    """Remember which application a channel selected, for naming later commands."""
    if r is None or r.sw is None:
        return
    success = r.sw == 0x9000 or r.sw >> 8 in (0x61, 0x62, 0x63)
    if c.ins == 0xA4 and c.p1 == 0x04 and success and c.data:
        apps[channel] = aid_info(c.data)[1]
    elif c.ins == 0x70 and c.p1 == 0x80 and success:
        apps.pop(c.p2, None)
