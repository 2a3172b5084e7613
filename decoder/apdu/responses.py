"""What a response's data field means, per instruction of the command it answers, apart
from the APDU model it fills in."""

from __future__ import annotations

from collections.abc import Callable

from construct import (
    Bytes,
    ConstructError,
    GreedyBytes,
    Int8ub,
    Optional,
    Struct,
    Switch,
    Terminated,
    this,
)

from p11spy.decoder.apdu.model import CommandApdu, ResponseApdu
from p11spy.decoder.apdu.tlv import hexs, is_clean, parse_tlv, render_tlv

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


ResponseHandler = Callable[["ResponseApdu", "CommandApdu | None", str], None]

ISO_RESPONSES: dict[int, ResponseHandler] = {
    0xA4: _resp_select, 0xCA: _resp_select, 0xCB: _resp_select, 0x86: _resp_general_auth,
    0x87: _resp_general_auth, 0x46: _resp_select, 0x47: _resp_select, 0x70: _resp_channel,
    0xA5: _resp_select,
}
GP_RESPONSES: dict[int, ResponseHandler] = {
    0x50: _resp_init_update, 0xCA: _resp_gp_get_data, 0xCB: _resp_gp_get_data,
    0xF2: _resp_gp_get_data,
}


def interpret_response(r: ResponseApdu, c: CommandApdu | None, ctx: str) -> None:
    """Fill in details from the handler for the command's instruction, else a clean TLV."""
    handler = None
    if c is not None and c.ins is not None:
        table = GP_RESPONSES if c.cla is not None and c.cla.kind == "proprietary" \
            else ISO_RESPONSES
        handler = table.get(c.ins)
    if handler is not None:
        handler(r, c, ctx)
    else:
        _resp_tlv(r, c, ctx, quiet=True)
