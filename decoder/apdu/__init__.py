"""Smart-card APDUs (ISO/IEC 7816-4) decoded for people: the one door the rest of p11spy uses.

Behind it: model (CommandApdu, ResponseApdu, Exchange), decode (taking bytes apart, folding
chained and re-sent exchanges), framing, sw (status words), pin (which APDUs carry a PIN),
commands and responses (what each instruction's fields mean), names, tlv.

The names of instructions load with the package; the rest (and the parsing library under it)
loads when first asked for, so that `decode`, which names each APDU's instruction and no more,
does not start it (a fifth of its start).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from p11spy.decoder.apdu.names import ins_name

if TYPE_CHECKING:
    from p11spy.decoder.apdu.decode import decode_command, decode_response, fold_exchanges
    from p11spy.decoder.apdu.model import CommandApdu, Exchange, ResponseApdu, hex_lines
    from p11spy.decoder.apdu.pin import PIN_INS, carries_pin, pin_class, pin_field
    from p11spy.decoder.apdu.sw import sw_meaning, sw_status
    from p11spy.decoder.apdu.tlv import aid_info

# name -> the module of this package that holds it, imported on first use
_LATER = {
    "decode_command": "decode", "decode_response": "decode", "fold_exchanges": "decode",
    "CommandApdu": "model", "Exchange": "model", "ResponseApdu": "model", "hex_lines": "model",
    "sw_meaning": "sw", "sw_status": "sw", "aid_info": "tlv",
    "PIN_INS": "pin", "carries_pin": "pin", "pin_class": "pin", "pin_field": "pin",
}


def __getattr__(name: str) -> Any:
    module = _LATER.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = ["PIN_INS", "CommandApdu", "Exchange", "ResponseApdu", "aid_info", "carries_pin",
           "decode_command", "decode_response", "fold_exchanges", "hex_lines", "ins_name",
           "pin_class", "pin_field", "sw_meaning", "sw_status"]
