"""What P1, P2 and the data field mean, per instruction (ISO 7816-4, PIV, OpenPGP,
GlobalPlatform, YubiKey): the bulk of the decoder, apart from the APDU model it fills in."""

from __future__ import annotations

from collections.abc import Callable

from construct import (
    Bytes,
    ConstructError,
    GreedyBytes,
    Int8ub,
    Prefixed,
    Struct,
    Terminated,
)

from p11spy.decoder.apdu.model import CommandApdu
from p11spy.decoder.apdu.names import APP_INS
from p11spy.decoder.apdu.pin import pin_summary
from p11spy.decoder.apdu.tlv import (
    PIV_ALGORITHMS,
    PIV_KEYS,
    PIV_OBJECTS,
    aid_info,
    hexs,
    is_clean,
    parse_tlv,
    render_tlv,
    tag_name,
    walk,
)

# GlobalPlatform data field layouts
_LV = Prefixed(Int8ub, GreedyBytes)
GP_INSTALL: dict[str, Struct] = {
    "install": Struct("load_file_aid" / _LV, "module_aid" / _LV, "application_aid" / _LV,
                      "privileges" / _LV, "parameters" / _LV, "token" / _LV, GreedyBytes),
    "load": Struct("load_file_aid" / _LV, "security_domain_aid" / _LV, "hash" / _LV,
                   "parameters" / _LV, "token" / _LV, GreedyBytes),
}
GP_EXTERNAL_AUTH = Struct("host_cryptogram" / Bytes(8), "mac" / Bytes(8), Terminated)


def _table(table: dict[int, str], value: int, default: str = "proprietary or RFU") -> str:
    return table.get(value, default)


def _bits(value: int, flags: dict[int, str]) -> list[str]:
    return [name for bit, name in flags.items() if value & bit]


# What P1, P2 and the data mean, per instruction. Each handler appends to c.params/details.

SELECT_P1 = {0x00: "select MF, DF or EF by file identifier", 0x01: "select child DF",
             0x02: "select EF under the current DF", 0x03: "select parent DF",
             0x04: "select by DF name (AID)", 0x08: "select by path from the MF",
             0x09: "select by path from the current DF"}
SELECT_OCCURRENCE = {0: "first or only occurrence", 1: "last occurrence", 2: "next occurrence",
                     3: "previous occurrence"}
SELECT_RETURN = {0x00: "return FCI template", 0x04: "return FCP template",
                 0x08: "return FMD template", 0x0C: "no response data"}


def _select(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: {_table(SELECT_P1, c.p1)}"))
    p2 = f"{SELECT_OCCURRENCE[c.p2 & 3]}; {SELECT_RETURN[c.p2 & 0x0C]}"
    if c.p2 & 0xF0:
        p2 += f"; bits {c.p2 & 0xF0:02X} proprietary"
    c.params.append(("P2", f"{c.p2:02X}: {p2}"))
    if c.p1 == 0x04 and c.data:
        name, app = aid_info(c.data)
        c.details.append(f"AID {hexs(c.data)}" + (f" ({name})" if name else ""))
        c.brief = name or hexs(c.data)
        c.app = app or c.app
    elif c.p1 in (0x00, 0x01, 0x02) and c.data:
        fid = c.data.hex().upper()
        c.details.append(f"file id {fid}" + (" (MF)" if fid == "3F00" else ""))
        c.brief = fid
    elif c.p1 == 0x00 and not c.data:
        c.details.append("no data: select the MF")
        c.brief = "MF"
    elif c.p1 in (0x08, 0x09) and c.data:
        path = " / ".join(c.data[i:i + 2].hex().upper() for i in range(0, len(c.data), 2))
        c.details.append(f"path {path}")
        c.brief = path


def _binary(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None and c.ins is not None
    if c.ins & 1:
        fid = "current EF" if c.p1p2 == 0 else f"file id {c.p1p2:04X}"
        c.params.append(("P1P2", f"{c.p1p2:04X}: {fid}"))
        c.brief = fid
        _tlv_details(c, c.data, "")
        return
    if c.p1 & 0x80:
        c.params.append(("P1", f"{c.p1:02X}: short EF identifier {c.p1 & 0x1F}"))
        c.params.append(("P2", f"{c.p2:02X}: offset {c.p2}"))
        c.brief = f"SFI {c.p1 & 0x1F} offset {c.p2}"
    else:
        off = ((c.p1 & 0x7F) << 8) | c.p2
        c.params.append(("P1P2", f"{c.p1p2:04X}: offset {off} in the current EF"))
        c.brief = f"offset {off}"
    if c.le is not None:
        c.brief += f", {c.le} bytes"


RECORD_P2 = {0: "first occurrence", 1: "last occurrence", 2: "next occurrence",
             3: "previous occurrence", 4: "record number P1", 5: "records from P1 to the last",
             6: "records from the last to P1", 7: "RFU"}


def _record(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: " + ("current record" if c.p1 == 0
                                              else f"record {c.p1}")))
    sfi = c.p2 >> 3
    where = "current EF" if sfi == 0 else f"short EF identifier {sfi}"
    c.params.append(("P2", f"{c.p2:02X}: {where}; {RECORD_P2[c.p2 & 7]}"))
    c.brief = f"record {c.p1}" + (f" SFI {sfi}" if sfi else "")


# Reference data (PIN) references. Numbers are P2 of VERIFY / CHANGE / RESET RETRY.
KEY_REFS: dict[str, dict[int, str]] = {
    "piv": {0x00: "global PIN", 0x80: "PIV application PIN", 0x81: "PIN unblocking key (PUK)",
            0x96: "primary finger OCC", 0x97: "secondary finger OCC", 0x98: "pairing code"},
    "openpgp": {0x81: "PW1 (user PIN, for signing)",
                0x82: "PW1 (user PIN, for decryption/authentication)",
                0x83: "PW3 (admin PIN)"},
}
APP_LABEL = {"piv": "PIV", "openpgp": "OpenPGP"}
PIN_P1: dict[int, dict[int, str]] = {
    0x20: {0x00: "verify", 0xFF: "reset the verification status (log out)"},
    0x24: {0x00: "data = current and new reference data", 0x01: "data = new reference data"},
    0x2C: {0x00: "data = resetting code and new reference data",
           0x01: "data = resetting code only", 0x02: "data = new reference data only",
           0x03: "no data"},
}


def ref_name(p2: int, app: str | None) -> str:
    """The reference data a P2 names: the application's name, else the ISO reading."""
    iso = f"{'specific' if p2 & 0x80 else 'global'} reference data, number {p2 & 0x1F}"
    if app is None:  # unknown application: offer every reading
        names = [f"{APP_LABEL[a]}: {t[p2]}" for a, t in KEY_REFS.items() if p2 in t]
    else:
        names = [KEY_REFS[app][p2]] if p2 in KEY_REFS.get(app, {}) else []
    return f"{iso} ({' / '.join(names)})" if names else iso


def _pin(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None and c.ins is not None
    p1_table = PIN_P1.get(c.ins & 0xFE, {})
    c.params.append(("P1", f"{c.p1:02X}: {_table(p1_table, c.p1, 'RFU')}"))
    c.params.append(("P2", f"{c.p2:02X}: {ref_name(c.p2, c.app)}"))
    c.brief = f"{c.p2:02X}"
    known = [t[c.p2] for a, t in KEY_REFS.items() if c.p2 in t and c.app in (None, a)]
    if len(known) == 1:
        c.brief = known[0]
    if not c.data:
        if c.ins & 0xFE == 0x20 and c.p1 == 0:
            c.details.append("no data: asks whether verified / how many tries are left")
            c.brief += ", status query"
        return
    if c.cla is not None and c.cla.secure_messaging:
        c.details.append(f"data ({len(c.data)} bytes) protected by secure messaging")
        _tlv_details(c, c.data, "sm")
        return
    c.details.append(f"reference data: {pin_summary(c.data, c.ins, c.app)} (not shown)")
    c.brief += f", {len(c.data)} bytes"


def _get_put_data(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None and c.ins is not None
    p1p2 = c.p1p2 or 0
    ctx = c.app or ""
    if c.ins & 1:  # CB/DB: P1P2 names a file, the data names the object
        where = "current DF" if p1p2 == 0x3FFF else f"file id {p1p2:04X}"
        c.params.append(("P1P2", f"{p1p2:04X}: {where}"))
        _tlv_details(c, c.data, ctx)
        if c.tlv and any(n.fmt == "secret" for n in walk(c.tlv)):
            c.secret = True  # OpenPGP key import (extended header list with 5F48)
        oid = c.tlv[0].find(0x5C) if c.tlv else None
        if oid is not None and oid.value:
            obj = int.from_bytes(oid.value, "big")
            c.brief = PIV_OBJECTS.get(obj, oid.value.hex().upper())
        return
    tag = c.p2 if c.p1 == 0 else p1p2
    name = tag_name(tag, None, ctx) or "unknown tag"
    if c.p1 == 0 and c.p2 == 0:
        name = "no tag"
    c.params.append(("P1P2", f"{p1p2:04X}: tag {tag:02X} ({name})"))
    c.brief = f"{tag:02X} {name}"
    if c.data:
        if c.ins == 0xDA and tag == 0xD3:  # OpenPGP: sets the resetting code
            c.details.append(f"data: {len(c.data)} bytes (resetting code, not shown)")
            c.secret = True
        else:
            _tlv_details(c, c.data, ctx)


def _gen_auth(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    if c.app == "piv" or c.ins == 0x87:
        alg = PIV_ALGORITHMS.get(c.p1, "unknown algorithm")
        key = PIV_KEYS.get(c.p2, "unknown key reference")
        c.params.append(("P1", f"{c.p1:02X}: algorithm {alg}"))
        c.params.append(("P2", f"{c.p2:02X}: {key}"))
        c.brief = f"{key} ({alg})"
    else:
        c.params.append(("P1", f"{c.p1:02X}: algorithm reference"))
        c.params.append(("P2", f"{c.p2:02X}: {ref_name(c.p2, None)}"))
    _tlv_details(c, c.data, "piv" if c.app is None else c.app)
    if c.tlv:
        dyn = c.tlv[0]
        asks = [n.name for n in dyn.children if n.kind == "tlv" and n.name and not n.value]
        gives = [n.name for n in dyn.children if n.kind == "tlv" and n.name and n.value]
        if gives or asks:
            c.details.append("asks for: " + (", ".join(asks) or "nothing") +
                             "; gives: " + (", ".join(gives) or "nothing"))


PGP_GENERATE_P1 = {0x80: "generate a key pair", 0x81: "read the existing public key"}
PGP_CRT = {0xB6: "signature key", 0xB8: "decryption key", 0xA4: "authentication key"}


def _generate(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    pgp = c.app == "openpgp" or (c.app is None and c.p1 in (0x80, 0x81) and c.p2 == 0)
    if pgp:
        c.params.append(("P1", f"{c.p1:02X}: {_table(PGP_GENERATE_P1, c.p1, 'RFU')}"))
        c.params.append(("P2", f"{c.p2:02X}"))
        if c.data:
            crt = PGP_CRT.get(c.data[0], "unknown key")
            c.brief = f"{PGP_GENERATE_P1.get(c.p1, '')}: {crt}"
        _tlv_details(c, c.data, "openpgp")
        return
    key = PIV_KEYS.get(c.p2, "key reference")
    c.params.append(("P1", f"{c.p1:02X}"))
    c.params.append(("P2", f"{c.p2:02X}: {key}"))
    _tlv_details(c, c.data, "piv")
    alg = c.tlv[0].find(0x80) if c.tlv else None
    c.brief = key + (f" ({PIV_ALGORITHMS.get(alg.value[0], '?')})"
                     if alg is not None and len(alg.value) == 1 else "")


PSO_P1P2 = {
    0x9E9A: "compute digital signature", 0x9EAC: "compute digital signature (template)",
    0x9EBC: "compute digital signature (template)", 0x8086: "decipher",
    0x8084: "decipher", 0x8082: "decipher", 0x8680: "encipher", 0x8480: "encipher",
    0x8280: "encipher", 0x9080: "hash", 0x90A0: "hash", 0x8E80: "compute cryptographic checksum",
    0x00A2: "verify cryptographic checksum", 0x00A8: "verify digital signature",
    0x0092: "verify certificate", 0x00AE: "verify certificate", 0x00BE: "verify certificate",
}


def _pso(c: CommandApdu) -> None:
    p1p2 = c.p1p2 or 0
    op = PSO_P1P2.get(p1p2, "P1 = tag of the response, P2 = tag of the data")
    c.params.append(("P1P2", f"{p1p2:04X}: {op}"))
    c.brief = op if p1p2 in PSO_P1P2 else f"{p1p2:04X}"
    if p1p2 == 0x8086 and c.data:
        pad = {0x00: "RSA cryptogram", 0x02: "AES cryptogram", 0xA6: "ECDH: ephemeral key"}
        c.details.append(f"padding indicator {c.data[0]:02X} "
                         f"({pad.get(c.data[0], 'unknown')}), {len(c.data)} bytes")
        if c.data[0] == 0xA6:
            _tlv_details(c, c.data, c.app or "")


MSE_OPS = {1: "SET", 2: "STORE", 3: "RESTORE", 4: "ERASE"}
MSE_FLAGS = {0x10: "secure messaging in command", 0x20: "secure messaging in response",
             0x40: "computation / decipherment / internal authentication / key agreement",
             0x80: "verification / encipherment / external authentication"}
CRT_TAGS = {0xA4: "authentication", 0xA6: "key agreement", 0xAA: "hash code",
            0xB4: "cryptographic checksum", 0xB6: "digital signature", 0xB8: "confidentiality"}


def _mse(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    op = MSE_OPS.get(c.p1 & 0x0F, "RFU")
    flags = _bits(c.p1, MSE_FLAGS)
    c.params.append(("P1", f"{c.p1:02X}: {op}" + (f" for {'; '.join(flags)}" if flags else "")))
    if op == "SET":
        c.params.append(("P2", f"{c.p2:02X}: CRT {_table(CRT_TAGS, c.p2)}"))
        c.brief = f"SET {CRT_TAGS.get(c.p2, f'{c.p2:02X}')}"
    else:
        c.params.append(("P2", f"{c.p2:02X}: security environment number {c.p2}"))
        c.brief = f"{op} SE {c.p2}"
    _tlv_details(c, c.data, "mse")


def _get_response(c: CommandApdu) -> None:
    c.params.append(("P1P2", f"{c.p1p2 or 0:04X}" + ("" if not c.p1p2 else ": should be 0000")))
    if c.le is not None:
        c.brief = f"{c.le} bytes"
        c.details.append(f"asks for up to {c.le} more response bytes")


def _auth(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: " + ("no information given" if c.p1 == 0
                                              else "algorithm reference")))
    c.params.append(("P2", f"{c.p2:02X}: " + ("no information given" if c.p2 == 0
                                              else ref_name(c.p2, None))))
    if c.ins == 0x84 and c.le is not None:
        c.brief = f"{c.le} bytes"


def _manage_channel(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    op = {0x00: "open", 0x80: "close"}.get(c.p1, "RFU")
    c.params.append(("P1", f"{c.p1:02X}: {op}"))
    c.params.append(("P2", f"{c.p2:02X}: " + ("card assigns the channel" if c.p2 == 0 and
                                              op == "open" else f"channel {c.p2}")))
    c.brief = f"{op} {c.p2 or ''}".strip()


def _file_lifecycle(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    if c.app == "openpgp" or (c.p1p2 == 0 and not c.data):
        c.params.append(("P1P2", f"{c.p1p2 or 0:04X}: the current application / file"))
    else:
        c.params.append(("P1", f"{c.p1:02X}: {_table(SELECT_P1, c.p1)}"))
        c.params.append(("P2", f"{c.p2:02X}"))


# GlobalPlatform (proprietary class)

GP_SECURITY_LEVEL = {0x01: "C-MAC", 0x02: "C-DECRYPTION", 0x10: "R-MAC", 0x20: "R-ENCRYPTION"}
GP_STATUS_P1 = {0x80: "Issuer Security Domain", 0x40: "applications and security domains",
                0x20: "executable load files", 0x10: "executable load files and modules"}
GP_INSTALL_P1 = {0x02: "for load", 0x04: "for install", 0x08: "for make selectable",
                 0x10: "for extradition", 0x20: "for personalization",
                 0x40: "for registry update"}
GP_SET_STATUS_P1 = {0x80: "Issuer Security Domain", 0x40: "application or security domain",
                    0x60: "security domain and its applications"}
GP_STORE_ENC = {0x00: "no encryption information", 0x20: "application-dependent encryption",
                0x60: "encrypted data", 0x40: "RFU"}
GP_STORE_FMT = {0x00: "no structure information", 0x08: "DGI format", 0x10: "BER-TLV format",
                0x18: "RFU"}


def _gp_init_update(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: key version " + ("(any / default)" if c.p1 == 0
                                                         else str(c.p1))))
    c.params.append(("P2", f"{c.p2:02X}: key identifier"))
    if c.data:
        c.details.append(f"host challenge: {hexs(c.data)}")
    c.brief = f"key version {c.p1:02X}"


def _gp_ext_auth(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    if c.cla is None or c.cla.kind != "proprietary":
        _auth(c)
        return
    level = _bits(c.p1, GP_SECURITY_LEVEL)
    text = " + ".join(level) if level else "no secure messaging (authentication only)"
    c.params.append(("P1", f"{c.p1:02X}: security level {text}"))
    c.params.append(("P2", f"{c.p2:02X}"))
    c.brief = text
    try:
        p = GP_EXTERNAL_AUTH.parse(c.data)
        c.details += [f"host cryptogram: {hexs(p.host_cryptogram)}", f"C-MAC: {hexs(p.mac)}"]
    except ConstructError:
        pass  # not the usual 16 bytes: the generic hex dump shows it


def _gp_get_status(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: {_table(GP_STATUS_P1, c.p1)}"))
    fmt = "TLV format" if c.p2 & 0x02 else "legacy format"
    occ = "next occurrence" if c.p2 & 0x01 else "first or all occurrences"
    c.params.append(("P2", f"{c.p2:02X}: {fmt}, {occ}"))
    c.brief = GP_STATUS_P1.get(c.p1, f"{c.p1:02X}")
    _tlv_details(c, c.data, "gp")


def _gp_install(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    roles = _bits(c.p1, GP_INSTALL_P1)
    more = ", more commands follow" if c.p1 & 0x80 else ""
    c.params.append(("P1", f"{c.p1:02X}: {' + '.join(roles) or 'RFU'}{more}"))
    c.params.append(("P2", f"{c.p2:02X}"))
    c.brief = " + ".join(roles)
    layout = "install" if c.p1 & 0x04 else "load" if c.p1 & 0x02 else None
    if layout and c.data:
        try:
            p = GP_INSTALL[layout].parse(c.data)
        except ConstructError:
            c.notes.append("INSTALL data is not the expected list of length-value fields")
            return
        for key, value in p.items():
            if key.startswith("_") or not isinstance(value, bytes) or not value:
                continue
            name = aid_info(value)[0] if key.endswith("aid") else None
            c.details.append(f"{key.replace('_', ' ')}: {hexs(value, 32)}"
                             + (f" ({name})" if name else ""))


def _gp_delete(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}" + (": more commands follow" if c.p1 & 0x80 else "")))
    c.params.append(("P2", f"{c.p2:02X}: " + ("delete object and related objects"
                                              if c.p2 & 0x80 else "delete object")))
    _tlv_details(c, c.data, "gp")
    aid = c.tlv[0].find(0x4F) if c.tlv else None
    if aid is not None:
        c.brief = hexs(aid.value)


def _gp_load(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: " + ("last block" if c.p1 & 0x80 else "more blocks")))
    c.params.append(("P2", f"{c.p2:02X}: block number {c.p2}"))
    c.brief = f"block {c.p2}" + (" (last)" if c.p1 & 0x80 else "")


def _gp_set_status(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: {_table(GP_SET_STATUS_P1, c.p1)}"))
    c.params.append(("P2", f"{c.p2:02X}: new life cycle state"))
    if c.data:
        c.details.append(f"AID {hexs(c.data)}")


def _gp_store_data(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    last = "last block" if c.p1 & 0x80 else "more blocks"
    c.params.append(("P1", f"{c.p1:02X}: {last}, {GP_STORE_ENC[c.p1 & 0x60]}, "
                           f"{GP_STORE_FMT[c.p1 & 0x18]}"))
    c.params.append(("P2", f"{c.p2:02X}: block number {c.p2}"))
    if c.p1 & 0x18 == 0x10 and c.p1 & 0x60 != 0x60:
        _tlv_details(c, c.data, "gp")


def _gp_put_key(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: " + ("new key set" if c.p1 & 0x7F == 0 else
                                              f"replace key version {c.p1 & 0x7F}")))
    c.params.append(("P2", f"{c.p2:02X}: key identifier {c.p2 & 0x7F}"
                           + (", several keys" if c.p2 & 0x80 else "")))
    c.details.append(f"key data: {len(c.data)} bytes (encrypted key components, not shown)")
    c.secret = True


def _gp_get_data(c: CommandApdu) -> None:
    p1p2 = c.p1p2 or 0
    name = tag_name(p1p2 if c.p1 else p1p2 & 0xFF, None, "gp") or "unknown tag"
    c.params.append(("P1P2", f"{p1p2:04X}: {name}"))
    c.brief = name


def _yk_slot(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    slot = c.p2 if c.ins == 0xF7 else c.p1
    c.params.append(("P1P2", f"{c.p1p2 or 0:04X}: slot {slot:02X} "
                             f"({PIV_KEYS.get(slot, KEY_REFS['piv'].get(slot, '?'))})"))
    c.brief = f"slot {slot:02X}"


def _yk_retries(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    c.params.append(("P1", f"{c.p1:02X}: PIN tries {c.p1}"))
    c.params.append(("P2", f"{c.p2:02X}: PUK tries {c.p2}"))
    c.brief = f"PIN {c.p1}, PUK {c.p2}"


def _yk_key_material(c: CommandApdu) -> None:
    assert c.p1 is not None and c.p2 is not None
    if c.ins == 0xFE:
        c.params.append(("P1", f"{c.p1:02X}: algorithm {PIV_ALGORITHMS.get(c.p1, '?')}"))
        c.params.append(("P2", f"{c.p2:02X}: {PIV_KEYS.get(c.p2, 'key reference')}"))
        c.brief = PIV_KEYS.get(c.p2, f"{c.p2:02X}")
    else:
        touch = {0xFF: "no touch required", 0xFE: "touch required"}
        c.params.append(("P1", f"{c.p1:02X}: {_table(touch, c.p1, 'RFU')}"))
        c.params.append(("P2", f"{c.p2:02X}: {PIV_KEYS.get(c.p2, 'key reference')}"))
    c.details.append(f"key material: {len(c.data)} bytes (not shown)")
    c.secret = True


Handler = Callable[["CommandApdu"], None]

VENDOR_HANDLERS: dict[str, dict[int, Handler]] = {
    "piv": {0xF7: _yk_slot, 0xF9: _yk_slot, 0xFA: _yk_retries, 0xFE: _yk_key_material,
            0xFF: _yk_key_material},
}

ISO_HANDLERS: dict[int, Handler] = {
    0xA4: _select, 0xB0: _binary, 0xB1: _binary, 0xD6: _binary, 0xD7: _binary, 0xD0: _binary,
    0xD1: _binary, 0x0E: _binary, 0x0F: _binary, 0xA0: _binary, 0xA1: _binary,
    0xB2: _record, 0xB3: _record, 0xDC: _record, 0xDD: _record, 0xD2: _record,
    0x20: _pin, 0x21: _pin, 0x24: _pin, 0x25: _pin, 0x2C: _pin, 0x2D: _pin, 0x26: _pin,
    0x28: _pin, 0xCA: _get_put_data, 0xCB: _get_put_data, 0xDA: _get_put_data,
    0xDB: _get_put_data, 0x86: _gen_auth, 0x87: _gen_auth, 0x46: _generate, 0x47: _generate,
    0x2A: _pso, 0x22: _mse, 0xC0: _get_response, 0x82: _auth, 0x84: _auth, 0x88: _auth,
    0x70: _manage_channel, 0x44: _file_lifecycle, 0x04: _file_lifecycle,
    0xE6: _file_lifecycle, 0xE8: _file_lifecycle,
}
GP_HANDLERS: dict[int, Handler] = {
    0x50: _gp_init_update, 0x82: _gp_ext_auth, 0xF2: _gp_get_status, 0xE6: _gp_install,
    0xE4: _gp_delete, 0xE8: _gp_load, 0xF0: _gp_set_status, 0xE2: _gp_store_data,
    0xD8: _gp_put_key, 0xCA: _gp_get_data, 0xCB: _gp_get_data, 0xC0: _get_response,
}


def interpret_command(c: CommandApdu) -> None:
    """Fill in params, details and brief from the handler for this instruction."""
    assert c.cla is not None and c.ins is not None
    if c.cla.kind == "proprietary":
        handler = GP_HANDLERS.get(c.ins) if c.app in (None, "gp") else None
    elif c.app in APP_INS and c.ins in APP_INS[c.app]:  # vendor extension inside the app
        handler = VENDOR_HANDLERS.get(c.app, {}).get(c.ins)
    else:
        handler = ISO_HANDLERS.get(c.ins)
    if handler is not None:
        handler(c)
    elif c.data:
        _tlv_details(c, c.data, c.app or "", quiet=True)


def _tlv_details(c: CommandApdu, data: bytes, ctx: str, quiet: bool = False) -> None:
    """Show the data as a TLV tree when it is one; quiet: only when it parses cleanly."""
    if not data:
        return
    nodes = parse_tlv(data, ctx)
    if quiet and not (is_clean(nodes) and nodes[0].name):
        return
    c.tlv = nodes
    c.details.append(f"data ({len(data)} bytes):")
    c.details.extend(render_tlv(nodes, 1))
