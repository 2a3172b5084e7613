"""What every format's masker shares: the options, the marker, findings and helpers.

Why the output keeps the input's structure: a redacted trace must still be read by p11spy, by
OpenSC's own eyes and by whoever answers the bug report, and decode to the same calls and
APDUs. So every masker replaces bytes in place with a fixed marker (MARK, `*` / 0x2A), lines
keep their length and count and p11spy records keep their length. PIN lengths stay visible
(a PIN of the wrong length is a common finding) unless Options.hide_lengths.

Why checking is redacting into nowhere: `--check` must flag exactly what redaction would
change, no more (a marker already in place is not a secret) and no less. Each format's masker
reports a Finding for every place it changed; `check` runs it without an output.

The per-format maskers live beside their readers (decoder/formats/<format>/masker.py), all
driven by the PKCS#11 table in facts/pkcs11 (which parameters are PINs, which attributes are key
material) and by the APDU layer's pin_field (which APDUs carry a PIN). decoder/redact.py runs
them on files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from p11spy.facts.pkcs11 import attributes
from p11spy.facts.pkcs11.constants import CKO

MARK = 0x2A  # '*': what every masked byte becomes (p11log.MASK_FILL stands for the same)
MARK_CHAR = "*"
MARK_HEX = "2A"
HIDDEN_PIN_LENGTH = 8  # with --hide-lengths every PIN becomes this many marker bytes

# Attributes that say who or what a device or person is: masked with --strict only.
IDENTIFYING = frozenset({"CKA_LABEL", "CKA_SUBJECT", "CKA_ISSUER", "CKA_SERIAL_NUMBER",
                         "CKA_OWNER", "CKA_URL", "CKA_AC_ISSUER", "CKA_ATTR_TYPES",
                         "CKA_APPLICATION", "CKA_OBJECT_ID", "CKA_UNIQUE_ID"})
# Classes known to hold no key (facts): every other class, OTP and vendor-defined ones too, may.
KEYLESS = frozenset(CKO.value_of(name) for name in attributes.KEYLESS_CLASSES)


@dataclass(frozen=True)
class Options:
    strict: bool = False  # also what identifies a person or a device
    hide_lengths: bool = False  # PINs become HIDDEN_PIN_LENGTH marker bytes


@dataclass(frozen=True)
class Finding:
    """One place where a secret was (or, for --check, still is): where and what."""

    where: str  # "line 12" or "offset 1234"
    what: str  # "C_Login pPin (PIN)", "VERIFY APDU data (PIN)"

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


Report = Callable[[Finding], None]


# --- helpers shared by the maskers ------------------------------------------------------------


def is_key_class(value: int | None) -> bool | None:
    """False for classes known to hold no key, True for every other class (secret, private,
    OTP, vendor-defined keys), None when the class is not known: as the shim decides."""
    return None if value is None else value not in KEYLESS


def attribute_is_secret(atype: int, keyctx: bool | None, strict: bool) -> str | None:
    """Why an attribute's value is masked ("key material", "identifying"), or None.

    keyctx: the object is (True), is not (False) or may be (None) a secret or private key;
    CKA_VALUE is masked unless it is known not to be one, as the shim masks it.
    """
    how = attributes.secrecy(atype)
    if how == attributes.ALWAYS or (how == attributes.IF_KEY and keyctx is not False):
        return "key material"
    if strict and (how == attributes.IF_KEY or attributes.attribute(atype).name in IDENTIFYING):
        return "identifying"
    return None


def printable(b: int) -> str:
    """A byte as the ASCII columns of hex dumps show it."""
    return chr(b) if 0x20 <= b < 0x7F else "."


def hex_pairs(text: str, want: int) -> list[int]:
    """The leading "XX " bytes of a hex dump line, at most want of them (dumps of OpenSC and
    pcsc-spy alike)."""
    chunk = text[:3 * want]
    if len(chunk) == 3 * want or len(chunk) == 3 * want - 1:
        try:
            if chunk[2::3].strip() == "":
                return list(bytes.fromhex(chunk))
        except ValueError:
            pass
    out = []
    for i in range(want):
        tok = text[3 * i:3 * i + 2]
        sep = text[3 * i + 2:3 * i + 3]
        if len(tok) != 2 or sep not in (" ", "") or tok.strip("0123456789ABCDEFabcdef"):
            break
        out.append(int(tok, 16))
    return out
