"""Smart-card APDUs (ISO/IEC 7816-4) decoded for people: the one door the rest of p11spy uses.

Behind it: model (CommandApdu, ResponseApdu, Exchange), decode (taking bytes apart, folding
chained and re-sent exchanges), framing, sw (status words), pin (which APDUs carry a PIN),
commands and responses (what each instruction's fields mean), names, tlv.
"""

from p11spy.decoder.apdu.decode import decode_command, decode_response, fold_exchanges
from p11spy.decoder.apdu.model import CommandApdu, Exchange, ResponseApdu, hex_lines
from p11spy.decoder.apdu.names import ins_name
from p11spy.decoder.apdu.pin import PIN_INS, carries_pin, pin_class, pin_field
from p11spy.decoder.apdu.sw import sw_meaning, sw_status
from p11spy.decoder.apdu.tlv import aid_info

__all__ = ["PIN_INS", "CommandApdu", "Exchange", "ResponseApdu", "aid_info", "carries_pin",
           "decode_command", "decode_response", "fold_exchanges", "hex_lines", "ins_name",
           "pin_class", "pin_field", "sw_meaning", "sw_status"]
