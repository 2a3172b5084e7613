"""The shapes of the PKCS#11 fact tables.

The tables themselves (functions.py, constants.py, attributes.py, structs.py) are plain data
built from these classes. The shim's C wrappers are generated from them and the decoder reads
records with them, so a fact is written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """What a parameter is, as far as capturing and rendering it is concerned."""

    HANDLE = "handle"  # CK_SLOT_ID / CK_SESSION_HANDLE / CK_OBJECT_HANDLE by value; kind says which
    ULONG = "ulong"  # a plain number (e.g. ulMaxObjectCount is LENGTH; this is anything else)
    BOOL = "bool"  # CK_BBOOL by value
    ENUM = "enum"  # a CK_ULONG from a constant family (kind = family name, e.g. "CKU")
    FLAGS = "flags"  # a CK_FLAGS bit set (kind = flag family, e.g. "CKF_SESSION")
    LENGTH = "length"  # CK_ULONG giving the size or count of another parameter
    LENGTH_PTR = "length_ptr"  # CK_ULONG_PTR: in = room offered, out = size produced
    BYTES_IN = "bytes_in"  # input buffer; length = its LENGTH parameter
    BYTES_INOUT = "bytes_inout"  # buffer read and written by the call (message parameters)
    PIN = "pin"  # input buffer holding a PIN; masked at capture; length = its LENGTH parameter
    TEXT_FIXED = "text_fixed"  # blank-padded text of a fixed size (size): labels, info strings
    CSTRING = "cstring"  # NUL-terminated input string (interface and function names)
    BYTES_OUT = "bytes_out"  # output buffer, two-call convention; length = its LENGTH_PTR
    BYTES_OUT_FIXED = "bytes_out_fixed"  # output buffer whose size is an input LENGTH
    TEMPLATE_IN = "template_in"  # CK_ATTRIBUTE array read by the call; length = its LENGTH count
    TEMPLATE_INOUT = "template_inout"  # CK_ATTRIBUTE array filled by the call (C_GetAttributeValue)
    MECHANISM = "mechanism"  # CK_MECHANISM_PTR
    STRUCT_IN = "struct_in"  # pointer to a struct read by the call (struct = its C name)
    STRUCT_OUT = "struct_out"  # pointer to a struct the call fills (struct = its C name)
    HANDLE_OUT = "handle_out"  # pointer to one handle the call writes (kind says which)
    ULONG_OUT = "ulong_out"  # pointer to one CK_ULONG the call writes (kind: family, if any)
    ARRAY_OUT = "array_out"  # array of CK_ULONG-sized items; length = LENGTH_PTR, capacity = LENGTH
    INIT_ARGS = "init_args"  # C_Initialize's CK_C_INITIALIZE_ARGS_PTR (may be NULL)
    POINTER = "pointer"  # opaque pointer: recorded as its value, never dereferenced
    FUNCTION_LIST_OUT = "function_list_out"  # CK_FUNCTION_LIST_PTR_PTR
    INTERFACE_LIST_OUT = "interface_list_out"  # CK_INTERFACE_PTR array, two-call; length = ptr
    INTERFACE_OUT = "interface_out"  # CK_INTERFACE_PTR_PTR


# Roles whose parameter only describes another one and is recorded with it.
SIZE_ROLES = frozenset({Role.LENGTH, Role.LENGTH_PTR})


@dataclass(frozen=True)
class Param:
    """One parameter of a PKCS#11 function."""

    name: str  # as in the specification, e.g. "pulSignatureLen"
    ctype: str  # its C type, e.g. "CK_ULONG_PTR"
    role: Role
    length: str | None = None  # name of the parameter giving this one's size or count
    capacity: str | None = None  # ARRAY_OUT with a separate room parameter (C_FindObjects)
    kind: str | None = None  # handle kind ("slot", "session", "object") or constant family
    struct: str | None = None  # STRUCT_IN / STRUCT_OUT: the struct's C name
    size: int | None = None  # TEXT_FIXED: number of bytes


@dataclass(frozen=True)
class Function:
    """One entry of the PKCS#11 function lists."""

    name: str  # "C_Login"
    params: tuple[Param, ...]
    since: str  # "2.40" (the 68 of CK_FUNCTION_LIST), "3.0" or "3.2"
    index: int = field(default=-1)  # position in CK_FUNCTION_LIST_3_2, set by the table

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"{self.name} has no parameter {name}")


@dataclass(frozen=True)
class Family:
    """A family of CK_ULONG constants (CKR, CKA, CKM, ...) or of CKF flag bits.

    names maps every spelling (including deprecated aliases) to its value; canonical maps each
    value to the name the specification prefers. Values nobody defined still render: vendor
    ones as NAME_VENDOR_DEFINED+0x..., anything else as a hex number.
    """

    name: str  # "CKM", "CKF_TOKEN", ...
    canonical: dict[int, str]
    names: dict[str, int]
    vendor_defined: int | None = None  # base of the vendor range, e.g. 0x80000000
    is_flags: bool = False
    description: str = ""

    def name_of(self, value: int) -> str:
        """The name for value, never an error."""
        try:
            return self.canonical[value]
        except KeyError:
            pass
        if self.vendor_defined is not None and value >= self.vendor_defined:
            base = self.canonical.get(self.vendor_defined, f"{self.name}_VENDOR_DEFINED")
            return f"{base}+0x{value - self.vendor_defined:x}"
        return f"0x{value:x}"

    def value_of(self, name: str) -> int:
        """The value of a name (any spelling); KeyError if the family has no such name."""
        return self.names[name]

    def render_flags(self, value: int) -> str:
        """Bits as NAME|NAME|0x.. (unknown bits kept as hex), "0" when none is set."""
        parts: list[str] = []
        rest = value
        for bit, name in sorted(self.canonical.items()):
            if bit and value & bit == bit:
                parts.append(name)
                rest &= ~bit
        if rest:
            parts.append(f"0x{rest:x}")
        return "|".join(parts) if parts else "0"

    def render(self, value: int) -> str:
        return self.render_flags(value) if self.is_flags else self.name_of(value)


def family(name: str, pairs: list[tuple[str, int]], *, vendor_defined: int | None = None,
           is_flags: bool = False, description: str = "") -> Family:
    """Build a Family from (name, value) pairs in specification order; the first name of a
    value is its canonical one, later ones are aliases."""
    canonical: dict[int, str] = {}
    names: dict[str, int] = {}
    for n, v in pairs:
        if n in names and names[n] != v:
            raise ValueError(f"{n} given two values")
        names[n] = v
        canonical.setdefault(v, n)
    return Family(name, canonical, names, vendor_defined, is_flags, description)


class ValueType(StrEnum):
    """How an attribute's value bytes are read."""

    BOOL = "bool"
    ULONG = "ulong"
    ENUM = "enum"  # a CK_ULONG from a family (Attribute.family)
    FLAGS = "flags"  # a CK_FLAGS from a flag family (Attribute.family)
    BYTES = "bytes"  # opaque bytes (ids, DER, big integers)
    BIGINT = "bigint"  # big-endian unsigned integer bytes (modulus, exponents)
    STRING = "string"  # UTF-8 text (labels, URLs)
    DATE = "date"  # CK_DATE: YYYYMMDD as 8 ASCII digits
    ATTRIBUTES = "attributes"  # an array of CK_ATTRIBUTE (CKA_WRAP_TEMPLATE and friends)
    MECHANISMS = "mechanisms"  # an array of CK_MECHANISM_TYPE (CKA_ALLOWED_MECHANISMS)
    ULONGS = "ulongs"  # an array of CK_ULONG (CKA_HSS_LMS_TYPES, ...)


@dataclass(frozen=True)
class Attribute:
    """One CKA_ attribute type: how its value reads and whether it is key material."""

    name: str
    value: int
    type: ValueType
    family: str | None = None  # for ENUM / FLAGS
    secret: bool = False  # always key material (private key components): masked at capture
    secret_if_key: bool = False  # key material when the object is a secret or private key


@dataclass(frozen=True)
class Struct:
    """A struct the shim copies and the decoder reads; fields described with Param roles
    (ULONG, ENUM, FLAGS, HANDLE, TEXT_FIXED, STRUCT_IN for a nested struct, BYTES_IN with the
    name of its length field, POINTER for anything not to follow)."""

    name: str  # "CK_TOKEN_INFO"
    fields: tuple[Param, ...]
    mechanisms: tuple[str, ...] = ()  # for mechanism parameters: the CKM_ names that take it
