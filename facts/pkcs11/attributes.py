"""How the value of every CKA_ attribute of PKCS#11 3.2 reads, and which ones are key material.

Only the attributes whose value is not plain bytes are listed in _TYPED; every other name of the
CKA family in constants.py is BYTES. The tables are built from that family, so an attribute
added there is covered here at once, and a name listed here that the family lacks stops the
import.
"""

from __future__ import annotations

from .constants import CKA, FAMILIES
from .model import Attribute, ValueType

_B = ValueType.BOOL
_U = ValueType.ULONG
_E = ValueType.ENUM
_N = ValueType.BIGINT
_S = ValueType.STRING
_D = ValueType.DATE
_T = ValueType.ATTRIBUTES
_M = ValueType.MECHANISMS
_L = ValueType.ULONGS
_X = ValueType.BYTES

# name -> (type, constant family for ENUM / FLAGS). Any CKA name missing here is BYTES.
_TYPED: dict[str, tuple[ValueType, str | None]] = {
    # common object attributes
    "CKA_CLASS": (_E, "CKO"),
    "CKA_TOKEN": (_B, None),
    "CKA_PRIVATE": (_B, None),
    "CKA_LABEL": (_S, None),
    "CKA_UNIQUE_ID": (_S, None),
    "CKA_APPLICATION": (_S, None),
    "CKA_MODIFIABLE": (_B, None),
    "CKA_COPYABLE": (_B, None),
    "CKA_DESTROYABLE": (_B, None),
    # certificates
    "CKA_CERTIFICATE_TYPE": (_E, "CKC"),
    "CKA_TRUSTED": (_B, None),
    "CKA_CERTIFICATE_CATEGORY": (_E, "CK_CERTIFICATE_CATEGORY"),
    "CKA_JAVA_MIDP_SECURITY_DOMAIN": (_E, "CK_SECURITY_DOMAIN"),
    "CKA_URL": (_S, None),
    "CKA_NAME_HASH_ALGORITHM": (_E, "CKM"),
    # keys
    "CKA_KEY_TYPE": (_E, "CKK"),
    "CKA_SENSITIVE": (_B, None),
    "CKA_ENCRYPT": (_B, None),
    "CKA_DECRYPT": (_B, None),
    "CKA_WRAP": (_B, None),
    "CKA_UNWRAP": (_B, None),
    "CKA_SIGN": (_B, None),
    "CKA_SIGN_RECOVER": (_B, None),
    "CKA_VERIFY": (_B, None),
    "CKA_VERIFY_RECOVER": (_B, None),
    "CKA_DERIVE": (_B, None),
    "CKA_ENCAPSULATE": (_B, None),
    "CKA_DECAPSULATE": (_B, None),
    "CKA_START_DATE": (_D, None),
    "CKA_END_DATE": (_D, None),
    "CKA_VALUE_BITS": (_U, None),
    "CKA_VALUE_LEN": (_U, None),
    "CKA_EXTRACTABLE": (_B, None),
    "CKA_LOCAL": (_B, None),
    "CKA_NEVER_EXTRACTABLE": (_B, None),
    "CKA_ALWAYS_SENSITIVE": (_B, None),
    "CKA_KEY_GEN_MECHANISM": (_E, "CKM"),
    "CKA_SECONDARY_AUTH": (_B, None),
    "CKA_AUTH_PIN_FLAGS": (_U, None),
    "CKA_ALWAYS_AUTHENTICATE": (_B, None),
    "CKA_WRAP_WITH_TRUSTED": (_B, None),
    "CKA_WRAP_TEMPLATE": (_T, None),
    "CKA_UNWRAP_TEMPLATE": (_T, None),
    "CKA_DERIVE_TEMPLATE": (_T, None),
    "CKA_ENCAPSULATE_TEMPLATE": (_T, None),
    "CKA_DECAPSULATE_TEMPLATE": (_T, None),
    "CKA_ALLOWED_MECHANISMS": (_M, None),
    # RSA, DSA, DH
    "CKA_MODULUS": (_N, None),
    "CKA_MODULUS_BITS": (_U, None),
    "CKA_PUBLIC_EXPONENT": (_N, None),
    "CKA_PRIVATE_EXPONENT": (_N, None),
    "CKA_PRIME_1": (_N, None),
    "CKA_PRIME_2": (_N, None),
    "CKA_EXPONENT_1": (_N, None),
    "CKA_EXPONENT_2": (_N, None),
    "CKA_COEFFICIENT": (_N, None),
    "CKA_PRIME": (_N, None),
    "CKA_SUBPRIME": (_N, None),
    "CKA_BASE": (_N, None),
    "CKA_PRIME_BITS": (_U, None),
    "CKA_SUBPRIME_BITS": (_U, None),
    # OTP keys
    "CKA_OTP_FORMAT": (_E, "CK_OTP_FORMAT"),
    "CKA_OTP_LENGTH": (_U, None),
    "CKA_OTP_TIME_INTERVAL": (_U, None),
    "CKA_OTP_USER_FRIENDLY_MODE": (_B, None),
    "CKA_OTP_CHALLENGE_REQUIREMENT": (_E, "CK_OTP_REQUIREMENT"),
    "CKA_OTP_TIME_REQUIREMENT": (_E, "CK_OTP_REQUIREMENT"),
    "CKA_OTP_COUNTER_REQUIREMENT": (_E, "CK_OTP_REQUIREMENT"),
    "CKA_OTP_PIN_REQUIREMENT": (_E, "CK_OTP_REQUIREMENT"),
    "CKA_OTP_TIME": (_S, None),
    "CKA_OTP_USER_IDENTIFIER": (_S, None),
    "CKA_OTP_SERVICE_IDENTIFIER": (_S, None),
    "CKA_OTP_SERVICE_LOGO_TYPE": (_S, None),
    # hardware features
    "CKA_HW_FEATURE_TYPE": (_E, "CKH"),
    "CKA_RESET_ON_INIT": (_B, None),
    "CKA_HAS_RESET": (_B, None),
    "CKA_PIXEL_X": (_U, None),
    "CKA_PIXEL_Y": (_U, None),
    "CKA_RESOLUTION": (_U, None),
    "CKA_CHAR_ROWS": (_U, None),
    "CKA_CHAR_COLUMNS": (_U, None),
    "CKA_COLOR": (_B, None),
    "CKA_BITS_PER_PIXEL": (_U, None),
    "CKA_CHAR_SETS": (_S, None),
    "CKA_ENCODING_METHODS": (_S, None),
    "CKA_MIME_TYPES": (_S, None),
    # mechanism and profile objects
    "CKA_MECHANISM_TYPE": (_E, "CKM"),
    "CKA_PROFILE_ID": (_E, "CKP"),
    # X2Ratchet keys
    "CKA_X2RATCHET_BAGSIZE": (_U, None),
    "CKA_X2RATCHET_BOBS1STMSG": (_B, None),
    "CKA_X2RATCHET_ISALICE": (_B, None),
    "CKA_X2RATCHET_NR": (_U, None),
    "CKA_X2RATCHET_NS": (_U, None),
    "CKA_X2RATCHET_PNS": (_U, None),
    # stateful hash-based signatures
    "CKA_HSS_LEVELS": (_U, None),
    "CKA_HSS_LMS_TYPE": (_U, None),
    "CKA_HSS_LMOTS_TYPE": (_U, None),
    "CKA_HSS_LMS_TYPES": (_L, None),
    "CKA_HSS_LMOTS_TYPES": (_L, None),
    "CKA_HSS_KEYS_REMAINING": (_U, None),
    # the parameter set's family depends on the key type (CKP_ML_DSA, CKP_ML_KEM, ...)
    "CKA_PARAMETER_SET": (_U, None),
    # validation objects
    "CKA_OBJECT_VALIDATION_FLAGS": (_U, None),
    "CKA_VALIDATION_TYPE": (_E, "CKV_TYPE"),
    "CKA_VALIDATION_LEVEL": (_U, None),
    "CKA_VALIDATION_MODULE_ID": (_S, None),
    "CKA_VALIDATION_FLAG": (_U, None),
    "CKA_VALIDATION_AUTHORITY_TYPE": (_E, "CKV_AUTHORITY_TYPE"),
    "CKA_VALIDATION_COUNTRY": (_S, None),
    "CKA_VALIDATION_CERTIFICATE_IDENTIFIER": (_S, None),
    "CKA_VALIDATION_CERTIFICATE_URI": (_S, None),
    "CKA_VALIDATION_VENDOR_URI": (_S, None),
    "CKA_VALIDATION_PROFILE": (_S, None),
    # trust objects
    "CKA_TRUST_SERVER_AUTH": (_E, "CKT"),
    "CKA_TRUST_CLIENT_AUTH": (_E, "CKT"),
    "CKA_TRUST_CODE_SIGNING": (_E, "CKT"),
    "CKA_TRUST_EMAIL_PROTECTION": (_E, "CKT"),
    "CKA_TRUST_IPSEC_IKE": (_E, "CKT"),
    "CKA_TRUST_TIME_STAMPING": (_E, "CKT"),
    "CKA_TRUST_OCSP_SIGNING": (_E, "CKT"),
}

# Always key material, whatever the object: private key components and secret ratchet state.
_SECRET = frozenset({
    "CKA_PRIVATE_EXPONENT",
    "CKA_PRIME_1",
    "CKA_PRIME_2",
    "CKA_EXPONENT_1",
    "CKA_EXPONENT_2",
    "CKA_COEFFICIENT",
    "CKA_SEED",
    "CKA_X2RATCHET_BAG",
    "CKA_X2RATCHET_CKR",
    "CKA_X2RATCHET_CKS",
    "CKA_X2RATCHET_DHS",
    "CKA_X2RATCHET_HKR",
    "CKA_X2RATCHET_HKS",
    "CKA_X2RATCHET_NHKR",
    "CKA_X2RATCHET_NHKS",
    "CKA_X2RATCHET_RK",
})

# Key material when the object is a secret or private key (public keys and data objects also
# carry CKA_VALUE, and there it is not secret).
_SECRET_IF_KEY = frozenset({"CKA_VALUE"})

# Object classes known to hold no key material: there the attributes above that are secret only
# in keys are not. Every other class may hold a key (CKO_OTP_KEY does; vendor-defined and
# unknown classes may), so a capture masks them there.
KEYLESS_CLASSES = frozenset({"CKO_DATA", "CKO_CERTIFICATE", "CKO_PUBLIC_KEY", "CKO_HW_FEATURE",
                             "CKO_DOMAIN_PARAMETERS", "CKO_MECHANISM", "CKO_PROFILE",
                             "CKO_VALIDATION", "CKO_TRUST"})


def _build() -> dict[str, Attribute]:
    """One Attribute per CKA name, aliases typed as the name they stand for. Stops the import
    if the lists above name anything but a canonical name of the CKA family, or give an ENUM
    without a known family."""
    for name in (*_TYPED, *_SECRET, *_SECRET_IF_KEY):
        if name not in CKA.names:
            raise ValueError(f"attributes.py names {name}, which the CKA family does not have")
        if CKA.canonical[CKA.names[name]] != name:
            raise ValueError(f"attributes.py names the alias {name}; use the canonical name")
    for name in KEYLESS_CLASSES:
        if name not in FAMILIES["CKO"].names:
            raise ValueError(f"attributes.py names {name}, which the CKO family does not have")
    for name, (vtype, fam) in _TYPED.items():
        if (vtype in (ValueType.ENUM, ValueType.FLAGS)) != (fam is not None) or (
                fam is not None and fam not in FAMILIES):
            raise ValueError(f"{name}: family {fam} does not fit its type {vtype}")
    table: dict[str, Attribute] = {}
    for name, value in CKA.names.items():
        canon = CKA.canonical[value]
        vtype, fam = _TYPED.get(canon, (_X, None))
        table[name] = Attribute(name, value, vtype, fam,
                                secret=canon in _SECRET, secret_if_key=canon in _SECRET_IF_KEY)
    return table


BY_NAME: dict[str, Attribute] = _build()

# By value, under the canonical name (aliases such as CKA_ECDSA_PARAMS stay in BY_NAME).
ATTRIBUTES: dict[int, Attribute] = {v: BY_NAME[n] for v, n in CKA.canonical.items()}


# How an attribute's value is masked, the one answer the shim (codegen's p11_attr_secret) and
# redact (decoder/masking) both read: never, always, or when its object is or may be a key.
NEVER, ALWAYS, IF_KEY = 0, 1, 2
_VENDOR = CKA.value_of("CKA_VENDOR_DEFINED")


def secrecy(value: int) -> int:
    """NEVER, ALWAYS or IF_KEY for the attribute with this type number. A number that no
    version of PKCS#11 defines and no vendor claims is a newer standard's or a damaged one:
    when in doubt, it is masked as CKA_VALUE is (IF_KEY)."""
    attr = ATTRIBUTES.get(value)
    if attr is None:
        return NEVER if value >= _VENDOR else IF_KEY
    return ALWAYS if attr.secret else IF_KEY if attr.secret_if_key else NEVER


def attribute(value: int) -> Attribute:
    """The attribute with this type number; one nobody defined reads as plain bytes, named
    the way the CKA family names it (CKA_VENDOR_DEFINED+0x.. or a hex number)."""
    try:
        return ATTRIBUTES[value]
    except KeyError:
        return Attribute(CKA.name_of(value), value, ValueType.BYTES)


# Which usage attribute of a key must be true for a function to use it (PKCS#11 3.2 section
# 4.8-4.9, "key usage"): function -> (attribute, the function's key parameter). The module
# answers CKR_KEY_FUNCTION_NOT_PERMITTED when it is false.
KEY_USAGE: dict[str, tuple[str, str]] = {
    "C_EncryptInit": ("CKA_ENCRYPT", "hKey"),
    "C_DecryptInit": ("CKA_DECRYPT", "hKey"),
    "C_SignInit": ("CKA_SIGN", "hKey"),
    "C_VerifyInit": ("CKA_VERIFY", "hKey"),
    "C_SignRecoverInit": ("CKA_SIGN_RECOVER", "hKey"),
    "C_VerifyRecoverInit": ("CKA_VERIFY_RECOVER", "hKey"),
    "C_MessageEncryptInit": ("CKA_ENCRYPT", "hKey"),
    "C_MessageDecryptInit": ("CKA_DECRYPT", "hKey"),
    "C_MessageSignInit": ("CKA_SIGN", "hKey"),
    "C_MessageVerifyInit": ("CKA_VERIFY", "hKey"),
    "C_WrapKey": ("CKA_WRAP", "hWrappingKey"),
    "C_UnwrapKey": ("CKA_UNWRAP", "hUnwrappingKey"),
    "C_DeriveKey": ("CKA_DERIVE", "hBaseKey"),
    "C_EncapsulateKey": ("CKA_ENCAPSULATE", "hPublicKey"),
    "C_DecapsulateKey": ("CKA_DECAPSULATE", "hPrivateKey"),
}
