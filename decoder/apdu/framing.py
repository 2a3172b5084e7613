"""The APDU header, the class byte and the ISO 7816-3 Lc/Le cases: the framing every other
APDU module reads first, kept below them so the PIN helpers can use it without the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from construct import (
    BitsInteger,
    BitStruct,
    Bytes,
    Const,
    Flag,
    Int8ub,
    Int16ub,
    Struct,
    Terminated,
    this,
)

HEADER = Struct("cla" / Int8ub, "ins" / Int8ub, "p1" / Int8ub, "p2" / Int8ub)

# ISO 7816-3 cases; which one applies is decided from the length (see pick_case).
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


def pick_case(body: bytes) -> tuple[str | None, str | None]:
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
