"""Instruction names for APDU headers.

The same INS byte means different things under a proprietary class (GlobalPlatform uses CLA
80/84) and inside some applications (YubiKey's PIV and OpenPGP extensions use F1-FF), so the
lookup takes the class byte and, when known, the selected application.
"""

from __future__ import annotations

# ISO/IEC 7816-4 interindustry instructions (CLA with bit 8 clear). An odd INS carries its
# data in BER-TLV form; the name is the same.
ISO_INS: dict[int, str] = {
    0x04: "DEACTIVATE FILE", 0x0C: "ERASE RECORD(S)", 0x0E: "ERASE BINARY",
    0x0F: "ERASE BINARY", 0x10: "PERFORM SCQL OPERATION",
    0x12: "PERFORM TRANSACTION OPERATION", 0x14: "PERFORM USER OPERATION",
    0x20: "VERIFY", 0x21: "VERIFY", 0x22: "MANAGE SECURITY ENVIRONMENT",
    0x24: "CHANGE REFERENCE DATA", 0x25: "CHANGE REFERENCE DATA",
    0x26: "DISABLE VERIFICATION REQUIREMENT", 0x28: "ENABLE VERIFICATION REQUIREMENT",
    0x2A: "PERFORM SECURITY OPERATION", 0x2C: "RESET RETRY COUNTER",
    0x2D: "RESET RETRY COUNTER", 0x44: "ACTIVATE FILE", 0x46: "GENERATE ASYMMETRIC KEY PAIR",
    0x47: "GENERATE ASYMMETRIC KEY PAIR", 0x70: "MANAGE CHANNEL",
    0x82: "EXTERNAL AUTHENTICATE", 0x84: "GET CHALLENGE", 0x86: "GENERAL AUTHENTICATE",
    0x87: "GENERAL AUTHENTICATE", 0x88: "INTERNAL AUTHENTICATE", 0xA0: "SEARCH BINARY",
    0xA1: "SEARCH BINARY", 0xA2: "SEARCH RECORD", 0xA4: "SELECT", 0xB0: "READ BINARY",
    0xB1: "READ BINARY", 0xB2: "READ RECORD(S)", 0xB3: "READ RECORD(S)",
    0xC0: "GET RESPONSE", 0xC2: "ENVELOPE", 0xC3: "ENVELOPE", 0xCA: "GET DATA",
    0xCB: "GET DATA", 0xD0: "WRITE BINARY", 0xD1: "WRITE BINARY", 0xD2: "WRITE RECORD",
    0xD6: "UPDATE BINARY", 0xD7: "UPDATE BINARY", 0xDA: "PUT DATA", 0xDB: "PUT DATA",
    0xDC: "UPDATE RECORD", 0xDD: "UPDATE RECORD", 0xE0: "CREATE FILE", 0xE2: "APPEND RECORD",
    0xE4: "DELETE FILE", 0xE6: "TERMINATE DF", 0xE8: "TERMINATE EF",
    0xFE: "TERMINATE CARD USAGE",
}

# GlobalPlatform Card Specification commands (proprietary class, CLA 80/84 and channel forms).
GP_INS: dict[int, str] = {
    0x2A: "PERFORM SECURITY OPERATION", 0x50: "INITIALIZE UPDATE",
    0x78: "END R-MAC SESSION", 0x7A: "BEGIN R-MAC SESSION", 0x82: "EXTERNAL AUTHENTICATE",
    0x88: "INTERNAL AUTHENTICATE", 0xC0: "GET RESPONSE", 0xCA: "GET DATA", 0xCB: "GET DATA",
    0xD8: "PUT KEY", 0xE2: "STORE DATA", 0xE4: "DELETE", 0xE6: "INSTALL", 0xE8: "LOAD",
    0xF0: "SET STATUS", 0xF2: "GET STATUS",
}

# Instructions that only exist inside one application (interindustry class).
APP_INS: dict[str, dict[int, str]] = {
    "piv": {  # YubiKey PIV extensions
        0xF6: "MOVE KEY (YubiKey)", 0xF7: "GET METADATA (YubiKey)",
        0xF8: "GET SERIAL (YubiKey)", 0xF9: "ATTEST (YubiKey)",
        0xFA: "SET PIN RETRIES (YubiKey)", 0xFB: "RESET (YubiKey)",
        0xFD: "GET VERSION (YubiKey)", 0xFE: "IMPORT ASYMMETRIC KEY (YubiKey)",
        0xFF: "SET MANAGEMENT KEY (YubiKey)",
    },
    "openpgp": {
        0xA5: "SELECT DATA", 0xCC: "GET NEXT DATA", 0xF1: "GET VERSION (YubiKey)",
        0xF2: "SET PIN RETRIES (YubiKey)", 0xFB: "GET ATTESTATION (YubiKey)",
    },
}


def is_proprietary_cla(cla: int) -> bool:
    """Bit 8 set (and not the invalid FF) means a proprietary class such as GlobalPlatform's."""
    return cla & 0x80 != 0 and cla != 0xFF


def ins_name(cla: int, ins: int, app: str | None = None) -> str | None:
    """The name of an instruction, or None when unknown. app is the selected application
    ("piv", "openpgp", "gp", ...) when the caller knows it."""
    if is_proprietary_cla(cla):
        return GP_INS.get(ins) or ISO_INS.get(ins)
    if app is not None:
        name = APP_INS.get(app, {}).get(ins)
        if name:
            return name
    return ISO_INS.get(ins)
