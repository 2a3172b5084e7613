"""The APDU model: a command, a response and a logical exchange, as decoded for people.

Filled in by decode.py (framing and the interpreters of commands and responses); this module
imports none of them, so the interpreters can name the model without a circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from p11spy.decoder.apdu.framing import Cla
from p11spy.decoder.apdu.pin import PIN_INS, carries_pin, pin_class, pin_field
from p11spy.decoder.apdu.sw import sw_status
from p11spy.decoder.apdu.tlv import TlvNode, hexs

HEX_LINE = 16  # bytes per hex dump line


MAX_DUMP = 512  # bytes of data shown in describe() before "… N more bytes"


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
