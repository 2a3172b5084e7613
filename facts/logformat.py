"""The binary trace format written by the shim and read by the decoder.

These numbers are the single source of the format: the shim's C is generated with them
(codegen emits them as #defines) and the decoder unpacks with the structs below. The format
is described for people in facts/LOGFORMAT.md.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag

MAGIC = b"P11R"
FORMAT_VERSION = 1

# magic, length, type, module index, function index, pid, tid, start (us, wall clock),
# duration (ns), return value, per-process call number.
RECORD = struct.Struct("<4sIBBHIQQQQQ")
# parameter index, phase, kind, flags, payload length.
FIELD = struct.Struct("<BBBBI")
# attribute type, ulValueLen as seen, value kind, payload length (then the payload).
ATTRIBUTE = struct.Struct("<QQB3xI")
# mechanism type, ulParameterLen, parameter kind, payload length (then the payload, and for
# STRUCT one BLOB per followed pointer field).
MECHANISM = struct.Struct("<QQB3xI")
# kind, payload length: a pointed-to buffer inside a mechanism parameter.
BLOB = struct.Struct("<B3xI")
# length, class, extras: what is kept of a masked secret.
MASKED = struct.Struct("<QBB6x")
# full length, 64-bit FNV-1a of the whole buffer; the first DIGEST_PREFIX bytes follow.
DIGEST = struct.Struct("<QQ")
DIGEST_PREFIX = 32

ULONG = struct.Struct("<Q")

# The process record's return-value field holds this number in the writer's byte order, so a
# reader knows the order before it reads a length: 01..08 is big-endian (s390x), 08..01
# little-endian. Traces written before it have 0 there, and are little-endian.
BYTE_ORDER_MARK = 0x0102030405060708
BIG_ENDIAN_MARK = BYTE_ORDER_MARK.to_bytes(8, "big")
BOM_OFFSET = 40  # the return-value field of the record header


class RecordType(IntEnum):
    PROCESS = 1  # JSON header: a process started writing (also after fork)
    CALL = 2  # one PKCS#11 call
    MODULE_INFO = 3  # the real module's CK_INFO, fetched after a successful C_Initialize
    MODULE = 4  # JSON: a module the shim wraps ({"index", "path"}); calls name it by index
    PCSC = 5  # one PC/SC call a module made (function = index in facts/pcsc.py)
    DROPPED = 6  # one ULONG field: records before this one that could not be written
    ENTRY = 7  # a call entered: its header and in-fields, written before the module is called
    PASSED_ON = 8  # header only: the call of that ENTRY was passed on to another module


def call_key(rec: bytes, p: int = 0) -> bytes:
    """What pairs a call's ENTRY record with the record of its return (CALL or PASSED_ON):
    the header's function, pid, thread, start time (bytes 10..32) and call number (48..56),
    of the record at rec[p:]. Bytes even from a bytearray (a large record comes as one), as
    it is a dict key."""
    return bytes(rec[p + 10:p + 32] + rec[p + 48:p + 56])


class Phase(IntEnum):
    IN = 0  # captured before the real call
    OUT = 1  # captured after it


class Kind(IntEnum):
    ULONG = 1  # 8 bytes: a number, handle, flags, enum, length or pointer value
    BYTES = 2  # the bytes themselves
    NULL = 3  # the pointer was NULL (for an output buffer: a length query)
    TEMPLATE = 4  # u64 count, then ATTRIBUTE entries
    MECHANISM = 5  # MECHANISM entry
    MASKED = 6  # a secret: MASKED payload (length and character class only)
    DIGEST = 7  # larger than P11SPY_MAX_BUFFER: DIGEST payload and a prefix
    STRUCT = 8  # raw bytes of a struct, laid out as this platform's C compiler does
    ULONG_ARRAY = 9  # count x 8 bytes
    CSTRING = 10  # a NUL-terminated string, without the NUL
    UNREAD = 11  # not read: u64 claimed length (absurd size, or the call failed)
    APDU_MASKED = 12  # u8 header length, header, MASKED payload for the data, u8 length, trailer


class FieldFlag(IntFlag):
    NONE = 0
    SECRETS_SHOWN = 1  # a secret recorded in clear because P11SPY_LOG_SECRETS=1


class PinClass(IntEnum):
    """What a masked PIN's bytes were, so a diagnosis can still tell an EBCDIC PIN."""

    EMPTY = 0
    ASCII_DIGITS = 1
    ASCII_OTHER = 2  # printable ASCII, not only digits
    EBCDIC_DIGITS = 3  # F0..F9
    OTHER = 4  # anything else (binary key material lands here)


class PinExtra(IntFlag):
    NONE = 0
    TRAILING_NEWLINE = 1  # ended in CR or LF (class describes the bytes before it)
    HAS_NUL = 2  # contains a NUL byte (class ignores trailing NULs)
    UTF16 = 4  # every other byte is NUL, as in UTF-16 text (class describes the others)
    NON_ASCII = 8  # some byte above 0x7F
    PADDED = 16  # ended in 0xFF padding, as PIV pads PINs to 8 bytes (class ignores it)


# A CK_ULONG is 8 bytes on the platforms the shim builds for (LP64); the header records it.
ULONG_SIZE = 8


def c_defines() -> str:
    """The format as C #defines, for the generated shim."""
    lines = [
        f"#define P11_FORMAT_VERSION {FORMAT_VERSION}",
        f"#define P11_DIGEST_PREFIX {DIGEST_PREFIX}",
        f"#define P11_RECORD_SIZE {RECORD.size}",
        f"#define P11_FIELD_SIZE {FIELD.size}",
        f"#define P11_BYTE_ORDER_MARK 0x{BYTE_ORDER_MARK:016x}ULL",
    ]
    for enum in (RecordType, Phase, Kind, FieldFlag, PinClass, PinExtra):
        prefix = {"RecordType": "REC", "Phase": "PH", "Kind": "K", "FieldFlag": "FF",
                  "PinClass": "PIN", "PinExtra": "PINX"}[enum.__name__]
        for member in enum:
            lines.append(f"#define {prefix}_{member.name} {int(member.value)}")
    return "\n".join(lines) + "\n"
