"""Decode smart-card APDUs (ISO/IEC 7816-4) for people reading a trace.

construct describes the fixed layouts (header, the seven Lc/Le cases, the class byte's bit
fields, GlobalPlatform responses); BER-TLV framing is in tlv.py and done by hand. Card traffic
is untrusted input: nothing here raises on bad bytes. What does not parse is kept as hex with
a note saying why, and the interpreted (never compiled) construct parsers are used.

Entry points: decode_command, decode_response, fold_exchanges, sw_meaning, carries_pin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from construct import (
    BitsInteger,
    BitStruct,
    Bytes,
    Const,
    ConstructError,
    Flag,
    GreedyBytes,
    Int8ub,
    Int16ub,
    Optional,
    Prefixed,
    Struct,
    Switch,
    Terminated,
    this,
)

from .apdu_names import APP_INS, ins_name
from .tlv import (
    PIV_ALGORITHMS,
    PIV_KEYS,
    PIV_OBJECTS,
    TlvNode,
    aid_info,
    hexs,
    is_clean,
    parse_tlv,
    render_tlv,
    tag_name,
    walk,
)

HEX_LINE = 16  # bytes per hex dump line
MAX_DUMP = 512  # bytes of data shown in describe() before "… N more bytes"

# --------------------------------------------------------------------------------------------
# Layouts

HEADER = Struct("cla" / Int8ub, "ins" / Int8ub, "p1" / Int8ub, "p2" / Int8ub)

# ISO 7816-3 cases; which one applies is decided from the length (see _pick_case).
BODIES: dict[str, Struct] = {
    "1": Struct(),
    "2S": Struct("le" / Int8ub),
    "3S": Struct("lc" / Int8ub, "data" / Bytes(this.lc)),
    "4S": Struct("lc" / Int8ub, "data" / Bytes(this.lc), "le" / Int8ub),
    "2E": Struct(Const(b"\x00"), "le" / Int16ub),
    "3E": Struct(Const(b"\x00"), "lc" / Int16ub, "data" / Bytes(this.lc)),
    "4E": Struct(Const(b"\x00"), "lc" / Int16ub, "data" / Bytes(this.lc), "le" / Int16ub),
}
COMMANDS: dict[str, Struct] = {
    case: Struct("header" / HEADER, "body" / body, Terminated) for case, body in BODIES.items()
}

# Class byte, ISO 7816-4 §5.4.1: first interindustry values 000x xxxx, further 01xx xxxx.
# GlobalPlatform lays out its proprietary classes (80-8F, C0-CF, E0-EF) the same way.
CLA_FIRST = BitStruct("proprietary" / Flag, "further" / Flag, "rfu" / Flag, "chaining" / Flag,
                      "sm" / BitsInteger(2), "channel" / BitsInteger(2))
CLA_FURTHER = BitStruct("proprietary" / Flag, "further" / Flag, "sm" / Flag, "chaining" / Flag,
                        "channel" / BitsInteger(4))

# GlobalPlatform INITIALIZE UPDATE response: the layout depends on the SCP number it names.
INIT_UPDATE_RESPONSE = Struct(
    "key_diversification_data" / Bytes(10),
    "key_version" / Int8ub,
    "scp" / Int8ub,
    "rest" / Switch(this.scp, {
        1: Struct("card_challenge" / Bytes(8), "card_cryptogram" / Bytes(8)),
        2: Struct("sequence_counter" / Bytes(2), "card_challenge" / Bytes(6),
                  "card_cryptogram" / Bytes(8)),
        3: Struct("i_parameter" / Int8ub, "card_challenge" / Bytes(8),
                  "card_cryptogram" / Bytes(8), "sequence_counter" / Optional(Bytes(3))),
    }, default=GreedyBytes),
    Terminated,
)

# Card Production Life Cycle data (GP GET DATA 9F7F), 42 bytes after the tag.
CPLC = Struct(*[name / Bytes(size) for name, size in [
    ("ic_fabricator", 2), ("ic_type", 2), ("os_id", 2), ("os_release_date", 2),
    ("os_release_level", 2), ("ic_fabrication_date", 2), ("ic_serial_number", 4),
    ("ic_batch_id", 2), ("ic_module_fabricator", 2), ("ic_module_packaging_date", 2),
    ("icc_manufacturer", 2), ("ic_embedding_date", 2), ("ic_pre_personalizer", 2),
    ("ic_pre_perso_date", 2), ("ic_pre_perso_equipment", 4), ("ic_personalizer", 2),
    ("ic_perso_date", 2), ("ic_perso_equipment", 4),
]], GreedyBytes)

_LV = Prefixed(Int8ub, GreedyBytes)
GP_INSTALL: dict[str, Struct] = {
    "install": Struct("load_file_aid" / _LV, "module_aid" / _LV, "application_aid" / _LV,
                      "privileges" / _LV, "parameters" / _LV, "token" / _LV, GreedyBytes),
    "load": Struct("load_file_aid" / _LV, "security_domain_aid" / _LV, "hash" / _LV,
                   "parameters" / _LV, "token" / _LV, GreedyBytes),
}
GP_EXTERNAL_AUTH = Struct("host_cryptogram" / Bytes(8), "mac" / Bytes(8), Terminated)


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


def _table(table: dict[int, str], value: int, default: str = "proprietary or RFU") -> str:
    return table.get(value, default)


def _bits(value: int, flags: dict[int, str]) -> list[str]:
    return [name for bit, name in flags.items() if value & bit]


# --------------------------------------------------------------------------------------------
# Class byte


SM_FIRST = {0: "no secure messaging", 1: "proprietary secure messaging",
            2: "secure messaging, header not authenticated",
            3: "secure messaging, header authenticated"}
SM_FURTHER = {0: "no secure messaging", 1: "secure messaging, header not authenticated"}


@dataclass
class Cla:
    """The class byte taken apart: kind, logical channel, chaining and secure messaging."""

    value: int
    kind: str  # "interindustry", "proprietary", "reserved", "invalid"
    channel: int | None = None
    chaining: bool = False
    sm: int = 0  # the SM bits' value; 0 = none
    sm_text: str = "no secure messaging"

    @property
    def secure_messaging(self) -> bool:
        return self.sm != 0

    def describe(self) -> str:
        if self.kind in ("invalid", "reserved"):
            return {"invalid": "invalid class (FF: PC/SC reader pseudo-APDU or PPS)",
                    "reserved": "reserved for future use (001x xxxx)"}[self.kind]
        text = f"{self.kind}, channel {self.channel}, {self.sm_text}"
        if self.chaining:
            text += ", command chaining (more parts follow)"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"value": f"{self.value:02X}", "kind": self.kind, "channel": self.channel,
                "chaining": self.chaining, "secure_messaging": self.sm_text}


def parse_cla(cla: int) -> Cla:
    """Take the class byte apart; proprietary classes use GlobalPlatform's reading."""
    if cla == 0xFF:
        return Cla(cla, "invalid")
    if cla & 0xE0 == 0x20:
        return Cla(cla, "reserved")
    kind = "proprietary" if cla & 0x80 else "interindustry"
    if cla & 0x40:
        f = CLA_FURTHER.parse(bytes([cla]))
        sm_text = SM_FURTHER[int(f.sm)]
        return Cla(cla, kind, 4 + f.channel, bool(f.chaining), int(f.sm), sm_text)
    f = CLA_FIRST.parse(bytes([cla]))
    sm_text = SM_FIRST[f.sm]
    if kind == "proprietary" and f.sm:
        sm_text = "secure messaging (GlobalPlatform secure channel)"
    return Cla(cla, kind, f.channel, bool(f.chaining), f.sm, sm_text)


# --------------------------------------------------------------------------------------------
# Status words

SW_TEXT: dict[int, str] = {
    0x9000: "success",
    0x6200: "warning: no information, state unchanged",
    0x6281: "warning: part of the returned data may be corrupted",
    0x6282: "warning: end of file or record reached before Le bytes",
    0x6283: "warning: selected file deactivated (or card locked)",
    0x6284: "warning: FCI not formatted per ISO 7816-4",
    0x6285: "warning: selected file in termination state",
    0x6286: "warning: no input data available from a sensor",
    0x6300: "warning: no information, state changed (often: verification failed)",
    0x6310: "more data available (GET STATUS: ask for the next occurrence)",
    0x6381: "warning: file filled up by the last write",
    0x6400: "execution error, state unchanged",
    0x6401: "execution error: immediate response required by the card",
    0x6500: "execution error, state changed",
    0x6581: "execution error: memory failure",
    0x6700: "wrong length (Lc or Le)",
    0x6800: "function in CLA not supported",
    0x6881: "logical channel not supported",
    0x6882: "secure messaging not supported",
    0x6883: "last command of the chain expected",
    0x6884: "command chaining not supported",
    0x6900: "command not allowed",
    0x6981: "command incompatible with file structure",
    0x6982: "security status not satisfied (PIN or authentication missing)",
    0x6983: "authentication method blocked (PIN or key blocked)",
    0x6984: "reference data not usable",
    0x6985: "conditions of use not satisfied",
    0x6986: "command not allowed: no current EF",
    0x6987: "expected secure messaging data objects missing",
    0x6988: "secure messaging data objects incorrect",
    0x6999: "applet selection failed (Java Card)",
    0x6A00: "wrong parameters P1-P2",
    0x6A80: "incorrect parameters in the data field",
    0x6A81: "function not supported",
    0x6A82: "file or application not found",
    0x6A83: "record not found",
    0x6A84: "not enough memory space in the file",
    0x6A85: "Lc inconsistent with TLV structure",
    0x6A86: "incorrect parameters P1-P2",
    0x6A87: "Lc inconsistent with P1-P2",
    0x6A88: "referenced data (key, PIN, data object) not found",
    0x6A89: "file already exists",
    0x6A8A: "DF name already exists",
    0x6B00: "wrong parameters P1-P2 (e.g. offset outside the EF)",
    0x6D00: "instruction not supported (or wrong application selected)",
    0x6E00: "class not supported",
    0x6F00: "no precise diagnosis (often an applet exception)",
}


def _sw_61(sw: int) -> str:
    n = sw & 0xFF
    return ("256 or more bytes available" if n == 0 else f"{n} more bytes available") + \
        ": use GET RESPONSE"


def _sw_6c(sw: int) -> str:
    return f"wrong Le: exact length is {(sw & 0xFF) or 256}; resend with Le={sw & 0xFF:02X}"


def _sw_63c(sw: int) -> str:
    n = sw & 0x0F
    if n == 0:
        return "verification failed, no tries left (now blocked)"
    return f"verification failed, {n} {'try' if n == 1 else 'tries'} left"


# (mask, value, text or text function), tried in order after the exact table.
SW_PATTERNS: list[tuple[int, int, str | Callable[[int], str]]] = [
    (0xFF00, 0x6100, _sw_61), (0xFF00, 0x6C00, _sw_6c), (0xFFF0, 0x63C0, _sw_63c),
    (0xFF00, 0x6000, "invalid status (60 is the T=0 NULL procedure byte)"),
    (0xFF00, 0x6200, "warning, state unchanged"), (0xFF00, 0x6300, "warning, state changed"),
    (0xFF00, 0x6400, "execution error, state unchanged"),
    (0xFF00, 0x6500, "execution error, state changed"),
    (0xFF00, 0x6600, "security-related error"), (0xFF00, 0x6700, "wrong length (proprietary)"),
    (0xFF00, 0x6800, "function in CLA not supported"), (0xFF00, 0x6900, "command not allowed"),
    (0xFF00, 0x6A00, "wrong parameters"), (0xFF00, 0x6B00, "wrong parameters P1-P2"),
    (0xFF00, 0x6D00, "instruction not supported (proprietary)"),
    (0xFF00, 0x6E00, "class not supported (proprietary)"),
    (0xFF00, 0x6F00, "no precise diagnosis (proprietary)"),
    (0xF000, 0x9000, "application-specific status"),
]


def sw_meaning(sw: int) -> str:
    """A short text for a status word (SW1 SW2 as one int, e.g. 0x6A82)."""
    if sw in SW_TEXT:
        return SW_TEXT[sw]
    for mask, value, text in SW_PATTERNS:
        if sw & mask == value:
            return text(sw) if callable(text) else text
    return "unknown status word"


def sw_status(sw: int | None) -> str:
    """A coarse class for colouring: ok, more (61xx/6Cxx), warning, error, app, or none."""
    if sw is None:
        return "none"
    if sw == 0x9000:
        return "ok"
    if sw >> 8 in (0x61, 0x6C):
        return "more"
    if sw & 0xFFF0 == 0x63C0:
        return "error"
    if sw >> 8 in (0x62, 0x63):
        return "warning"
    if sw >> 12 == 0x9:
        return "app"
    return "error"


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
        return _carries_pin(self)

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


def _pick_case(body: bytes) -> tuple[str | None, str | None]:
    """Which ISO 7816-3 case the bytes after the header are, or why none fits."""
    n = len(body)
    if n == 0:
        return "1", None
    if n == 1:
        return "2S", None
    if body[0]:
        if n == 1 + body[0]:
            return "3S", None
        if n == 2 + body[0]:
            return "4S", None
        return None, f"Lc={body[0]} but {n - 1} bytes follow it"
    if n == 3:
        return "2E", None
    if n < 3:
        return None, "extended length field truncated"
    lc = int.from_bytes(body[1:3], "big")
    if lc == 0:
        return None, "extended Lc of 0 with data following"
    if n == 3 + lc:
        return "3E", None
    if n == 5 + lc:
        return "4E", None
    return None, f"extended Lc={lc} but {n - 3} bytes follow it"


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
    case, problem = _pick_case(b[4:])
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
    _interpret(c)


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
# What P1, P2 and the data mean, per instruction. Each handler appends to c.params/details.

SELECT_P1 = {0x00: "select MF, DF or EF by file identifier", 0x01: "select child DF",
             0x02: "select EF under the current DF", 0x03: "select parent DF",
             0x04: "select by DF name (AID)", 0x08: "select by path from the MF",
             0x09: "select by path from the current DF"}
SELECT_OCCURRENCE = {0: "first or only occurrence", 1: "last occurrence", 2: "next occurrence",
                     3: "previous occurrence"}
SELECT_RETURN = {0x00: "return FCI template", 0x04: "return FCP template",
                 0x08: "return FMD template", 0x0C: "no response data"}


def _select(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: {_table(SELECT_P1, c.p1)}"))
    p2 = f"{SELECT_OCCURRENCE[c.p2 & 3]}; {SELECT_RETURN[c.p2 & 0x0C]}"
    if c.p2 & 0xF0:
        p2 += f"; bits {c.p2 & 0xF0:02X} proprietary"
    c.params.append(("P2", f"{c.p2:02X}: {p2}"))
    if c.p1 == 0x04 and c.data:
        name, app = aid_info(c.data)
        c.details.append(f"AID {hexs(c.data)}" + (f" ({name})" if name else ""))
        c.brief = name or hexs(c.data)
        c.app = app or c.app
    elif c.p1 in (0x00, 0x01, 0x02) and c.data:
        fid = c.data.hex().upper()
        c.details.append(f"file id {fid}" + (" (MF)" if fid == "3F00" else ""))
        c.brief = fid
    elif c.p1 == 0x00 and not c.data:
        c.details.append("no data: select the MF")
        c.brief = "MF"
    elif c.p1 in (0x08, 0x09) and c.data:
        path = " / ".join(c.data[i:i + 2].hex().upper() for i in range(0, len(c.data), 2))
        c.details.append(f"path {path}")
        c.brief = path


def _binary(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None and c.ins is not None
    if c.ins & 1:
        fid = "current EF" if c.p1p2 == 0 else f"file id {c.p1p2:04X}"
        c.params.append(("P1P2", f"{c.p1p2:04X}: {fid}"))
        c.brief = fid
        _tlv_details(c, c.data, "")
        return
    if c.p1 & 0x80:
        c.params.append(("P1", f"{c.p1:02X}: short EF identifier {c.p1 & 0x1F}"))
        c.params.append(("P2", f"{c.p2:02X}: offset {c.p2}"))
        c.brief = f"SFI {c.p1 & 0x1F} offset {c.p2}"
    else:
        off = ((c.p1 & 0x7F) << 8) | c.p2
        c.params.append(("P1P2", f"{c.p1p2:04X}: offset {off} in the current EF"))
        c.brief = f"offset {off}"
    if c.le is not None:
        c.brief += f", {c.le} bytes"


RECORD_P2 = {0: "first occurrence", 1: "last occurrence", 2: "next occurrence",
             3: "previous occurrence", 4: "record number P1", 5: "records from P1 to the last",
             6: "records from the last to P1", 7: "RFU"}


def _record(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: " + ("current record" if c.p1 == 0
                                              else f"record {c.p1}")))
    sfi = c.p2 >> 3
    where = "current EF" if sfi == 0 else f"short EF identifier {sfi}"
    c.params.append(("P2", f"{c.p2:02X}: {where}; {RECORD_P2[c.p2 & 7]}"))
    c.brief = f"record {c.p1}" + (f" SFI {sfi}" if sfi else "")


# Reference data (PIN) references. Numbers are P2 of VERIFY / CHANGE / RESET RETRY.
KEY_REFS: dict[str, dict[int, str]] = {
    "piv": {0x00: "global PIN", 0x80: "PIV application PIN", 0x81: "PIN unblocking key (PUK)",
            0x96: "primary finger OCC", 0x97: "secondary finger OCC", 0x98: "pairing code"},
    "openpgp": {0x81: "PW1 (user PIN, for signing)",
                0x82: "PW1 (user PIN, for decryption/authentication)",
                0x83: "PW3 (admin PIN)"},
}
APP_LABEL = {"piv": "PIV", "openpgp": "OpenPGP"}
PIN_P1: dict[int, dict[int, str]] = {
    0x20: {0x00: "verify", 0xFF: "reset the verification status (log out)"},
    0x24: {0x00: "data = current and new reference data", 0x01: "data = new reference data"},
    0x2C: {0x00: "data = resetting code and new reference data",
           0x01: "data = resetting code only", 0x02: "data = new reference data only",
           0x03: "no data"},
}


def ref_name(p2: int, app: str | None) -> str:
    """The reference data a P2 names: the application's name, else the ISO reading."""
    iso = f"{'specific' if p2 & 0x80 else 'global'} reference data, number {p2 & 0x1F}"
    if app is None:  # unknown application: offer every reading
        names = [f"{APP_LABEL[a]}: {t[p2]}" for a, t in KEY_REFS.items() if p2 in t]
    else:
        names = [KEY_REFS[app][p2]] if p2 in KEY_REFS.get(app, {}) else []
    return f"{iso} ({' / '.join(names)})" if names else iso


def _pin(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None and c.ins is not None
    p1_table = PIN_P1.get(c.ins & 0xFE, {})
    c.params.append(("P1", f"{c.p1:02X}: {_table(p1_table, c.p1, 'RFU')}"))
    c.params.append(("P2", f"{c.p2:02X}: {ref_name(c.p2, c.app)}"))
    c.brief = f"{c.p2:02X}"
    known = [t[c.p2] for a, t in KEY_REFS.items() if c.p2 in t and c.app in (None, a)]
    if len(known) == 1:
        c.brief = known[0]
    if not c.data:
        if c.ins & 0xFE == 0x20 and c.p1 == 0:
            c.details.append("no data: asks whether verified / how many tries are left")
            c.brief += ", status query"
        return
    if c.cla is not None and c.cla.secure_messaging:
        c.details.append(f"data ({len(c.data)} bytes) protected by secure messaging")
        _tlv_details(c, c.data, "sm")
        return
    c.details.append(f"reference data: {pin_summary(c.data, c.ins, c.app)} (not shown)")
    c.brief += f", {len(c.data)} bytes"


def _get_put_data(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None and c.ins is not None
    p1p2 = c.p1p2 or 0
    ctx = c.app or ""
    if c.ins & 1:  # CB/DB: P1P2 names a file, the data names the object
        where = "current DF" if p1p2 == 0x3FFF else f"file id {p1p2:04X}"
        c.params.append(("P1P2", f"{p1p2:04X}: {where}"))
        _tlv_details(c, c.data, ctx)
        if c.tlv and any(n.fmt == "secret" for n in walk(c.tlv)):
            c.secret = True  # OpenPGP key import (extended header list with 5F48)
        oid = c.tlv[0].find(0x5C) if c.tlv else None
        if oid is not None and oid.value:
            obj = int.from_bytes(oid.value, "big")
            c.brief = PIV_OBJECTS.get(obj, oid.value.hex().upper())
        return
    tag = c.p2 if c.p1 == 0 else p1p2
    name = tag_name(tag, None, ctx) or "unknown tag"
    if c.p1 == 0 and c.p2 == 0:
        name = "no tag"
    c.params.append(("P1P2", f"{p1p2:04X}: tag {tag:02X} ({name})"))
    c.brief = f"{tag:02X} {name}"
    if c.data:
        if c.ins == 0xDA and tag == 0xD3:  # OpenPGP: sets the resetting code
            c.details.append(f"data: {len(c.data)} bytes (resetting code, not shown)")
            c.secret = True
        else:
            _tlv_details(c, c.data, ctx)


def _gen_auth(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    if c.app == "piv" or c.ins == 0x87:
        alg = PIV_ALGORITHMS.get(c.p1, "unknown algorithm")
        key = PIV_KEYS.get(c.p2, "unknown key reference")
        c.params.append(("P1", f"{c.p1:02X}: algorithm {alg}"))
        c.params.append(("P2", f"{c.p2:02X}: {key}"))
        c.brief = f"{key} ({alg})"
    else:
        c.params.append(("P1", f"{c.p1:02X}: algorithm reference"))
        c.params.append(("P2", f"{c.p2:02X}: {ref_name(c.p2, None)}"))
    _tlv_details(c, c.data, "piv" if c.app is None else c.app)
    if c.tlv:
        dyn = c.tlv[0]
        asks = [n.name for n in dyn.children if n.kind == "tlv" and n.name and not n.value]
        gives = [n.name for n in dyn.children if n.kind == "tlv" and n.name and n.value]
        if gives or asks:
            c.details.append("asks for: " + (", ".join(asks) or "nothing") +
                             "; gives: " + (", ".join(gives) or "nothing"))


PGP_GENERATE_P1 = {0x80: "generate a key pair", 0x81: "read the existing public key"}
PGP_CRT = {0xB6: "signature key", 0xB8: "decryption key", 0xA4: "authentication key"}


def _generate(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    pgp = c.app == "openpgp" or (c.app is None and c.p1 in (0x80, 0x81) and c.p2 == 0)
    if pgp:
        c.params.append(("P1", f"{c.p1:02X}: {_table(PGP_GENERATE_P1, c.p1, 'RFU')}"))
        c.params.append(("P2", f"{c.p2:02X}"))
        if c.data:
            crt = PGP_CRT.get(c.data[0], "unknown key")
            c.brief = f"{PGP_GENERATE_P1.get(c.p1, '')}: {crt}"
        _tlv_details(c, c.data, "openpgp")
        return
    key = PIV_KEYS.get(c.p2, "key reference")
    c.params.append(("P1", f"{c.p1:02X}"))
    c.params.append(("P2", f"{c.p2:02X}: {key}"))
    _tlv_details(c, c.data, "piv")
    alg = c.tlv[0].find(0x80) if c.tlv else None
    c.brief = key + (f" ({PIV_ALGORITHMS.get(alg.value[0], '?')})"
                     if alg is not None and len(alg.value) == 1 else "")


PSO_P1P2 = {
    0x9E9A: "compute digital signature", 0x9EAC: "compute digital signature (template)",
    0x9EBC: "compute digital signature (template)", 0x8086: "decipher",
    0x8084: "decipher", 0x8082: "decipher", 0x8680: "encipher", 0x8480: "encipher",
    0x8280: "encipher", 0x9080: "hash", 0x90A0: "hash", 0x8E80: "compute cryptographic checksum",
    0x00A2: "verify cryptographic checksum", 0x00A8: "verify digital signature",
    0x0092: "verify certificate", 0x00AE: "verify certificate", 0x00BE: "verify certificate",
}


def _pso(c: CommandApdu) -> None:
    p1p2 = c.p1p2 or 0
    op = PSO_P1P2.get(p1p2, "P1 = tag of the response, P2 = tag of the data")
    c.params.append(("P1P2", f"{p1p2:04X}: {op}"))
    c.brief = op if p1p2 in PSO_P1P2 else f"{p1p2:04X}"
    if p1p2 == 0x8086 and c.data:
        pad = {0x00: "RSA cryptogram", 0x02: "AES cryptogram", 0xA6: "ECDH: ephemeral key"}
        c.details.append(f"padding indicator {c.data[0]:02X} "
                         f"({pad.get(c.data[0], 'unknown')}), {len(c.data)} bytes")
        if c.data[0] == 0xA6:
            _tlv_details(c, c.data, c.app or "")


MSE_OPS = {1: "SET", 2: "STORE", 3: "RESTORE", 4: "ERASE"}
MSE_FLAGS = {0x10: "secure messaging in command", 0x20: "secure messaging in response",
             0x40: "computation / decipherment / internal authentication / key agreement",
             0x80: "verification / encipherment / external authentication"}
CRT_TAGS = {0xA4: "authentication", 0xA6: "key agreement", 0xAA: "hash code",
            0xB4: "cryptographic checksum", 0xB6: "digital signature", 0xB8: "confidentiality"}


def _mse(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    op = MSE_OPS.get(c.p1 & 0x0F, "RFU")
    flags = _bits(c.p1, MSE_FLAGS)
    c.params.append(("P1", f"{c.p1:02X}: {op}" + (f" for {'; '.join(flags)}" if flags else "")))
    if op == "SET":
        c.params.append(("P2", f"{c.p2:02X}: CRT {_table(CRT_TAGS, c.p2)}"))
        c.brief = f"SET {CRT_TAGS.get(c.p2, f'{c.p2:02X}')}"
    else:
        c.params.append(("P2", f"{c.p2:02X}: security environment number {c.p2}"))
        c.brief = f"{op} SE {c.p2}"
    _tlv_details(c, c.data, "mse")


def _get_response(c: CommandApdu) -> None:
    c.params.append(("P1P2", f"{c.p1p2 or 0:04X}" + ("" if not c.p1p2 else ": should be 0000")))
    if c.le is not None:
        c.brief = f"{c.le} bytes"
        c.details.append(f"asks for up to {c.le} more response bytes")


def _auth(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: " + ("no information given" if c.p1 == 0
                                              else "algorithm reference")))
    c.params.append(("P2", f"{c.p2:02X}: " + ("no information given" if c.p2 == 0
                                              else ref_name(c.p2, None))))
    if c.ins == 0x84 and c.le is not None:
        c.brief = f"{c.le} bytes"


def _manage_channel(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    op = {0x00: "open", 0x80: "close"}.get(c.p1, "RFU")
    c.params.append(("P1", f"{c.p1:02X}: {op}"))
    c.params.append(("P2", f"{c.p2:02X}: " + ("card assigns the channel" if c.p2 == 0 and
                                              op == "open" else f"channel {c.p2}")))
    c.brief = f"{op} {c.p2 or ''}".strip()


def _file_lifecycle(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    if c.app == "openpgp" or (c.p1p2 == 0 and not c.data):
        c.params.append(("P1P2", f"{c.p1p2 or 0:04X}: the current application / file"))
    else:
        c.params.append(("P1", f"{c.p1:02X}: {_table(SELECT_P1, c.p1)}"))
        c.params.append(("P2", f"{c.p2:02X}"))


# GlobalPlatform (proprietary class)

GP_SECURITY_LEVEL = {0x01: "C-MAC", 0x02: "C-DECRYPTION", 0x10: "R-MAC", 0x20: "R-ENCRYPTION"}
GP_STATUS_P1 = {0x80: "Issuer Security Domain", 0x40: "applications and security domains",
                0x20: "executable load files", 0x10: "executable load files and modules"}
GP_INSTALL_P1 = {0x02: "for load", 0x04: "for install", 0x08: "for make selectable",
                 0x10: "for extradition", 0x20: "for personalization",
                 0x40: "for registry update"}
GP_SET_STATUS_P1 = {0x80: "Issuer Security Domain", 0x40: "application or security domain",
                    0x60: "security domain and its applications"}
GP_STORE_ENC = {0x00: "no encryption information", 0x20: "application-dependent encryption",
                0x60: "encrypted data", 0x40: "RFU"}
GP_STORE_FMT = {0x00: "no structure information", 0x08: "DGI format", 0x10: "BER-TLV format",
                0x18: "RFU"}


def _gp_init_update(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: key version " + ("(any / default)" if c.p1 == 0
                                                         else str(c.p1))))
    c.params.append(("P2", f"{c.p2:02X}: key identifier"))
    if c.data:
        c.details.append(f"host challenge: {hexs(c.data)}")
    c.brief = f"key version {c.p1:02X}"


def _gp_ext_auth(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    if c.cla is None or c.cla.kind != "proprietary":
        _auth(c)
        return
    level = _bits(c.p1, GP_SECURITY_LEVEL)
    text = " + ".join(level) if level else "no secure messaging (authentication only)"
    c.params.append(("P1", f"{c.p1:02X}: security level {text}"))
    c.params.append(("P2", f"{c.p2:02X}"))
    c.brief = text
    try:
        p = GP_EXTERNAL_AUTH.parse(c.data)
        c.details += [f"host cryptogram: {hexs(p.host_cryptogram)}", f"C-MAC: {hexs(p.mac)}"]
    except ConstructError:
        pass  # not the usual 16 bytes: the generic hex dump shows it


def _gp_get_status(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: {_table(GP_STATUS_P1, c.p1)}"))
    fmt = "TLV format" if c.p2 & 0x02 else "legacy format"
    occ = "next occurrence" if c.p2 & 0x01 else "first or all occurrences"
    c.params.append(("P2", f"{c.p2:02X}: {fmt}, {occ}"))
    c.brief = GP_STATUS_P1.get(c.p1, f"{c.p1:02X}")
    _tlv_details(c, c.data, "gp")


def _gp_install(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    roles = _bits(c.p1, GP_INSTALL_P1)
    more = ", more commands follow" if c.p1 & 0x80 else ""
    c.params.append(("P1", f"{c.p1:02X}: {' + '.join(roles) or 'RFU'}{more}"))
    c.params.append(("P2", f"{c.p2:02X}"))
    c.brief = " + ".join(roles)
    layout = "install" if c.p1 & 0x04 else "load" if c.p1 & 0x02 else None
    if layout and c.data:
        try:
            p = GP_INSTALL[layout].parse(c.data)
        except ConstructError:
            c.notes.append("INSTALL data is not the expected list of length-value fields")
            return
        for key, value in p.items():
            if key.startswith("_") or not isinstance(value, bytes) or not value:
                continue
            name = aid_info(value)[0] if key.endswith("aid") else None
            c.details.append(f"{key.replace('_', ' ')}: {hexs(value, 32)}"
                             + (f" ({name})" if name else ""))


def _gp_delete(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}" + (": more commands follow" if c.p1 & 0x80 else "")))
    c.params.append(("P2", f"{c.p2:02X}: " + ("delete object and related objects"
                                              if c.p2 & 0x80 else "delete object")))
    _tlv_details(c, c.data, "gp")
    aid = c.tlv[0].find(0x4F) if c.tlv else None
    if aid is not None:
        c.brief = hexs(aid.value)


def _gp_load(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: " + ("last block" if c.p1 & 0x80 else "more blocks")))
    c.params.append(("P2", f"{c.p2:02X}: block number {c.p2}"))
    c.brief = f"block {c.p2}" + (" (last)" if c.p1 & 0x80 else "")


def _gp_set_status(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: {_table(GP_SET_STATUS_P1, c.p1)}"))
    c.params.append(("P2", f"{c.p2:02X}: new life cycle state"))
    if c.data:
        c.details.append(f"AID {hexs(c.data)}")


def _gp_store_data(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    last = "last block" if c.p1 & 0x80 else "more blocks"
    c.params.append(("P1", f"{c.p1:02X}: {last}, {GP_STORE_ENC[c.p1 & 0x60]}, "
                           f"{GP_STORE_FMT[c.p1 & 0x18]}"))
    c.params.append(("P2", f"{c.p2:02X}: block number {c.p2}"))
    if c.p1 & 0x18 == 0x10 and c.p1 & 0x60 != 0x60:
        _tlv_details(c, c.data, "gp")


def _gp_put_key(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: " + ("new key set" if c.p1 & 0x7F == 0 else
                                              f"replace key version {c.p1 & 0x7F}")))
    c.params.append(("P2", f"{c.p2:02X}: key identifier {c.p2 & 0x7F}"
                           + (", several keys" if c.p2 & 0x80 else "")))
    c.details.append(f"key data: {len(c.data)} bytes (encrypted key components, not shown)")
    c.secret = True


def _gp_get_data(c: CommandApdu) -> None:
    p1p2 = c.p1p2 or 0
    name = tag_name(p1p2 if c.p1 else p1p2 & 0xFF, None, "gp") or "unknown tag"
    c.params.append(("P1P2", f"{p1p2:04X}: {name}"))
    c.brief = name


def _yk_slot(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    slot = c.p2 if c.ins == 0xF7 else c.p1
    c.params.append(("P1P2", f"{c.p1p2 or 0:04X}: slot {slot:02X} "
                             f"({PIV_KEYS.get(slot, KEY_REFS['piv'].get(slot, '?'))})"))
    c.brief = f"slot {slot:02X}"


def _yk_retries(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: PIN tries {c.p1}"))
    c.params.append(("P2", f"{c.p2:02X}: PUK tries {c.p2}"))
    c.brief = f"PIN {c.p1}, PUK {c.p2}"


def _yk_key_material(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    if c.ins == 0xFE:
        c.params.append(("P1", f"{c.p1:02X}: algorithm {PIV_ALGORITHMS.get(c.p1, '?')}"))
        c.params.append(("P2", f"{c.p2:02X}: {PIV_KEYS.get(c.p2, 'key reference')}"))
        c.brief = PIV_KEYS.get(c.p2, f"{c.p2:02X}")
    else:
        touch = {0xFF: "no touch required", 0xFE: "touch required"}
        c.params.append(("P1", f"{c.p1:02X}: {_table(touch, c.p1, 'RFU')}"))
        c.params.append(("P2", f"{c.p2:02X}: {PIV_KEYS.get(c.p2, 'key reference')}"))
    c.details.append(f"key material: {len(c.data)} bytes (not shown)")
    c.secret = True


Handler = Callable[[CommandApdu], None]

VENDOR_HANDLERS: dict[str, dict[int, Handler]] = {
    "piv": {0xF7: _yk_slot, 0xF9: _yk_slot, 0xFA: _yk_retries, 0xFE: _yk_key_material,
            0xFF: _yk_key_material},
}

ISO_HANDLERS: dict[int, Handler] = {
    0xA4: _select, 0xB0: _binary, 0xB1: _binary, 0xD6: _binary, 0xD7: _binary, 0xD0: _binary,
    0xD1: _binary, 0x0E: _binary, 0x0F: _binary, 0xA0: _binary, 0xA1: _binary,
    0xB2: _record, 0xB3: _record, 0xDC: _record, 0xDD: _record, 0xD2: _record,
    0x20: _pin, 0x21: _pin, 0x24: _pin, 0x25: _pin, 0x2C: _pin, 0x2D: _pin, 0x26: _pin,
    0x28: _pin, 0xCA: _get_put_data, 0xCB: _get_put_data, 0xDA: _get_put_data,
    0xDB: _get_put_data, 0x86: _gen_auth, 0x87: _gen_auth, 0x46: _generate, 0x47: _generate,
    0x2A: _pso, 0x22: _mse, 0xC0: _get_response, 0x82: _auth, 0x84: _auth, 0x88: _auth,
    0x70: _manage_channel, 0x44: _file_lifecycle, 0x04: _file_lifecycle,
    0xE6: _file_lifecycle, 0xE8: _file_lifecycle,
}
GP_HANDLERS: dict[int, Handler] = {
    0x50: _gp_init_update, 0x82: _gp_ext_auth, 0xF2: _gp_get_status, 0xE6: _gp_install,
    0xE4: _gp_delete, 0xE8: _gp_load, 0xF0: _gp_set_status, 0xE2: _gp_store_data,
    0xD8: _gp_put_key, 0xCA: _gp_get_data, 0xCB: _gp_get_data, 0xC0: _get_response,
}


def _interpret(c: CommandApdu) -> None:
    assert c.cla is not None and c.ins is not None
    if c.cla.kind == "proprietary":
        handler = GP_HANDLERS.get(c.ins) if c.app in (None, "gp") else None
    elif c.app in APP_INS and c.ins in APP_INS[c.app]:  # vendor extension inside the app
        handler = VENDOR_HANDLERS.get(c.app, {}).get(c.ins)
    else:
        handler = ISO_HANDLERS.get(c.ins)
    if handler is not None:
        handler(c)
    elif c.data:
        _tlv_details(c, c.data, c.app or "", quiet=True)


def _tlv_details(c: CommandApdu, data: bytes, ctx: str, quiet: bool = False) -> None:
    """Show the data as a TLV tree when it is one; quiet: only when it parses cleanly."""
    if not data:
        return
    nodes = parse_tlv(data, ctx)
    if quiet and not (is_clean(nodes) and nodes[0].name):
        return
    c.tlv = nodes
    c.details.append(f"data ({len(data)} bytes):")
    c.details.extend(render_tlv(nodes, 1))


# --------------------------------------------------------------------------------------------
# PINs


def pin_class(data: bytes) -> str:
    """What kind of bytes a reference data field holds, without saying what they are."""
    if len(data) == 8 and data[0] >> 4 == 2 and 4 <= data[0] & 0x0F <= 12:
        digits = data[0] & 0x0F
        return f"ISO 9564 format-2 PIN block ({digits} digits)"
    core = data.rstrip(b"\xff")
    pad = len(data) - len(core)
    if not core:
        kind = "only FF bytes"
    elif all(0x30 <= x <= 0x39 for x in core):
        kind = "ASCII digits"
    elif all(0xF0 <= x <= 0xF9 for x in core):
        kind = "EBCDIC digits"
    elif all(0x20 <= x < 0x7F for x in core):
        kind = "ASCII characters"
    elif core.rstrip(b"\x00") != core and all(0x30 <= x <= 0x39 for x in core.rstrip(b"\x00")):
        kind = "ASCII digits padded with 00"
    else:
        kind = "binary (not ASCII text)"
    text = f"{len(core)} {kind}" if core else kind
    return text + (f" + {pad} bytes FF padding" if pad and core else "")


def pin_summary(data: bytes, ins: int | None = None, app: str | None = None) -> str:
    """Length and kind of PIN data; CHANGE/RESET data of 16 bytes is two 8-byte blocks."""
    if ins is not None and ins & 0xFE in (0x24, 0x2C) and len(data) == 16 and app != "openpgp":
        return (f"16 bytes: first block {pin_class(data[:8])}; "
                f"second block {pin_class(data[8:])}")
    return f"{len(data)} bytes: {pin_class(data)}"


PIN_INS = {0x20, 0x21, 0x24, 0x25, 0x2C, 0x2D}


def _carries_pin(c: CommandApdu) -> bool:
    return (c.ok and c.ins in PIN_INS and bool(c.data) and c.cla is not None
            and c.cla.kind in ("interindustry", "proprietary") and not c.cla.secure_messaging)


def carries_pin(command: bytes) -> bool:
    """True when a command's data field is reference data (a PIN, PUK or resetting code)
    sent in clear: VERIFY, CHANGE REFERENCE DATA or RESET RETRY COUNTER with data and no
    secure messaging. Under secure messaging the data is a cryptogram, not a PIN."""
    span = pin_field(command)
    return span is not None


def pin_field(command: bytes) -> tuple[int, int] | None:
    """(offset, length) of the PIN-carrying data field in the raw command, or None. For a
    command whose lengths do not fit, everything after the length byte(s): masking too much
    is the safe mistake."""
    if len(command) < 6 or command[1] not in PIN_INS:
        return None
    cla = parse_cla(command[0])
    if cla.kind not in ("interindustry", "proprietary") or cla.secure_messaging:
        return None
    case, _ = _pick_case(command[4:])
    if case in ("3S", "4S"):
        return 5, command[4]
    if case in ("3E", "4E"):
        return 7, int.from_bytes(command[5:7], "big")
    if case is None:  # malformed: everything after the length byte(s) may be a PIN
        start = 7 if command[4] == 0 and len(command) > 7 else 5
        return start, len(command) - start
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
    handler = None
    if c is not None and c.ins is not None:
        table = GP_RESPONSES if c.cla is not None and c.cla.kind == "proprietary" \
            else ISO_RESPONSES
        handler = table.get(c.ins)
    if handler is not None:
        handler(r, c, app or "")
    else:
        _resp_tlv(r, c, app or "", quiet=True)


def _resp_tlv(r: ResponseApdu, c: CommandApdu | None, ctx: str, quiet: bool = False) -> None:
    nodes = parse_tlv(r.data, ctx)
    if quiet and not (is_clean(nodes) and nodes[0].name):
        return
    r.tlv = nodes
    r.details.append(f"data ({len(r.data)} bytes):")
    r.details.extend(render_tlv(nodes, 1))


def _resp_select(r: ResponseApdu, c: CommandApdu | None, ctx: str) -> None:
    _resp_tlv(r, c, ctx)


def _resp_general_auth(r: ResponseApdu, c: CommandApdu | None, ctx: str) -> None:
    _resp_tlv(r, c, ctx or "piv")


def _resp_channel(r: ResponseApdu, c: CommandApdu | None, ctx: str) -> None:
    if len(r.data) == 1:
        r.details.append(f"channel number {r.data[0]}")


def _resp_init_update(r: ResponseApdu, c: CommandApdu | None, ctx: str) -> None:
    try:
        p = INIT_UPDATE_RESPONSE.parse(r.data)
    except ConstructError:
        r.notes.append("INITIALIZE UPDATE response has an unexpected layout")
        return
    r.details += [f"key diversification data: {hexs(p.key_diversification_data)}",
                  f"key version {p.key_version:02X}, SCP{p.scp:02X}"]
    rest = p.rest
    if isinstance(rest, bytes):
        r.details.append(f"rest: {hexs(rest)}")
        return
    for key, value in rest.items():
        if key.startswith("_") or value is None:
            continue
        shown = hexs(value) if isinstance(value, bytes) else f"{value:02X}"
        r.details.append(f"{key.replace('_', ' ')}: {shown}")


def _resp_gp_get_data(r: ResponseApdu, c: CommandApdu | None, ctx: str) -> None:
    _resp_tlv(r, c, "gp")
    cplc = r.tlv[0] if r.tlv else None
    if cplc is not None and cplc.tag == 0x9F7F:
        try:
            p = CPLC.parse(cplc.value)
        except ConstructError:
            return
        r.details.append("CPLC fields:")
        r.details += [f"  {k.replace('_', ' ')}: {v.hex().upper()}" for k, v in p.items()
                      if not k.startswith("_") and isinstance(v, bytes) and v]


ResponseHandler = Callable[[ResponseApdu, CommandApdu | None, str], None]

ISO_RESPONSES: dict[int, ResponseHandler] = {
    0xA4: _resp_select, 0xCA: _resp_select, 0xCB: _resp_select, 0x86: _resp_general_auth,
    0x87: _resp_general_auth, 0x46: _resp_select, 0x47: _resp_select, 0x70: _resp_channel,
    0xA5: _resp_select,
}
GP_RESPONSES: dict[int, ResponseHandler] = {
    0x50: _resp_init_update, 0xCA: _resp_gp_get_data, 0xCB: _resp_gp_get_data,
    0xF2: _resp_gp_get_data,
}


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
