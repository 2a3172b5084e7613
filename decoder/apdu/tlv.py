"""BER-TLV (ISO/IEC 7816-4 / X.690 framing) parsed by hand into a tree with tag names.

Framing is done by hand (as pySim does) because card data is untrusted and often slightly
wrong: a parser that raises would lose the part that did parse. Every problem becomes a node
(kind "raw" with an error) so a renderer always has something to show.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# Tags whose encoding lies about their structure: PIV's data container (53) and OpenPGP's
# extended header list (4D) hold data objects although their tags say primitive (read as
# constructed when the value parses cleanly); header lists (7F48, 5D) hold tags and lengths
# without values although 7F48 says constructed. Inside PIV's 53 every item is a plain value
# (FASC-N 30, certificate 70, CertInfo 71 carry the constructed bit all the same).
AS_CONSTRUCTED = {0x4D, 0x53}
FLAT_CHILDREN = {0x53}
AS_PRIMITIVE = {0x7F48, 0x5D}
MAX_DEPTH = 12  # nesting deeper than this is shown as raw: no real card data goes this deep
HEX_PREVIEW = 32  # bytes of a long primitive value shown inline


def hexs(b: bytes, limit: int | None = None) -> str:
    """Upper-case hex with spaces, the way card people and OpenSC logs write APDUs."""
    if limit is not None and len(b) > limit:
        return b[:limit].hex(" ").upper() + f" … ({len(b)} bytes)"
    return b.hex(" ").upper()


# --------------------------------------------------------------------------------------------
# Names that several tables share


AIDS: list[tuple[bytes, str, str | None]] = [
    # (prefix, name, application key used for context-dependent decoding)
    (bytes.fromhex("A000000308000010000100"), "PIV card application", "piv"),
    (bytes.fromhex("A0000003080000100001"), "PIV card application", "piv"),
    (bytes.fromhex("A00000030800001000"), "PIV card application", "piv"),
    (bytes.fromhex("A000000308"), "NIST PIV (RID)", "piv"),
    (bytes.fromhex("D27600012401"), "OpenPGP card application", "openpgp"),
    (bytes.fromhex("A0000001510000"), "GlobalPlatform Issuer Security Domain", "gp"),
    (bytes.fromhex("A000000003000000"), "Card Manager / Issuer Security Domain (OP)", "gp"),
    (bytes.fromhex("A000000151"), "GlobalPlatform (RID)", "gp"),
    (bytes.fromhex("A0000005272101"), "Yubico OATH", "oath"),
    (bytes.fromhex("A0000005272001"), "Yubico OTP", "otp"),
    (bytes.fromhex("A000000527471117"), "Yubico management", "yubico-mgmt"),
    (bytes.fromhex("A000000527"), "Yubico (RID)", None),
    (bytes.fromhex("A0000006472F0001"), "FIDO U2F / CTAP", "fido"),
    (bytes.fromhex("E82B0601040181C31F0201"), "SmartCard-HSM", "sc-hsm"),
    (bytes.fromhex("A000000063504B43532D3135"), "PKCS#15 application", "pkcs15"),
    (bytes.fromhex("A000000397425446590201"), "Microsoft GIDS", "gids"),
    (bytes.fromhex("A000000397"), "Microsoft (RID)", None),
    (bytes.fromhex("A0000000790100"), "CAC PKI certificate applet", "cac"),
    (bytes.fromhex("A000000079"), "US DoD CAC (RID)", "cac"),
    (bytes.fromhex("A0000002471001"), "ICAO eMRTD (LDS1)", "emrtd"),
    (bytes.fromhex("D2760000850101"), "NFC Forum NDEF tag application", "ndef"),
    (b"1PAY.SYS.DDF01", "EMV payment system environment", "emv"),
    (b"2PAY.SYS.DDF01", "EMV proximity payment system environment", "emv"),
    (bytes.fromhex("A000000003"), "Visa (RID)", "emv"),
    (bytes.fromhex("A000000004"), "Mastercard (RID)", "emv"),
]


def aid_info(aid: bytes) -> tuple[str | None, str | None]:
    """(name, application key) for an AID; the longest listed prefix wins."""
    best: tuple[bytes, str, str | None] | None = None
    for prefix, name, app in AIDS:
        if aid.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, name, app)
    # A truncated AID (partial select) still names its application.
    if best is None and len(aid) >= 5:
        for prefix, name, app in AIDS:
            if prefix.startswith(aid):
                return name + " (partial AID)", app
    return (best[1], best[2]) if best else (None, None)


PIV_OBJECTS: dict[int, str] = {
    0x5FC107: "Card Capability Container",
    0x5FC102: "Card Holder Unique Identifier (CHUID)",
    0x5FC105: "X.509 Certificate for PIV Authentication (9A)",
    0x5FC103: "Cardholder Fingerprints",
    0x5FC106: "Security Object",
    0x5FC108: "Cardholder Facial Image",
    0x5FC101: "X.509 Certificate for Card Authentication (9E)",
    0x5FC10A: "X.509 Certificate for Digital Signature (9C)",
    0x5FC10B: "X.509 Certificate for Key Management (9D)",
    0x5FC109: "Printed Information",
    0x7E: "Discovery Object",
    0x5FC10C: "Key History Object",
    **{0x5FC10D + i: f"Retired X.509 Certificate for Key Management {i + 1}" for i in range(20)},
    0x5FC121: "Cardholder Iris Images",
    0x7F61: "Biometric Information Templates Group Template",
    0x5FC122: "Secure Messaging Certificate Signer",
    0x5FC123: "Pairing Code Reference Data Container",
    0x5FFF00: "YubiKey admin data",
    0x5FFF01: "YubiKey attestation certificate",
}

PIV_ALGORITHMS: dict[int, str] = {
    0x00: "3DES (default)", 0x03: "3DES-ECB", 0x05: "RSA 3072 (YubiKey)", 0x06: "RSA 1024",
    0x07: "RSA 2048", 0x08: "AES-128-ECB", 0x0A: "AES-192-ECB", 0x0C: "AES-256-ECB",
    0x11: "ECC P-256", 0x14: "ECC P-384", 0x16: "RSA 4096 (YubiKey)",
    0x27: "cipher suite 2 (SM, P-256)", 0x2E: "cipher suite 7 (SM, P-384)",
    0xE0: "Ed25519 (YubiKey)", 0xE1: "X25519 (YubiKey)",
}

PIV_KEYS: dict[int, str] = {
    0x04: "PIV secure messaging key", 0x9A: "PIV Authentication key",
    0x9B: "Card Application Administration (management) key",
    0x9C: "Digital Signature key", 0x9D: "Key Management key",
    0x9E: "Card Authentication key", 0xF9: "YubiKey attestation key",
    **{0x82 + i: f"Retired Key Management key {i + 1}" for i in range(20)},
}

CURVES: dict[bytes, str] = {
    bytes.fromhex("2A8648CE3D030107"): "NIST P-256",
    bytes.fromhex("2B81040022"): "NIST P-384",
    bytes.fromhex("2B81040023"): "NIST P-521",
    bytes.fromhex("2B8104000A"): "secp256k1",
    bytes.fromhex("2B2403030208010107"): "brainpoolP256r1",
    bytes.fromhex("2B240303020801010B"): "brainpoolP384r1",
    bytes.fromhex("2B240303020801010D"): "brainpoolP512r1",
    bytes.fromhex("2B060104019755010501"): "Curve25519 (X25519)",
    bytes.fromhex("2B06010401DA470F01"): "Ed25519",
}


# --------------------------------------------------------------------------------------------
# Value formatters: they return one short text; a formatter that cannot make sense of a value
# returns None and the value is shown as hex.


def _text(v: bytes) -> str | None:
    try:
        s = v.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return repr(s) if s.isprintable() else None


def _int(v: bytes) -> str | None:
    return str(int.from_bytes(v, "big")) if 0 < len(v) <= 8 else None


def _aid(v: bytes) -> str | None:
    name, _ = aid_info(v)
    return f"{hexs(v)} ({name})" if name else hexs(v)


def _piv_objects(v: bytes) -> str | None:
    if not v:
        return None
    tag = int.from_bytes(v, "big")
    return f"{v.hex().upper()} ({PIV_OBJECTS.get(tag, 'unknown object')})"


def _piv_alg(v: bytes) -> str | None:
    return f"{v[0]:02X} ({PIV_ALGORITHMS.get(v[0], 'unknown algorithm')})" if len(v) == 1 else None


_PIN_POLICY_1 = {0x40: "PIV PIN", 0x20: "global PIN", 0x10: "on-card biometric comparison",
                 0x08: "virtual contact interface (pairing code)"}
_PIN_POLICY_2 = {0x00: "no primary PIN named", 0x10: "PIV PIN is primary",
                 0x20: "global PIN is primary"}


def _pin_policy(v: bytes) -> str | None:
    if len(v) != 2:
        return None
    ok = [name for bit, name in _PIN_POLICY_1.items() if v[0] & bit]
    prim = _PIN_POLICY_2.get(v[1], f"second byte {v[1]:02X}")
    return f"{hexs(v)}: satisfied by {', '.join(ok) or 'nothing listed'}; {prim}"


def _pw_status(v: bytes) -> str | None:
    if len(v) < 7:
        return None
    once = {0: "PW1 valid for one signature", 1: "PW1 valid for several signatures"}
    return (f"{once.get(v[0], f'{v[0]:02X}')}; max length PW1 {v[1] & 0x7F}, RC {v[2]}, "
            f"PW3 {v[3]}; tries left PW1 {v[4]}, RC {v[5]}, PW3 {v[6]}")


_PGP_ALGOS = {0x01: "RSA", 0x12: "ECDH", 0x13: "ECDSA", 0x16: "EdDSA"}


def _pgp_algo(v: bytes) -> str | None:
    if not v:
        return None
    name = _PGP_ALGOS.get(v[0])
    if v[0] == 0x01 and len(v) >= 5:
        return f"RSA {int.from_bytes(v[1:3], 'big')} bits, exponent {int.from_bytes(v[3:5], 'big')}"
    if name and len(v) > 1:
        oid = v[1:-1] if v[-1] == 0xFF else v[1:]
        return f"{name} {CURVES.get(oid, 'curve ' + oid.hex().upper())}"
    return None


def _fingerprints(v: bytes) -> str | None:
    if not v or len(v) % 20:
        return None
    parts = [v[i:i + 20] for i in range(0, len(v), 20)]
    return "; ".join("(none)" if not any(p) else p.hex().upper() for p in parts)


def _timestamps(v: bytes) -> str | None:
    if not v or len(v) % 4:
        return None
    out = []
    for i in range(0, len(v), 4):
        t = int.from_bytes(v[i:i + 4], "big")
        out.append("(none)" if t == 0 else
                   _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"))
    return "; ".join(out)


_EXT_CAPS = {0x80: "secure messaging", 0x40: "GET CHALLENGE", 0x20: "key import",
             0x10: "PW status changeable", 0x08: "private use DOs",
             0x04: "algorithm attributes changeable", 0x02: "PSO DEC/ENC with AES",
             0x01: "KDF-DO"}


def _ext_caps(v: bytes) -> str | None:
    if not v:
        return None
    flags = [name for bit, name in _EXT_CAPS.items() if v[0] & bit]
    tail = ""
    if len(v) >= 8:
        tail = (f"; max challenge {int.from_bytes(v[2:4], 'big')}, max cardholder cert "
                f"{int.from_bytes(v[4:6], 'big')}, max special DO {int.from_bytes(v[6:8], 'big')}")
    return (", ".join(flags) or "no flags") + tail


_KEY_STATUS = {0: "not present", 1: "generated on card", 2: "imported"}
_PGP_KEYREF = {1: "signature", 2: "decryption", 3: "authentication", 0x81: "attestation"}


def _key_info(v: bytes) -> str | None:
    if not v or len(v) % 2:
        return None
    return "; ".join(f"{_PGP_KEYREF.get(v[i], f'key {v[i]:02X}')}: "
                     f"{_KEY_STATUS.get(v[i + 1], f'{v[i + 1]:02X}')}"
                     for i in range(0, len(v), 2))


_UIF = {0: "touch off", 1: "touch on", 2: "touch on (fixed)", 3: "cached", 4: "cached (fixed)"}


def _uif(v: bytes) -> str | None:
    return _UIF.get(v[0]) if len(v) == 2 else None


_SEX = {0x30: "not known", 0x31: "male", 0x32: "female", 0x39: "not applicable"}


def _sex(v: bytes) -> str | None:
    return _SEX.get(v[0]) if len(v) == 1 else None


_EF_STRUCT = {0: "no EF structure", 1: "transparent", 2: "linear fixed", 3: "linear fixed TLV",
              4: "linear variable", 5: "linear variable TLV", 6: "cyclic", 7: "cyclic TLV"}


def _fdb(v: bytes) -> str | None:
    if not v:
        return None
    b = v[0]
    if b & 0x80:
        return f"{b:02X} (proprietary)"
    kind = "DF" if b & 0x38 == 0x38 else ("internal EF" if b & 0x38 == 0x08 else
                                          "working EF" if b & 0x38 == 0 else "proprietary EF")
    text = f"{b:02X}: {kind}"
    if kind != "DF":
        text += f", {_EF_STRUCT[b & 0x07]}"
    if b & 0x40:
        text += ", shareable"
    return text + (f"; more: {hexs(v[1:])}" if len(v) > 1 else "")


_LCS = {0x00: "no information", 0x01: "creation state", 0x03: "initialisation state",
        0x05: "operational, activated", 0x07: "operational, activated",
        0x04: "operational, deactivated", 0x06: "operational, deactivated",
        0x0C: "termination state", 0x0D: "termination state", 0x0E: "termination state",
        0x0F: "termination state"}


def _lcs(v: bytes) -> str | None:
    return f"{v[0]:02X}: {_LCS.get(v[0], 'proprietary')}" if len(v) == 1 else None


def _oid(v: bytes) -> str | None:
    if not v or v[-1] & 0x80:
        return None
    if v in CURVES:
        return CURVES[v]
    arcs, acc = [], 0
    for byte in v:
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(acc)
            acc = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


_GP_LCS_APP = {0x01: "LOADED", 0x03: "INSTALLED", 0x07: "SELECTABLE", 0x0F: "PERSONALIZED",
               0x83: "LOCKED"}


def _gp_lcs(v: bytes) -> str | None:
    return f"{v[0]:02X} ({_GP_LCS_APP.get(v[0], 'application-specific')})" if len(v) == 1 else None


FORMATTERS: dict[str, Callable[[bytes], str | None]] = {
    "text": _text, "int": _int, "aid": _aid, "piv_object": _piv_objects, "piv_alg": _piv_alg,
    "pin_policy": _pin_policy, "pw_status": _pw_status, "pgp_algo": _pgp_algo,
    "fingerprints": _fingerprints, "timestamps": _timestamps, "ext_caps": _ext_caps,
    "key_info": _key_info, "uif": _uif, "sex": _sex, "fdb": _fdb, "lcs": _lcs, "oid": _oid,
    "date": _text, "gp_lcs": _gp_lcs, "secret": lambda v: f"{len(v)} bytes (not shown)",
}


# --------------------------------------------------------------------------------------------
# Tag tables. A name is looked up in: the parent's table for this application, the parent's
# table for any application, this application's top-level table, then the generic table.

Spec = tuple[str, str | None]  # (name, formatter key)

_FCP: dict[int, Spec] = {
    0x80: ("number of data bytes in the file", "int"),
    0x81: ("number of data bytes incl. structural information", "int"),
    0x82: ("file descriptor", "fdb"), 0x83: ("file identifier", None),
    0x84: ("DF name (AID)", "aid"), 0x85: ("proprietary information", None),
    0x86: ("security attributes (proprietary)", None), 0x87: ("FCI extension file id", None),
    0x88: ("short EF identifier", None), 0x8A: ("life cycle status", "lcs"),
    0x8B: ("security attributes (expanded, referenced)", None),
    0x8C: ("security attributes (compact)", None), 0x8D: ("security environment file id", None),
    0x8E: ("channel security attribute", None), 0xA0: ("security attribute template (data)",
                                                         None),
    0xA1: ("security attribute template (proprietary)", None),
    0xA2: ("template of pairs of file references", None),
    0xA5: ("proprietary information (constructed)", None),
    0xAB: ("security attributes (expanded)", None), 0xAC: ("cryptographic mechanism ids", None),
    0x50: ("application label", "text"),
}

_GENERIC: dict[int, Spec] = {
    0x06: ("object identifier", "oid"),
    0x4F: ("application identifier (AID)", "aid"), 0x50: ("application label", "text"),
    0x51: ("path", None), 0x52: ("command to perform", None),
    0x53: ("discretionary data / data object", None), 0x54: ("offset", "int"),
    0x5C: ("tag list", None), 0x5D: ("header list", None),
    0x5F50: ("uniform resource locator", "text"),
    0x5F2F: ("PIN usage policy", "pin_policy"), 0x5F52: ("historical bytes", None),
    0x5F2D: ("language preferences", "text"),
    0x61: ("application template", None), 0x62: ("FCP template (file control parameters)", None),
    0x64: ("FMD template (file management data)", None), 0x66: ("card data", None),
    0x6F: ("FCI template (file control information)", None),
    0x73: ("discretionary data objects", None), 0x7C: ("dynamic authentication template", None),
    0x7E: ("discovery object", None), 0x7F49: ("public key", None),
    0x7F21: ("cardholder certificate", None), 0x7F60: ("biometric information template", None),
    0x7F61: ("biometric information group template", None),
    0x9F7F: ("card production life cycle (CPLC)", None), 0xBF0C: ("FCI issuer discretionary",
                                                                  None),
    # OpenPGP data objects that no other application here uses at the top level.
    0x5B: ("name", "text"), 0x5E: ("login data", "text"), 0x65: ("cardholder related data", None),
    0x6E: ("application related data", None), 0x7A: ("security support template", None),
    0x93: ("digital signature counter", "int"), 0x5F35: ("sex", "sex"),
    0x5F48: ("cardholder private key", "secret"), 0x7F48: ("cardholder private key template", None),
    0x7F66: ("extended length information", None), 0x7F74: ("general feature management", None),
    0x0101: ("private use DO 1", None), 0x0102: ("private use DO 2", None),
    0x0103: ("private use DO 3", None), 0x0104: ("private use DO 4", None),
    0xC0: ("extended capabilities", "ext_caps"),
    0xC1: ("algorithm attributes: signature", "pgp_algo"),
    0xC2: ("algorithm attributes: decryption", "pgp_algo"),
    0xC3: ("algorithm attributes: authentication", "pgp_algo"),
    0xC4: ("PW status bytes", "pw_status"), 0xC5: ("fingerprints", "fingerprints"),
    0xC6: ("CA fingerprints", "fingerprints"), 0xC7: ("fingerprint: signature key", None),
    0xC8: ("fingerprint: decryption key", None), 0xC9: ("fingerprint: authentication key", None),
    0xCA: ("CA fingerprint 1", None), 0xCB: ("CA fingerprint 2", None),
    0xCC: ("CA fingerprint 3", None), 0xCD: ("key generation dates", "timestamps"),
    0xCE: ("generation date: signature key", "timestamps"),
    0xCF: ("generation date: decryption key", "timestamps"),
    0xD0: ("generation date: authentication key", "timestamps"),
    0xD3: ("resetting code", None), 0xD5: ("AES key for PSO:ENC/DEC", None),
    0xD6: ("user interaction flag: signature", "uif"),
    0xD7: ("user interaction flag: decryption", "uif"),
    0xD8: ("user interaction flag: authentication", "uif"),
    0xD9: ("user interaction flag: attestation", "uif"),
    0xDA: ("algorithm attributes: attestation", "pgp_algo"),
    0xDB: ("fingerprint: attestation key", None), 0xDC: ("CA fingerprint 4", None),
    0xDD: ("generation date: attestation key", "timestamps"),
    0xDE: ("key information", "key_info"), 0xF9: ("KDF data object", None),
    0xFA: ("algorithm information", None), 0xFC: ("attestation certificate", None),
    **{tag: (f"PIV object: {name}", None) for tag, name in PIV_OBJECTS.items() if tag > 0xFF},
}

_BY_APP: dict[str, dict[int, Spec]] = {
    "piv": {
        0x53: ("PIV data container", None), 0x70: ("certificate", None),
        0x71: ("CertInfo", None), 0x7E: ("discovery object", None),
        0xAC: ("cryptographic mechanism template", None),
    },
    "gp": {
        0x42: ("issuer identification number (IIN)", None),
        0x45: ("card image number (CIN)", None), 0x66: ("card data", None),
        0x9F7F: ("card production life cycle (CPLC)", None),
        0xE0: ("key information template", None), 0xCF: ("key diversification data", None),
        0xC1: ("sequence counter of the default key version", "int"),
        0xC2: ("confirmation counter", "int"), 0xE3: ("GlobalPlatform registry entry", None),
        0x2F00: ("list of applications", None),
    },
}

_IN_PARENT: dict[tuple[str, int], dict[int, Spec]] = {
    ("*", 0x62): _FCP, ("*", 0x6F): _FCP, ("*", 0x64): _FCP,
    ("*", 0xA5): {0x50: ("application label", "text"), 0x87: ("application priority", None),
                  0x88: ("short file identifier", None), 0x5F2D: ("language preference", "text"),
                  0x9F38: ("processing options data object list", None),
                  0xBF0C: ("FCI issuer discretionary data", None),
                  0x73: ("security domain management data", None),
                  0x9F6E: ("application production life cycle data", None),
                  0x9F65: ("maximum length of command data field", "int")},
    ("*", 0x61): {0x4F: ("application identifier (PIX)", "aid"),
                  0x79: ("coexistent tag allocation authority", None),
                  0x50: ("application label", "text"), 0x5F50: ("URL", "text"),
                  0xAC: ("cryptographic algorithms supported", None)},
    ("*", 0x79): {0x4F: ("tag allocation authority AID", "aid")},
    ("*", 0xAC): {0x80: ("cryptographic mechanism", "piv_alg"), 0x06: ("object identifier",
                                                                         "oid"),
                  0x81: ("parameter", None), 0xAA: ("PIN policy (YubiKey)", None),
                  0xAB: ("touch policy (YubiKey)", None)},
    ("*", 0x7C): {0x80: ("witness", None), 0x81: ("challenge", None), 0x82: ("response", None),
                  0x85: ("exponentiation (ECDH peer public point)", None)},
    ("*", 0x7F49): {0x81: ("modulus", None), 0x82: ("public exponent", None),
                    0x86: ("EC point", None), 0x06: ("curve OID", "oid")},
    ("*", 0x7E): {0x4F: ("PIV card application AID", "aid"),
                  0x5F2F: ("PIN usage policy", "pin_policy")},
    ("piv", 0x53): {
        0x70: ("certificate", None), 0x71: ("CertInfo (1 = gzip compressed)", None),
        0x72: ("MSCUID", None), 0xFE: ("error detection code", None),
        0x30: ("FASC-N", None), 0x32: ("organizational identifier", None),
        0x33: ("DUNS", None), 0x34: ("GUID", None), 0x35: ("expiration date", "date"),
        0x36: ("cardholder UUID", None), 0x3E: ("issuer asymmetric signature", None),
        0xEE: ("buffer length", "int"), 0xF0: ("card identifier", None),
        0xF1: ("capability container version", None), 0xF2: ("capability grammar version",
                                                              None),
        0xF3: ("application card URL / off-card certificate URL", None),
        0xF4: ("PKCS#15", None), 0xF5: ("registered data model number", None),
        0xF6: ("access control rule table", None), 0xF7: ("card APDUs", None),
        0xFA: ("redirection tag", None), 0xFB: ("capability tuples", None),
        0xFC: ("status tuples", None), 0xFD: ("next CCC", None),
        0xE3: ("extended application card URL", None), 0xB4: ("security object buffer", None),
        0xC1: ("keys with on-card certificates", "int"),
        0xC2: ("keys with off-card certificates", "int"),
        0xBA: ("mapping of DG to container ID", None), 0xBB: ("security object", None),
        0x01: ("name", "text"), 0x02: ("employee affiliation", "text"),
        0x04: ("expiration date", "text"), 0x05: ("agency card serial number", "text"),
        0x06: ("issuer identification", "text"),
    },
    ("*", 0x6E): {0x4F: ("application identifier (AID)", "aid"),
                  0x5F52: ("historical bytes", None),
                  0x7F66: ("extended length information", None),
                  0x7F74: ("general feature management", None),
                  0x73: ("discretionary data objects", None)},
    ("*", 0x65): {0x5B: ("name", "text"), 0x5F2D: ("language preferences", "text"),
                  0x5F35: ("sex", "sex")},
    ("*", 0x7A): {0x93: ("digital signature counter", "int")},
    ("*", 0x7F66): {0x02: ("maximum length (command, then response)", "int")},
    ("*", 0xE3): {0x4F: ("AID", "aid"), 0x9F70: ("life cycle state", "gp_lcs"),
                  0xC5: ("privileges", None), 0xC4: ("executable load file AID", "aid"),
                  0xCE: ("executable load file version", None),
                  0x84: ("executable module AID", "aid"),
                  0xCC: ("associated security domain AID", "aid")},
    ("*", 0xE0): {0xC0: ("key information data", None)},
    ("*", 0x66): {0x73: ("card recognition data", None)},
    ("mse", 0): {0x80: ("cryptographic mechanism reference", None),
                 0x81: ("file reference", None), 0x83: ("key reference (secret/public)", None),
                 0x84: ("key reference (private/session)", None),
                 0x87: ("initial chaining value", None), 0x95: ("usage qualifier", None)},
    ("sm", 0): {0x87: ("padding indicator + cryptogram", None), 0x85: ("cryptogram", None),
                0x97: ("protected Le", None), 0x99: ("processing status (SW)", None),
                0x8E: ("cryptographic checksum (MAC)", None)},
    ("*", 0xB6): {0x84: ("key reference", None)},
    ("*", 0xA6): {0x7F49: ("public key (ephemeral)", None)},
    ("*", 0x4D): {0xB6: ("CRT: signature key", None), 0xB8: ("CRT: decryption key", None),
                  0xA4: ("CRT: authentication key", None), 0x7F48: ("private key template",
                                                                     None),
                  0x5F48: ("private key data", "secret")},
}

_CRT: dict[int, Spec] = {
    0xA4: ("control reference template: authentication", None),
    0xAA: ("control reference template: hash code", None),
    0xB4: ("control reference template: cryptographic checksum", None),
    0xB6: ("control reference template: digital signature", None),
    0xB8: ("control reference template: confidentiality", None),
    0xA6: ("control reference template: key agreement", None),
    0x4D: ("extended header list", None),
}
_GENERIC.update(_CRT)


def tag_spec(tag: int, parent: int | None = None, context: str = "") -> Spec | None:
    """The (name, formatter) for a tag, or None: the parent and application decide first."""
    tables: list[dict[int, Spec] | None] = []
    if parent is not None:
        tables += [_IN_PARENT.get((context, parent)), _IN_PARENT.get(("*", parent))]
    else:
        tables.append(_IN_PARENT.get((context, 0)))
    tables += [_BY_APP.get(context), _GENERIC]
    for table in tables:
        if table and tag in table:
            return table[tag]
    return None


def tag_name(tag: int, parent: int | None = None, context: str = "") -> str | None:
    """The name of a tag in this place, or None when unknown."""
    spec = tag_spec(tag, parent, context)
    return spec[0] if spec else None


# --------------------------------------------------------------------------------------------
# The tree


@dataclass
class TlvNode:
    """One data object, or a stretch of bytes that is not one (kind "padding" or "raw")."""

    tag: int | None
    offset: int  # where the object starts in the parsed buffer
    value: bytes = b""
    name: str | None = None
    constructed: bool = False
    length: int | None = None
    children: list[TlvNode] = field(default_factory=list)
    kind: str = "tlv"  # "tlv", "padding" (00/FF filler), "raw" (what could not be parsed)
    error: str | None = None
    fmt: str | None = None

    @property
    def tag_hex(self) -> str:
        if self.tag is None:
            return ""
        return f"{self.tag:0{max(2, (self.tag.bit_length() + 7) // 8 * 2)}X}"

    def summary(self) -> str:
        """One short text for a primitive value: formatted when a formatter knows it."""
        if self.kind != "tlv" or self.constructed:
            return hexs(self.value, HEX_PREVIEW)
        if not self.value:
            return "(empty)"
        if self.fmt:
            try:
                text = FORMATTERS[self.fmt](self.value)
            except (ValueError, IndexError, KeyError, OverflowError, OSError):
                text = None  # a formatter's guess failed: hex is always right
            if text is not None:
                return text
        return hexs(self.value, HEX_PREVIEW) if self.value else "(empty)"

    def find(self, tag: int) -> TlvNode | None:
        """The first node with this tag, depth first."""
        for node in walk([self]):
            if node.tag == tag:
                return node
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "offset": self.offset}
        if self.kind == "tlv":
            out |= {"tag": self.tag_hex, "name": self.name, "length": self.length,
                    "constructed": self.constructed}
        if self.constructed and self.kind == "tlv":
            out["children"] = [c.to_json() for c in self.children]
        elif self.fmt == "secret":
            out |= {"masked": True, "text": self.summary()}
        else:
            out["value"] = self.value.hex()
            if self.kind == "tlv" and self.fmt:
                s = self.summary()
                if s != hexs(self.value, HEX_PREVIEW):
                    out["text"] = s
        if self.error:
            out["error"] = self.error
        return out


def walk(nodes: list[TlvNode]) -> Iterator[TlvNode]:
    """All nodes, depth first."""
    for n in nodes:
        yield n
        yield from walk(n.children)


def is_clean(nodes: list[TlvNode]) -> bool:
    """True when everything parsed as TLV with no raw remainder and no error anywhere."""
    return bool(nodes) and all(n.kind != "raw" and n.error is None for n in walk(nodes))


def _read_tag(data: bytes, pos: int) -> tuple[int, int, bool] | str:
    """(tag, next position, constructed) or an error text."""
    first = data[pos]
    tag, pos = first, pos + 1
    if first & 0x1F == 0x1F:
        for count in range(3):
            if pos >= len(data):
                return "tag truncated"
            b = data[pos]
            tag, pos = (tag << 8) | b, pos + 1
            if count == 0 and b == 0x80:
                return "tag with a leading 80 subsequent byte"
            if not b & 0x80:
                break
        else:
            return "tag longer than 4 bytes"
    return tag, pos, bool(first & 0x20)


def _read_length(data: bytes, pos: int) -> tuple[int, int] | str:
    """(length, next position) or an error text; the indefinite form is refused."""
    if pos >= len(data):
        return "length missing"
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    if b == 0x80:
        return "indefinite length (not allowed in BER-TLV for cards)"
    n = b & 0x7F
    if n > 4:
        return f"length field of {n} bytes"
    if pos + 1 + n > len(data):
        return "length truncated"
    return int.from_bytes(data[pos + 1:pos + 1 + n], "big"), pos + 1 + n


def parse_tlv(data: bytes, context: str = "", parent: int | None = None, *,
              base: int = 0, depth: int = 0, flat: bool = False) -> list[TlvNode]:
    """Parse a buffer of BER-TLV objects; never raises. context is an application key
    ("piv", "openpgp", "gp", "mse", "sm" or "") that picks tag names where they clash;
    flat reads every object as primitive (PIV container items)."""
    nodes: list[TlvNode] = []
    pos = 0
    while pos < len(data):
        start = pos
        if data[pos] in (0x00, 0xFF):  # ISO 7816-4 filler between objects
            while pos < len(data) and data[pos] in (0x00, 0xFF):
                pos += 1
            nodes.append(TlvNode(None, base + start, data[start:pos], kind="padding"))
            continue
        tag_r = _read_tag(data, pos)
        if isinstance(tag_r, str):
            nodes.append(_raw(data, start, base, tag_r))
            break
        tag, pos, constructed = tag_r
        constructed = constructed and tag not in AS_PRIMITIVE and not flat
        len_r = _read_length(data, pos)
        if isinstance(len_r, str):
            nodes.append(_raw(data, start, base, len_r))
            break
        length, pos = len_r
        if pos + length > len(data):
            nodes.append(_raw(data, start, base, f"tag {tag:X}: length {length} but only "
                                                  f"{len(data) - pos} bytes left"))
            break
        value = data[pos:pos + length]
        spec = tag_spec(tag, parent, context)
        node = TlvNode(tag, base + start, value, spec[0] if spec else None, constructed, length,
                       fmt=spec[1] if spec else None)
        if constructed:
            if depth >= MAX_DEPTH:
                node.error = "nested too deep; value left unparsed"
            else:
                node.children = parse_tlv(value, context, tag, base=base + pos, depth=depth + 1)
                if node.children and node.children[-1].kind == "raw":
                    node.error = "value is not entirely BER-TLV"
        elif tag in AS_CONSTRUCTED and depth < MAX_DEPTH:
            children = parse_tlv(value, context, tag, base=base + pos, depth=depth + 1,
                                 flat=tag in FLAT_CHILDREN)
            if is_clean(children):
                node.constructed, node.children = True, children
        nodes.append(node)
        pos += length
    return nodes


def _raw(data: bytes, start: int, base: int, error: str) -> TlvNode:
    return TlvNode(None, base + start, data[start:], kind="raw", error=error)


def render_tlv(nodes: list[TlvNode], indent: int = 0, step: str = "  ") -> list[str]:
    """Indented text lines, one per node: tag, name, length and a short value."""
    lines: list[str] = []
    pad = step * indent
    for n in nodes:
        if n.kind == "padding":
            lines.append(f"{pad}(padding {len(n.value)} bytes)")
        elif n.kind == "raw":
            lines.append(f"{pad}(unparsed {len(n.value)} bytes: {n.error}) "
                         f"{hexs(n.value, HEX_PREVIEW)}")
        else:
            label = f"{pad}{n.tag_hex} {n.name or '(unknown tag)'} [{n.length}]"
            if n.constructed:
                lines.append(label + (f" ({n.error})" if n.error else ""))
                lines.extend(render_tlv(n.children, indent + 1, step))
            else:
                lines.append(f"{label}: {n.summary()}")
    return lines
