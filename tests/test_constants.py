"""The PKCS#11 3.2 constant and attribute tables: right numbers, nothing dropped, and names and
values that survive a trip through the renderer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from p11spy.facts.pkcs11 import attributes, constants
from p11spy.facts.pkcs11.constants import FAMILIES, lookup
from p11spy.facts.pkcs11.model import ValueType

ERROR_CODES = Path(__file__).resolve().parent / "reference" / "error-codes.md"
_ROW = re.compile(r"^\|\s*(CKR_\w+)\s*\|\s*(0x[0-9A-Fa-f]+)\s*\|\s*(\d+)\s*\|")


def _reference_ckr() -> dict[str, int]:
    """Section 2 of tests/reference/error-codes.md: one table row per CKR_ name."""
    text = ERROR_CODES.read_text(encoding="utf-8")  # a missing file fails the test
    start = text.index("\n## 2.")
    end = text.index("\n## 3.", start)
    rows: dict[str, int] = {}
    for line in text[start:end].splitlines():
        m = _ROW.match(line)
        if m:
            name, hexval, decval = m.group(1), int(m.group(2), 16), int(m.group(3))
            assert hexval == decval, f"{name}: hex and decimal columns disagree"
            assert name not in rows, f"{name} listed twice"
            rows[name] = hexval
    return rows


# --- (a) every return value against the reference notes ---------------------------------------

def test_reference_ckr_table_has_105_rows() -> None:
    assert len(_reference_ckr()) == 105


def test_every_reference_ckr_is_known_with_its_value() -> None:
    ckr = FAMILIES["CKR"]
    for name, value in _reference_ckr().items():
        assert name in ckr.names, f"{name} missing"
        assert ckr.value_of(name) == value, f"{name} = {ckr.value_of(name):#x}, expected {value:#x}"


def test_ckr_family_is_exactly_the_reference_set() -> None:
    assert FAMILIES["CKR"].names == _reference_ckr()


# --- (b) well-known values, taken from the header by hand -------------------------------------

KNOWN: dict[str, int] = {
    # return values
    "CKR_OK": 0x0,
    "CKR_GENERAL_ERROR": 0x5,
    "CKR_ARGUMENTS_BAD": 0x7,
    "CKR_ATTRIBUTE_TYPE_INVALID": 0x12,
    "CKR_ACTION_PROHIBITED": 0x1B,
    "CKR_AEAD_DECRYPT_FAILED": 0x42,
    "CKR_MECHANISM_INVALID": 0x70,
    "CKR_PIN_INCORRECT": 0xA0,
    "CKR_PIN_LOCKED": 0xA4,
    "CKR_USER_NOT_LOGGED_IN": 0x101,
    "CKR_BUFFER_TOO_SMALL": 0x150,
    "CKR_CRYPTOKI_NOT_INITIALIZED": 0x190,
    "CKR_PUBLIC_KEY_INVALID": 0x1B9,
    "CKR_OPERATION_CANCEL_FAILED": 0x202,
    "CKR_KEY_EXHAUSTED": 0x203,
    "CKR_PENDING": 0x204,
    "CKR_TOKEN_NOT_INITIALIZED": 0x208,
    "CKR_PARAMETER_SET_NOT_SUPPORTED": 0x209,
    "CKR_VENDOR_DEFINED": 0x80000000,
    # attributes
    "CKA_CLASS": 0x0,
    "CKA_LABEL": 0x3,
    "CKA_UNIQUE_ID": 0x4,
    "CKA_VALUE": 0x11,
    "CKA_KEY_TYPE": 0x100,
    "CKA_ID": 0x102,
    "CKA_SIGN": 0x108,
    "CKA_MODULUS": 0x120,
    "CKA_COEFFICIENT": 0x128,
    "CKA_SUB_PRIME_BITS": 0x134,
    "CKA_EC_PARAMS": 0x180,
    "CKA_ECDSA_PARAMS": 0x180,
    "CKA_EC_POINT": 0x181,
    "CKA_ALWAYS_AUTHENTICATE": 0x202,
    "CKA_WRAP_TEMPLATE": 0x40000211,
    "CKA_DERIVE_TEMPLATE": 0x40000213,
    "CKA_OTP_COUNTER": 0x22E,
    "CKA_OTP_USER_IDENTIFIER": 0x22A,
    "CKA_ALLOWED_MECHANISMS": 0x40000600,
    "CKA_PROFILE_ID": 0x601,
    "CKA_HSS_KEYS_REMAINING": 0x61C,
    "CKA_PARAMETER_SET": 0x61D,
    "CKA_ENCAPSULATE_TEMPLATE": 0x62A,
    "CKA_TRUST_OCSP_SIGNING": 0x632,
    "CKA_SEED": 0x637,
    "CKA_VENDOR_DEFINED": 0x80000000,
    # mechanisms
    "CKM_RSA_PKCS_KEY_PAIR_GEN": 0x0,
    "CKM_RSA_PKCS": 0x1,
    "CKM_RSA_PKCS_OAEP": 0x9,
    "CKM_RSA_PKCS_PSS": 0xD,
    "CKM_SHA256_RSA_PKCS": 0x40,
    "CKM_SHA256": 0x250,
    "CKM_SHA256_HMAC": 0x251,
    "CKM_SHA3_256_KEY_DERIVE": 0x397,
    "CKM_CAST5_CBC": 0x322,
    "CKM_PKCS5_PBKD2": 0x3B0,
    "CKM_SP800_108_COUNTER_KDF": 0x3AC,
    "CKM_EC_KEY_PAIR_GEN": 0x1040,
    "CKM_ECDSA_KEY_PAIR_GEN": 0x1040,
    "CKM_ECDSA": 0x1041,
    "CKM_ECDSA_SHA256": 0x1044,
    "CKM_ECDSA_SHA3_512": 0x104A,
    "CKM_ECDH1_DERIVE": 0x1050,
    "CKM_EDDSA": 0x1057,
    "CKM_EC_KEY_PAIR_GEN_W_EXTRA_BITS": 0x140B,
    "CKM_AES_KEY_GEN": 0x1080,
    "CKM_AES_CBC_PAD": 0x1085,
    "CKM_AES_GCM": 0x1087,
    "CKM_AES_CMAC": 0x108A,
    "CKM_DSA_PROBABLISTIC_PARAMETER_GEN": 0x2003,
    "CKM_AES_KEY_WRAP_PAD": 0x210A,
    "CKM_CHACHA20_POLY1305": 0x4021,
    "CKM_HKDF_DERIVE": 0x402A,
    "CKM_PUB_KEY_FROM_PRIV_KEY": 0x403A,
    "CKM_ML_KEM_KEY_PAIR_GEN": 0xF,
    "CKM_ML_KEM": 0x17,
    "CKM_ML_DSA_KEY_PAIR_GEN": 0x1C,
    "CKM_ML_DSA": 0x1D,
    "CKM_HASH_ML_DSA": 0x1F,
    "CKM_HASH_ML_DSA_SHAKE256": 0x2C,
    "CKM_SLH_DSA_KEY_PAIR_GEN": 0x2D,
    "CKM_SLH_DSA": 0x2E,
    "CKM_HASH_SLH_DSA_SHA224": 0x36,
    "CKM_HASH_SLH_DSA_SHAKE256": 0x3F,
    "CKM_VENDOR_DEFINED": 0x80000000,
    # key types
    "CKK_RSA": 0x0,
    "CKK_EC": 0x3,
    "CKK_ECDSA": 0x3,
    "CKK_GENERIC_SECRET": 0x10,
    "CKK_DES3": 0x15,
    "CKK_CAST5": 0x18,
    "CKK_AES": 0x1F,
    "CKK_EC_EDWARDS": 0x40,
    "CKK_HKDF": 0x42,
    "CKK_ML_KEM": 0x49,
    "CKK_ML_DSA": 0x4A,
    "CKK_SLH_DSA": 0x4B,
    # object classes, certificates, hardware features
    "CKO_DATA": 0x0,
    "CKO_PRIVATE_KEY": 0x3,
    "CKO_SECRET_KEY": 0x4,
    "CKO_PROFILE": 0x9,
    "CKO_VALIDATION": 0xA,
    "CKO_TRUST": 0xB,
    "CKC_X_509": 0x0,
    "CKC_WTLS": 0x2,
    "CKH_CLOCK": 0x2,
    "CKH_USER_INTERFACE": 0x3,
    "CKH_DETERMINISTIC_REQUIRED": 0x2,
    # users, sessions, notifications
    "CKU_SO": 0,
    "CKU_USER": 1,
    "CKU_CONTEXT_SPECIFIC": 2,
    "CKS_RO_PUBLIC_SESSION": 0,
    "CKS_RW_USER_FUNCTIONS": 3,
    "CKS_RW_SO_FUNCTIONS": 4,
    "CKS_LAST_VALIDATION_OK": 1,
    "CKN_OTP_CHANGED": 1,
    # mechanism parameter enumerations
    "CKD_NULL": 0x1,
    "CKD_SHA256_KDF": 0x6,
    "CKD_SHA3_512_KDF_SP800": 0x16,
    "CKD_BLAKE2B_512_KDF": 0x1A,
    "CKG_MGF1_SHA1": 0x1,
    "CKG_MGF1_SHA224": 0x5,
    "CKG_MGF1_SHA3_512": 0x9,
    "CKG_NO_GENERATE": 0x0,
    "CKG_GENERATE_COUNTER_XOR": 0x4,
    "CKZ_DATA_SPECIFIED": 0x1,
    "CKZ_SALT_SPECIFIED": 0x1,
    "CKP_BASELINE_PROVIDER": 0x1,
    "CKP_HKDF_TLS_TOKEN": 0x6,
    "CKP_PKCS5_PBKD2_HMAC_SHA256": 0x4,
    "CKP_PKCS5_PBKD2_HMAC_SHA512_256": 0x8,
    "CKP_ML_DSA_87": 0x3,
    "CKP_ML_KEM_768": 0x2,
    "CKP_SLH_DSA_SHAKE_256F": 0xC,
    "CKT_TRUST_ANCHOR": 0x2,
    "CKT_TRUST_MUST_VERIFY_TRUST": 0x4,
    "CKV_AUTHORITY_TYPE_NIST_CMVP": 0x1,
    "CKV_TYPE_HYBRID": 0x4,
    "CK_CERTIFICATE_CATEGORY_AUTHORITY": 2,
    "CK_SECURITY_DOMAIN_THIRD_PARTY": 3,
    "CK_OTP_OUTPUT_FORMAT": 7,
    "CK_OTP_FORMAT_BINARY": 3,
    "CK_OTP_PARAM_MANDATORY": 2,
    "CK_SP800_108_COUNTER": 2,
    "CK_SP800_108_KEY_HANDLE": 5,
    "CK_SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS": 2,
    # flags
    "CKF_RW_SESSION": 0x2,
    "CKF_SERIAL_SESSION": 0x4,
    "CKF_ASYNC_SESSION": 0x8,
    "CKF_TOKEN_PRESENT": 0x1,
    "CKF_HW_SLOT": 0x4,
    "CKF_RNG": 0x1,
    "CKF_LOGIN_REQUIRED": 0x4,
    "CKF_USER_PIN_INITIALIZED": 0x8,
    "CKF_PROTECTED_AUTHENTICATION_PATH": 0x100,
    "CKF_TOKEN_INITIALIZED": 0x400,
    "CKF_USER_PIN_LOCKED": 0x40000,
    "CKF_SO_PIN_TO_BE_CHANGED": 0x800000,
    "CKF_ASYNC_SESSION_SUPPORTED": 0x4000000,
    "CKF_HW": 0x1,
    "CKF_MULTI_MESSAGE": 0x20,
    "CKF_MULTI_MESSGE": 0x20,
    "CKF_ENCRYPT": 0x100,
    "CKF_SIGN": 0x800,
    "CKF_GENERATE_KEY_PAIR": 0x10000,
    "CKF_DERIVE": 0x80000,
    "CKF_EC_OID": 0x800000,
    "CKF_EC_NAMEDCURVE": 0x800000,
    "CKF_DECAPSULATE": 0x20000000,
    "CKF_EXTENSION": 0x80000000,
    "CKF_LIBRARY_CANT_CREATE_OS_THREADS": 0x1,
    "CKF_OS_LOCKING_OK": 0x2,
    "CKF_INTERFACE_FORK_SAFE": 0x1,
    "CKF_END_OF_MESSAGE": 0x1,
    "CKF_USER_FRIENDLY_OTP": 0x20,
    "CKF_DONT_BLOCK": 0x1,
    "CKF_HKDF_SALT_KEY": 0x4,
    "CKF_ARRAY_ATTRIBUTE": 0x40000000,
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_value(name: str) -> None:
    _, value = lookup(name)
    assert value == KNOWN[name]


# Which family each kind of constant lives in (a flag name in its flag family).
HOME: dict[str, str] = {
    "CKR_PIN_INCORRECT": "CKR",
    "CKA_ECDSA_PARAMS": "CKA",
    "CKM_ECDSA_KEY_PAIR_GEN": "CKM",
    "CKH_CLOCK": "CKH",
    "CKH_HEDGE_REQUIRED": "CKH_HEDGE",
    "CKG_MGF1_SHA256": "CKG_MGF",
    "CKG_GENERATE_RANDOM": "CKG_GENERATOR",
    "CKZ_DATA_SPECIFIED": "CKZ_DATA",
    "CKZ_SALT_SPECIFIED": "CKZ_SALT",
    "CKP_COMPLETE_PROVIDER": "CKP",
    "CKP_PKCS5_PBKD2_HMAC_SHA1": "CKP_PBKDF2_PRF",
    "CKF_RW_SESSION": "CKF_SESSION",
    "CKF_TOKEN_INITIALIZED": "CKF_TOKEN",
    "CKF_REMOVABLE_DEVICE": "CKF_SLOT",
    "CKF_EC_NAMEDCURVE": "CKF_MECHANISM",
    "CKF_OS_LOCKING_OK": "CKF_INIT_ARGS",
    "CKF_INTERFACE_FORK_SAFE": "CKF_INTERFACE",
    "CKF_END_OF_MESSAGE": "CKF_MESSAGE",
    "CKF_EXCLUDE_PIN": "CKF_OTP",
    "CKF_DONT_BLOCK": "CKF_WAIT",
    "CKF_HKDF_SALT_NULL": "CKF_HKDF",
}


@pytest.mark.parametrize("name", sorted(HOME))
def test_constant_lives_in_its_family(name: str) -> None:
    fam, _ = lookup(name)
    assert fam.name == HOME[name]
    assert fam is FAMILIES[HOME[name]]


def test_flag_families_are_flags_and_others_are_not() -> None:
    for name, fam in FAMILIES.items():
        assert fam.is_flags == name.startswith("CKF_"), name
        if fam.is_flags:
            for bit in fam.canonical:
                assert bit and bit & (bit - 1) == 0, f"{fam.canonical[bit]} is not one bit"


def test_vendor_ranges() -> None:
    with_vendor = {"CKR", "CKA", "CKM", "CKK", "CKO", "CKC", "CKH", "CKP"}
    for name, fam in FAMILIES.items():
        expected = 0x80000000 if name in with_vendor else None
        assert fam.vendor_defined == expected, name
        if expected is not None:
            assert fam.canonical[expected] == f"{name}_VENDOR_DEFINED"


# Counted in the 3.2 header: every #define of the family, deprecated ones and aliases included.
COUNTS: dict[str, tuple[int, int]] = {  # family -> (names, distinct values)
    "CKR": (105, 105),
    "CKA": (160, 158),
    "CKM": (480, 464),
    "CKK": (69, 67),
    "CKO": (13, 13),
    "CKC": (4, 4),
    "CKH": (4, 4),
    "CKH_HEDGE": (3, 3),
    "CKD": (26, 26),
    "CKF_TOKEN": (21, 21),
    "CKF_MECHANISM": (31, 29),
    "CKF_SESSION": (3, 3),
    "CKF_SLOT": (3, 3),
    "CKF_OTP": (6, 6),
    "CKG_MGF": (9, 9),
    "CKG_GENERATOR": (5, 5),
    "CKP": (8, 8),
    "CKP_PBKDF2_PRF": (8, 8),
    "CKP_SLH_DSA": (12, 12),
    "CKS": (5, 5),
    "CKU": (3, 3),
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_family_size(name: str) -> None:
    fam = FAMILIES[name]
    assert (len(fam.names), len(fam.canonical)) == COUNTS[name]


def test_canonical_names_prefer_the_current_spelling() -> None:
    assert FAMILIES["CKA"].name_of(0x180) == "CKA_EC_PARAMS"
    assert FAMILIES["CKA"].name_of(0x134) == "CKA_SUBPRIME_BITS"
    assert FAMILIES["CKM"].name_of(0x1040) == "CKM_EC_KEY_PAIR_GEN"
    assert FAMILIES["CKM"].name_of(0x322) == "CKM_CAST128_CBC"
    assert FAMILIES["CKM"].name_of(0x397) == "CKM_SHA3_256_KEY_DERIVATION"
    assert FAMILIES["CKM"].name_of(0x2003) == "CKM_DSA_PROBABILISTIC_PARAMETER_GEN"
    assert FAMILIES["CKK"].name_of(0x3) == "CKK_EC"
    assert FAMILIES["CKK"].name_of(0x18) == "CKK_CAST128"
    assert FAMILIES["CKF_MECHANISM"].name_of(0x20) == "CKF_MULTI_MESSAGE"
    assert FAMILIES["CKF_MECHANISM"].name_of(0x800000) == "CKF_EC_OID"


def test_values_fit_a_32_bit_ulong() -> None:
    for fam in FAMILIES.values():
        for name, value in fam.names.items():
            assert 0 <= value <= 0xFFFFFFFF, name


def test_every_family_is_named_after_its_prefix() -> None:
    for name, fam in FAMILIES.items():
        assert fam.name == name
        assert fam.description
        prefix = name.split("_")[0] + "_" if not name.startswith("CK_") else "CK_"
        for const in fam.names:
            assert const.startswith(prefix), const


# --- (c) round trips ---------------------------------------------------------------------------

def test_value_round_trip() -> None:
    for fam in FAMILIES.values():
        for value in fam.canonical:
            assert fam.value_of(fam.name_of(value)) == value, (fam.name, value)


def test_name_round_trip_goes_to_the_canonical_name() -> None:
    for fam in FAMILIES.values():
        for name, value in fam.names.items():
            assert fam.name_of(fam.value_of(name)) == fam.canonical[value], name


def test_lookup_agrees_with_every_family() -> None:
    for fam in FAMILIES.values():
        for name, value in fam.names.items():
            assert lookup(name) == (fam, value)


# --- (d) rendering of vendor, unknown and flag values -----------------------------------------

def test_vendor_and_unknown_rendering() -> None:
    assert FAMILIES["CKM"].name_of(0x80000001) == "CKM_VENDOR_DEFINED+0x1"
    assert FAMILIES["CKM"].render(0x80001234) == "CKM_VENDOR_DEFINED+0x1234"
    assert FAMILIES["CKR"].name_of(0x80000000) == "CKR_VENDOR_DEFINED"
    assert FAMILIES["CKR"].name_of(0x4242) == "0x4242"
    assert FAMILIES["CKA"].name_of(0x80000005) == "CKA_VENDOR_DEFINED+0x5"
    assert FAMILIES["CKU"].name_of(0x80000000) == "0x80000000"  # CKU has no vendor range


def test_flags_rendering() -> None:
    session = FAMILIES["CKF_SESSION"]
    assert session.render(6) == "CKF_RW_SESSION|CKF_SERIAL_SESSION"
    assert session.render(0x16) == "CKF_RW_SESSION|CKF_SERIAL_SESSION|0x10"
    assert session.render(0) == "0"
    token = FAMILIES["CKF_TOKEN"]
    assert token.render(0x40D) == (
        "CKF_RNG|CKF_LOGIN_REQUIRED|CKF_USER_PIN_INITIALIZED|CKF_TOKEN_INITIALIZED")
    # an alias bit shows once, under its canonical name
    assert FAMILIES["CKF_MECHANISM"].render(0x800020) == "CKF_MULTI_MESSAGE|CKF_EC_OID"


# --- (e) attributes ----------------------------------------------------------------------------

def test_every_cka_name_has_an_attribute() -> None:
    cka = FAMILIES["CKA"]
    assert set(attributes.BY_NAME) == set(cka.names)
    assert set(attributes.ATTRIBUTES) == set(cka.canonical)
    for value, name in cka.canonical.items():
        attr = attributes.attribute(value)
        assert attr is attributes.ATTRIBUTES[value]
        assert (attr.name, attr.value) == (name, value)
    for name, attr in attributes.BY_NAME.items():
        assert attr.value == cka.value_of(name)


TYPES: dict[str, tuple[ValueType, str | None]] = {
    "CKA_CLASS": (ValueType.ENUM, "CKO"),
    "CKA_KEY_TYPE": (ValueType.ENUM, "CKK"),
    "CKA_CERTIFICATE_TYPE": (ValueType.ENUM, "CKC"),
    "CKA_KEY_GEN_MECHANISM": (ValueType.ENUM, "CKM"),
    "CKA_MECHANISM_TYPE": (ValueType.ENUM, "CKM"),
    "CKA_NAME_HASH_ALGORITHM": (ValueType.ENUM, "CKM"),
    "CKA_HW_FEATURE_TYPE": (ValueType.ENUM, "CKH"),
    "CKA_CERTIFICATE_CATEGORY": (ValueType.ENUM, "CK_CERTIFICATE_CATEGORY"),
    "CKA_PROFILE_ID": (ValueType.ENUM, "CKP"),
    "CKA_OTP_FORMAT": (ValueType.ENUM, "CK_OTP_FORMAT"),
    "CKA_TRUST_SERVER_AUTH": (ValueType.ENUM, "CKT"),
    "CKA_TOKEN": (ValueType.BOOL, None),
    "CKA_PRIVATE": (ValueType.BOOL, None),
    "CKA_SENSITIVE": (ValueType.BOOL, None),
    "CKA_ENCRYPT": (ValueType.BOOL, None),
    "CKA_DECAPSULATE": (ValueType.BOOL, None),
    "CKA_ALWAYS_AUTHENTICATE": (ValueType.BOOL, None),
    "CKA_MODULUS_BITS": (ValueType.ULONG, None),
    "CKA_VALUE_LEN": (ValueType.ULONG, None),
    "CKA_SUB_PRIME_BITS": (ValueType.ULONG, None),
    "CKA_MODULUS": (ValueType.BIGINT, None),
    "CKA_PUBLIC_EXPONENT": (ValueType.BIGINT, None),
    "CKA_PRIVATE_EXPONENT": (ValueType.BIGINT, None),
    "CKA_PRIME_1": (ValueType.BIGINT, None),
    "CKA_COEFFICIENT": (ValueType.BIGINT, None),
    "CKA_PRIME": (ValueType.BIGINT, None),
    "CKA_SUBPRIME": (ValueType.BIGINT, None),
    "CKA_BASE": (ValueType.BIGINT, None),
    "CKA_LABEL": (ValueType.STRING, None),
    "CKA_APPLICATION": (ValueType.STRING, None),
    "CKA_URL": (ValueType.STRING, None),
    "CKA_UNIQUE_ID": (ValueType.STRING, None),
    "CKA_MIME_TYPES": (ValueType.STRING, None),
    "CKA_START_DATE": (ValueType.DATE, None),
    "CKA_END_DATE": (ValueType.DATE, None),
    "CKA_WRAP_TEMPLATE": (ValueType.ATTRIBUTES, None),
    "CKA_UNWRAP_TEMPLATE": (ValueType.ATTRIBUTES, None),
    "CKA_DERIVE_TEMPLATE": (ValueType.ATTRIBUTES, None),
    "CKA_ENCAPSULATE_TEMPLATE": (ValueType.ATTRIBUTES, None),
    "CKA_DECAPSULATE_TEMPLATE": (ValueType.ATTRIBUTES, None),
    "CKA_ALLOWED_MECHANISMS": (ValueType.MECHANISMS, None),
    "CKA_HSS_LMS_TYPES": (ValueType.ULONGS, None),
    "CKA_ID": (ValueType.BYTES, None),
    "CKA_SUBJECT": (ValueType.BYTES, None),
    "CKA_ISSUER": (ValueType.BYTES, None),
    "CKA_SERIAL_NUMBER": (ValueType.BYTES, None),
    "CKA_VALUE": (ValueType.BYTES, None),
    "CKA_EC_PARAMS": (ValueType.BYTES, None),
    "CKA_ECDSA_PARAMS": (ValueType.BYTES, None),
    "CKA_EC_POINT": (ValueType.BYTES, None),
    "CKA_SEED": (ValueType.BYTES, None),
    "CKA_VENDOR_DEFINED": (ValueType.BYTES, None),
}


@pytest.mark.parametrize("name", sorted(TYPES))
def test_attribute_type(name: str) -> None:
    attr = attributes.BY_NAME[name]
    assert (attr.type, attr.family) == TYPES[name]


def test_enum_attributes_name_an_existing_family() -> None:
    for attr in attributes.BY_NAME.values():
        if attr.type in (ValueType.ENUM, ValueType.FLAGS):
            assert attr.family in FAMILIES, attr.name
        else:
            assert attr.family is None, attr.name


def test_secret_attributes() -> None:
    always = {"CKA_PRIVATE_EXPONENT", "CKA_PRIME_1", "CKA_PRIME_2", "CKA_EXPONENT_1",
              "CKA_EXPONENT_2", "CKA_COEFFICIENT", "CKA_SEED"}
    for name in always:
        attr = attributes.BY_NAME[name]
        assert attr.secret and not attr.secret_if_key, name
    value = attributes.BY_NAME["CKA_VALUE"]
    assert value.secret_if_key and not value.secret
    public = {"CKA_MODULUS", "CKA_PUBLIC_EXPONENT", "CKA_EC_POINT", "CKA_EC_PARAMS", "CKA_LABEL",
              "CKA_ID", "CKA_PRIME", "CKA_BASE", "CKA_CHECK_VALUE", "CKA_PUBLIC_KEY_INFO"}
    for name in public:
        attr = attributes.BY_NAME[name]
        assert not attr.secret and not attr.secret_if_key, name
    assert [a.name for a in attributes.ATTRIBUTES.values() if a.secret_if_key] == ["CKA_VALUE"]


def test_unknown_attribute_reads_as_bytes() -> None:
    vendor = attributes.attribute(0x80000005)
    assert (vendor.name, vendor.value, vendor.type) == (
        "CKA_VENDOR_DEFINED+0x5", 0x80000005, ValueType.BYTES)
    assert not vendor.secret and not vendor.secret_if_key
    undefined = attributes.attribute(0x4242)
    assert (undefined.name, undefined.type) == ("0x4242", ValueType.BYTES)


# --- (f) lookup --------------------------------------------------------------------------------

def test_lookup() -> None:
    fam, value = lookup("CKR_PIN_INCORRECT")
    assert fam is constants.CKR and fam.name == "CKR"
    assert value == 0xA0
    assert lookup("CKA_ECDSA_PARAMS") == (constants.CKA, 0x180)
    assert lookup("CKF_RW_SESSION") == (FAMILIES["CKF_SESSION"], 0x2)
    with pytest.raises(KeyError):
        lookup("CKR_NO_SUCH_THING")
