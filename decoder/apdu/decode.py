"""Decode smart-card APDUs (ISO/IEC 7816-4) for people reading a trace.

construct describes the fixed layouts (header, the seven Lc/Le cases, the class byte's bit
fields, GlobalPlatform responses); BER-TLV framing is in tlv.py and done by hand. Card traffic
is untrusted input: nothing here raises on bad bytes. What does not parse is kept as hex with
a note saying why, and the interpreted (never compiled) construct parsers are used.

This module fills the model (model.py: CommandApdu, ResponseApdu, Exchange) and folds raw
exchanges into logical ones. The parts live beside it: framing (header, class byte, Lc/Le
cases), sw (status words), pin (PIN fields), commands and responses (what each instruction's
fields mean), names (instruction names), tlv (BER-TLV). The package's front door
(apdu/__init__.py) is what the rest of p11spy uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from construct import ConstructError

from p11spy.decoder.apdu.commands import interpret_command
from p11spy.decoder.apdu.framing import COMMANDS, HEADER, parse_cla, pick_case
from p11spy.decoder.apdu.model import CommandApdu, Exchange, ResponseApdu
from p11spy.decoder.apdu.names import ins_name
from p11spy.decoder.apdu.pin import pin_field
from p11spy.decoder.apdu.responses import interpret_response
from p11spy.decoder.apdu.sw import sw_meaning
from p11spy.decoder.apdu.tlv import aid_info, hexs

# --------------------------------------------------------------------------------------------
# Small helpers


# --------------------------------------------------------------------------------------------
# Commands


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
