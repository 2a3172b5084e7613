"""`p11spy redact`, the property: random traces in each format, with random PINs and keys,
redacted, hold the secrets in no encoding, pass --check, and decode to the same events."""

from __future__ import annotations

import io
import json

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from p11spy.decoder import masking, redact
from p11spy.decoder.events import Event
from p11spy.decoder.formats.opensc_debug import reader as opensc_debug
from p11spy.decoder.formats.p11spy import reader as p11log
from p11spy.decoder.formats.pkcs11_spy import masker as redact_spy_text
from p11spy.decoder.formats.pkcs11_spy import reader as pkcs11spy_text
from p11spy.decoder.masking import search as secrets_search
from p11spy.facts.logformat import ATTRIBUTE, RECORD, ULONG, Kind, Phase, RecordType
from p11spy.facts.pkcs11.constants import CKA, CKK, CKO
from tests.traces import TraceWriter, field, record, ulong

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
pins = st.text("0123456789", min_size=6, max_size=12)
keys = st.binary(min_size=16, max_size=48).filter(lambda k: len(set(k)) > 4)
options = st.builds(redact.Options, strict=st.booleans(), hide_lengths=st.booleans())


def shape(events: list[Event]) -> list[tuple]:
    """What must not change: each event's type, function, return value and argument names
    (the masked values themselves do)."""
    return [(e.type, getattr(e, "function", None), getattr(e, "rv", None),
             tuple(sorted(getattr(e, "args", {}) or {}))) for e in events]


def leaks(data: bytes, binary: bool, pins: list[str], keys: list[bytes]) -> list[str]:
    found = []
    for pin in pins:
        found += [str(f) for f in secrets_search.search(io.BytesIO(data), pin, binary)]
    for key in keys:
        enc = [secrets_search.Encoding("secret", key)]
        found += [str(f) for f in secrets_search.search_encodings(io.BytesIO(data), enc,
                                                                   binary)]
    return found


def run_redact(fmt: str, data: bytes, opts: redact.Options) -> bytes:
    out = io.BytesIO()
    redact.redact(fmt, io.BytesIO(data), out, opts)
    return out.getvalue()


# --- pkcs11-spy text ---------------------------------------------------------------------------

PTR = "00007ffc29d01996"


def spy_rows(data: bytes) -> list[str]:
    rows = []
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        hexpart = "".join(f"{b:02X} " for b in chunk)
        text = "".join(masking.printable(b) for b in chunk)
        rows.append(f"    {off:08X}  {hexpart:<48} {text:<16}")
    return rows


def spy_call(n: int, name: str, body: list[str], rv: str = "0 CKR_OK") -> list[str]:
    return [f"{n}: {name}", "2024-03-25 15:09:17.251", *body, f"Returned:  {rv}", ""]


def spy_buffer(name: str, data: bytes, phase: str = "in") -> list[str]:
    return [f"[{phase}] {name} {PTR} / {len(data)}", *spy_rows(data)]


def spy_attr(name: str, value: bytes | str) -> list[str]:
    if isinstance(value, str):
        return [f"    {name:<21} {value}"]
    return [f"    {name:<21} {PTR} / {len(value)}", *spy_rows(value)]


def spy_trace(user: str, so: str, new: str, key: bytes, prime: bytes, cert: bytes,
              wrong: bytes) -> bytes:
    calls = [
        ["*************** OpenSC PKCS#11 spy *****************",
         'Loaded: "/usr/lib/softhsm/libsofthsm2.so"', ""],
        spy_call(0, "C_InitToken", ["[in] slotID = 0x0",
                                    *spy_buffer("pPin[ulPinLen]", so.encode()),
                                    *spy_buffer("pLabel[32]", b"alice's token".ljust(32))]),
        spy_call(1, "C_Login", ["[in] hSession = 0x1", "[in] userType = CKU_USER",
                                *spy_buffer("pPin[ulPinLen]", wrong)], "160 CKR_PIN_INCORRECT"),
        spy_call(2, "C_Login", ["[in] hSession = 0x1", "[in] userType = CKU_SO",
                                *spy_buffer("pPin[ulPinLen]", so.encode())]),
        spy_call(3, "C_InitPIN", ["[in] hSession = 0x1",
                                  *spy_buffer("pPin[ulPinLen]", user.encode())]),
        spy_call(4, "C_SetPIN", ["[in] hSession = 0x1",
                                 *spy_buffer("pOldPin[ulOldLen]", user.encode()),
                                 *spy_buffer("pNewPin[ulNewLen]", new.encode())]),
        spy_call(5, "C_CreateObject", [
            "[in] hSession = 0x1", "[in] pTemplate[3]: ",
            *spy_attr("CKA_VALUE", key), *spy_attr("CKA_CLASS", "CKO_SECRET_KEY"),
            *spy_attr("CKA_KEY_TYPE", "CKK_AES"), "[out] *phObject = 0x2"]),
        spy_call(6, "C_CreateObject", [
            "[in] hSession = 0x1", "[in] pTemplate[3]: ",
            *spy_attr("CKA_CLASS", "CKO_PRIVATE_KEY"), *spy_attr("CKA_PRIME_1", prime),
            *spy_attr("CKA_LABEL", b"alice"), "[out] *phObject = 0x3"]),
        spy_call(7, "C_GetAttributeValue", [
            "[in] hSession = 0x1", "[in] hObject = 0x2", "[in] pTemplate[1]: ",
            f"    CKA_VALUE             {PTR} / {len(key)}", "[out] pTemplate[1]: ",
            *spy_attr("CKA_VALUE", key)]),
        spy_call(8, "C_GetAttributeValue", [
            "[in] hSession = 0x1", "[in] hObject = 0x9", "[in] pTemplate[1]: ",
            f"    CKA_CLASS             {PTR} / 8", "[out] pTemplate[1]: ",
            *spy_attr("CKA_CLASS", "CKO_CERTIFICATE")]),
        spy_call(9, "C_GetAttributeValue", [
            "[in] hSession = 0x1", "[in] hObject = 0x9", "[in] pTemplate[1]: ",
            f"    CKA_VALUE             {PTR} / {len(cert)}", "[out] pTemplate[1]: ",
            *spy_attr("CKA_VALUE", cert)]),
        spy_call(10, "C_UnwrapKey", [
            "[in] hSession = 0x1", "[in] pMechanism->type = CKM_AES_KEY_WRAP",
            "[in] hUnwrappingKey = 0x2", *spy_buffer("pWrappedKey[ulWrappedKeyLen]", b"\xa5" * 24),
            "[in] pTemplate[2]: ", *spy_attr("CKA_CLASS", "CKO_SECRET_KEY"),
            *spy_attr("CKA_VALUE", key[::-1]), "[out] hKey = 0x4"]),
    ]
    return "\n".join(line for call in calls for line in call).encode("latin-1") + b"\n"


def decode(fmt_reader, data: bytes) -> list[Event]:
    return list(fmt_reader.read(io.BytesIO(data)))


@SETTINGS
@given(user=pins, so=pins, new=pins, key=keys, prime=keys, cert=keys,
       wrong=keys, opts=options)
def test_pkcs11_spy_traces(user, so, new, key, prime, cert, wrong, opts) -> None:
    assume(len({user, so, new}) == 3)
    # the certificate is public: no secret may hide in it (nor it in them)
    assume(all(a not in b and b not in a for a in (key, prime, key[::-1], wrong)
               for b in (cert,)))
    # a PIN the trace shows anyway (all zeros, as a dump's offset column) is no secret to find
    control = spy_trace("A" * len(user), "B" * len(so), "C" * len(new), key, prime, cert, wrong)
    assume(not leaks(control, False, [user, so, new], []))
    data = spy_trace(user, so, new, key, prime, cert, wrong)
    assert leaks(data, False, [user, so, new], [key, prime])  # the generator is honest
    out = run_redact("pkcs11-spy", data, opts)
    # the fast path (the default) does what the full line machine does, to the line
    full, found_fast, found_full = io.BytesIO(), [], []
    redact_spy_text.redact(io.BytesIO(data), full, opts, found_full.append, fast=False)
    redact_spy_text.redact(io.BytesIO(data), io.BytesIO(), opts, found_fast.append)
    assert full.getvalue() == out and found_fast == found_full
    assert leaks(out, False, [user, so, new], [key, prime, key[::-1], wrong]) == []
    assert redact.check("pkcs11-spy", io.BytesIO(out), opts) == []
    assert redact.check("pkcs11-spy", io.BytesIO(data), opts) != []
    assert shape(decode(pkcs11spy_text, out)) == shape(decode(pkcs11spy_text, data))
    if not opts.hide_lengths:
        assert [len(x) for x in out.split(b"\n")] == [len(x) for x in data.split(b"\n")]
    # the certificate's value is public (the object is known to be a certificate)
    assert (cert.hex(" ").upper()[:47] in out.decode("latin-1")) != opts.strict
    assert (b"alice" in out) != opts.strict


# --- OPENSC_DEBUG ------------------------------------------------------------------------------

PFX = "P:31337; T:0x140045129508672 14:02:11.{ms:03d} [opensc-pkcs11] "


def sc_dump(data: bytes) -> list[str]:
    out = []
    for k in range(0, len(data), 16):
        chunk = data[k:k + 16]
        h = "".join(f"{b:02X} " for b in chunk)
        out.append((h.ljust(48) if k else h) + "".join(masking.printable(b) for b in chunk))
    return out


def exchange(command: bytes, response: bytes, ms: int) -> list[str]:
    p = PFX.format(ms=ms)
    return [f"{p}apdu.c:378:sc_single_transmit: CLA:{command[0]:X}, INS:{command[1]:X}, "
            f"P1:{command[2]:X}, P2:{command[3]:X}, data({max(0, len(command) - 5)}) "
            f"0x7ffd498acbf0",
            f"{p}reader-pcsc.c:325:pcsc_transmit: reader 'Virtual PCD 00 00'",
            f"{p}reader-pcsc.c:326:pcsc_transmit: ",
            f"Outgoing APDU ({len(command)} bytes):", *sc_dump(command), "",
            f"{p}reader-pcsc.c:335:pcsc_transmit: ",
            f"Incoming APDU ({len(response)} bytes):", *sc_dump(response), ""]


def piv(pin: str) -> bytes:
    return pin.encode().ljust(8, b"\xff")


def block(pin: str) -> bytes:
    return bytes.fromhex(f"2{len(pin):X}{pin}".ljust(16, "F"))


def opensc_trace(user: str, puk: str, new: str, pgp: str, encoding: str,
                 sm_data: bytes) -> bytes:
    enc = piv if encoding == "piv" else block
    lines = [PFX.format(ms=1) + "pkcs11-session.c:281:C_Login: C_Login(0x55d0c3a1e2b0, 1)",
             PFX.format(ms=1) + "framework-pkcs15.c:696:pkcs15_login: pkcs15-login: userType "
                                f"0x1, PIN length {len(user)}"]
    lines += exchange(bytes.fromhex("0020008008") + enc(user), b"\x63\xc2", 2)
    lines += [PFX.format(ms=3) + "pkcs11-session.c:319:C_Login: fLogin() rv 160"]
    lines += [PFX.format(ms=4) + "pkcs11-session.c:281:C_Login: C_Login(0x55d0c3a1e2b0, 1)"]
    lines += exchange(bytes([0, 0x20, 0, 0x81, len(pgp)]) + pgp.encode(), b"\x90\x00", 5)
    lines += [PFX.format(ms=6) + "pkcs11-session.c:319:C_Login: fLogin() rv 0"]
    # CHANGE REFERENCE DATA, chained: old PIN in the first command, new in the second
    lines += exchange(bytes.fromhex("1024008008") + enc(user), b"\x90\x00", 7)
    lines += exchange(bytes.fromhex("0024008008") + enc(new), b"\x90\x00", 8)
    # RESET RETRY COUNTER: PUK and new PIN in one command; also logged as inline hex
    rrc = bytes.fromhex("002C008010") + enc(puk) + enc(new)
    lines += exchange(rrc, b"\x90\x00", 9)
    lines += [PFX.format(ms=10) + "card-x.c:100:x_pin_cmd: sending " + rrc.hex().upper()]
    # under secure messaging the data is a cryptogram: left alone
    sm = bytes([0x0C, 0x20, 0, 0x80, len(sm_data)]) + sm_data
    lines += exchange(sm, b"\x90\x00", 11)
    return "\n".join(lines).encode() + b"\n"


@SETTINGS
@given(user=st.text("0123456789", min_size=6, max_size=8), puk=st.text("0123456789",
       min_size=8, max_size=8), new=st.text("0123456789", min_size=6, max_size=8),
       pgp=pins, encoding=st.sampled_from(["piv", "iso9564"]),
       sm_data=st.binary(min_size=8, max_size=30), opts=options)
def test_opensc_debug_traces(user, puk, new, pgp, encoding, sm_data, opts) -> None:
    assume(len({user, puk, new, pgp}) == 4)
    data = opensc_trace(user, puk, new, pgp, encoding, sm_data)
    secrets = [user, puk, new, pgp]
    assert leaks(data, False, secrets, [])
    out = run_redact("opensc-debug", data, opts)
    assert leaks(out, False, secrets, []) == []
    assert redact.check("opensc-debug", io.BytesIO(out), opts) == []
    assert shape(decode(opensc_debug, out)) == shape(decode(opensc_debug, data))
    assert [len(x) for x in out.split(b"\n")] == [len(x) for x in data.split(b"\n")]
    apdus = [e for e in decode(opensc_debug, out) if e.type == "apdu"]
    assert apdus[-1].command[5:] == sm_data  # secure messaging untouched
    assert all(a.command[1] in (0x20, 0x24, 0x2C) for a in apdus)


# --- p11spy binary -----------------------------------------------------------------------------


def bytes_field(param: int, data: bytes, phase: int = Phase.IN, flags: int = 1) -> bytes:
    return field(param, phase, Kind.BYTES, data, flags)


def template(*attrs: tuple[str, bytes | int]) -> bytes:
    body = ULONG.pack(len(attrs))
    for name, value in attrs:
        v = value if isinstance(value, bytes) else ULONG.pack(value)
        body += ATTRIBUTE.pack(CKA.value_of(name), len(v), Kind.BYTES, len(v)) + v
    return body


def p11_trace(user: str, so: str, new: str, key: bytes, prime: bytes, verify_pin: str) -> bytes:
    f = io.BytesIO()
    w = TraceWriter(f)
    info = {"format": 1, "p11spy": "test", "pid": w.pid, "ppid": 1, "forked": False,
            "uid": 1000, "time_us": 1, "exe": "/home/alice/bin/app",
            "module": "/usr/lib/softhsm/libsofthsm2.so", "output": "/home/alice/t.p11",
            "secrets": True, "max_buffer": 65536, "ulong_size": 8, "byte_order": "little",
            "functions": 104}
    w.write(record(RecordType.PROCESS, 0, json.dumps(info).encode(), pid=w.pid))
    sk, aes = CKO.value_of("CKO_SECRET_KEY"), CKK.value_of("CKK_AES")
    w.call("C_InitToken", ulong(0, 0) + bytes_field(1, so.encode()) + ulong(2, len(so))
           + bytes_field(3, b"alice's token".ljust(32), flags=0))
    w.call("C_Login", ulong(0, 1) + ulong(1, 0) + bytes_field(2, so.encode()) + ulong(3, len(so)))
    w.call("C_InitPIN", ulong(0, 1) + bytes_field(1, user.encode()) + ulong(2, len(user)))
    w.call("C_Login", ulong(0, 1) + ulong(1, 1) + bytes_field(2, user.encode())
           + ulong(3, len(user)),
           apdus=[(bytes.fromhex("0020008008") + piv(verify_pin), b"\x90\x00")])
    w.call("C_SetPIN", ulong(0, 1) + bytes_field(1, user.encode()) + ulong(2, len(user))
           + bytes_field(3, new.encode()) + ulong(4, len(new)))
    w.call("C_CreateObject", ulong(0, 1)
           + field(1, Phase.IN, Kind.TEMPLATE, template(
               ("CKA_VALUE", key), ("CKA_CLASS", sk), ("CKA_KEY_TYPE", aes)))
           + ulong(2, 3) + ulong(3, 2, Phase.OUT))
    w.call("C_CreateObject", ulong(0, 1)
           + field(1, Phase.IN, Kind.TEMPLATE, template(
               ("CKA_CLASS", CKO.value_of("CKO_PRIVATE_KEY")), ("CKA_PRIME_1", prime)))
           + ulong(2, 2) + ulong(3, 3, Phase.OUT))
    w.call("C_GetAttributeValue", ulong(0, 1) + ulong(1, 2)
           + field(2, Phase.OUT, Kind.TEMPLATE, template(("CKA_VALUE", key)))
           + ulong(3, 1))
    return f.getvalue()


@SETTINGS
@given(user=pins, so=pins, new=pins, key=keys, prime=keys,
       verify_pin=st.text("0123456789", min_size=6, max_size=8), opts=options)
def test_p11spy_traces(user, so, new, key, prime, verify_pin, opts) -> None:
    assume(len({user, so, new, verify_pin}) == 4)
    data = p11_trace(user, so, new, key, prime, verify_pin)
    secrets = [user, so, new, verify_pin]
    assert leaks(data, True, secrets, [key, prime])
    out = run_redact("p11spy", data, opts)
    assert leaks(out, True, secrets, [key, prime]) == []
    assert redact.check("p11spy", io.BytesIO(out), opts) == []
    before, after = decode(p11log, data), decode(p11log, out)
    assert shape(after) == shape(before)
    assert [e.type for e in after if e.type == "warning"] == []
    assert after[0].info["redacted"] is True and after[0].info["secrets"] is False
    if not opts.hide_lengths:
        assert len(out) == len(data)
    assert (b"alice" in out) != opts.strict


# --- p11spy binary: when in doubt --------------------------------------------------------------

CLASSES = [CKO.value_of("CKO_OTP_KEY"), CKO.value_of("CKO_VENDOR_DEFINED") | 0x4B4559, 0x7777,
           CKO.value_of("CKO_SECRET_KEY"), None]


def doubtful_trace(pin: str, key: bytes, sought: bytes, cls: int | None) -> bytes:
    """A wrong login and key values the shim masks at capture: under a class that may hold a
    key (OTP, vendor-defined, unknown) or none, and a search by value."""
    f = io.BytesIO()
    w = TraceWriter(f)
    w.process()
    w.call("C_Login", ulong(0, 1) + ulong(1, 1) + bytes_field(2, pin.encode())
           + ulong(3, len(pin)), rv="CKR_PIN_INCORRECT")
    attrs = [("CKA_KEY_TYPE", CKK.value_of("CKK_AES")), ("CKA_VALUE", key)]
    if cls is not None:
        attrs.insert(0, ("CKA_CLASS", cls))
    w.call("C_CreateObject", ulong(0, 1) + field(1, Phase.IN, Kind.TEMPLATE, template(*attrs))
           + ulong(2, len(attrs)) + ulong(3, 7, Phase.OUT))
    w.call("C_FindObjectsInit", ulong(0, 1)
           + field(1, Phase.IN, Kind.TEMPLATE, template(("CKA_VALUE", sought))) + ulong(2, 1))
    return f.getvalue()


# What a damaged type byte makes of a record: one holding no secret by construction (CK_INFO,
# a count of records lost, a passed-on header), an entry, or a type nobody knows.
RETYPED = (RecordType.MODULE_INFO, RecordType.DROPPED, RecordType.ENTRY, RecordType.PASSED_ON,
           *range(9, 256))


def damaged(data: bytes, how: str, where: int, value: int) -> bytes:
    """The trace with one record (the where-th, counted over the records) damaged."""
    offs, off = [], 0
    while off < len(data):
        offs.append(off)
        off += int.from_bytes(data[off + 4:off + 8], "little")
    at = offs[where % len(offs)]
    out = bytearray(data)
    if how == "type":  # a record type this version does not know, or one that holds no
        out[at + 8] = RETYPED[value % len(RETYPED)]  # secret by construction
    elif how == "function":  # a function index past the table
        out[at + 10:at + 12] = (200 + value % 60000).to_bytes(2, "little")
    elif how == "field-length":  # the first field's length
        length = RECORD.size + 4
        out[at + length:at + length + 4] = (value | 1).to_bytes(4, "little")
    elif how == "record-length":
        out[at + 4:at + 8] = value.to_bytes(4, "little")
    elif how == "unflagged":  # every field's "secret in clear" flag cleared
        return bytes(out).replace(b"\x01\x02\x01", b"\x01\x02\x00")
    else:  # truncated
        return bytes(out[:value % len(out)])
    return bytes(out)


@SETTINGS
@given(pin=pins, key=keys, sought=keys, cls=st.sampled_from(CLASSES),
       how=st.sampled_from(["type", "function", "field-length", "record-length", "unflagged",
                            "truncated", "none"]),
       where=st.integers(0, 10), value=st.integers(0, 0xFFFFFFFF), opts=options)
def test_p11spy_traces_in_doubt(pin, key, sought, cls, how, where, value, opts) -> None:
    """Key values under classes that may hold keys or under none, a search by value, and a
    PIN in a record of unknown type or function, behind a damaged length, with its flag
    cleared or cut short: whatever of them the damaged trace still holds, --check finds,
    and redaction leaves none of them."""
    assume(key != sought)
    data = doubtful_trace(pin, key, sought, cls)
    if how != "none":
        data = damaged(data, how, where, value)
    out = run_redact("p11spy", data, opts)
    assert leaks(out, True, [pin], [key, sought]) == []
    assert redact.check("p11spy", io.BytesIO(out), opts) == []
    if leaks(data, True, [pin], [key, sought]):
        assert redact.check("p11spy", io.BytesIO(data), opts) != []
    if not opts.hide_lengths:
        assert len(out) == len(data)


def spy_doubtful(pin: str, key: bytes, sought: bytes, otp: bytes, unknown_fn: str) -> bytes:
    calls = [
        ["*************** OpenSC PKCS#11 spy *****************",
         'Loaded: "/usr/lib/softhsm/libsofthsm2.so"', ""],
        spy_call(0, unknown_fn, ["[in] hSession = 0x1",
                                 *spy_buffer("pPin[ulPinLen]", pin.encode())]),
        spy_call(1, "C_CreateObject", [
            "[in] hSession = 0x1", "[in] pTemplate[2]: ",
            *spy_attr("CKA_KEY_TYPE", "CKK_AES"), *spy_attr("CKA_VALUE", key),
            "[out] *phObject = 0x2"]),
        spy_call(2, "C_CreateObject", [
            "[in] hSession = 0x1", "[in] pTemplate[2]: ",
            *spy_attr("CKA_CLASS", "CKO_OTP_KEY"), *spy_attr("CKA_VALUE", otp),
            "[out] *phObject = 0x3"]),
        spy_call(3, "C_FindObjectsInit", ["[in] hSession = 0x1", "[in] pTemplate[1]: ",
                                          *spy_attr("CKA_VALUE", sought)]),
        spy_call(4, unknown_fn, ["[in] hSession = 0x1", "[in] pTemplate[1]: ",
                                 *spy_attr("CKA_VALUE", key[::-1])]),
    ]
    return "\n".join(line for call in calls for line in call).encode("latin-1") + b"\n"


@SETTINGS
@given(pin=pins, key=keys, sought=keys, otp=keys,
       unknown_fn=st.sampled_from(["C_Lxgin", "C_LoginUserX", "C_Future3_5"]), opts=options)
def test_pkcs11_spy_traces_in_doubt(pin, key, sought, otp, unknown_fn, opts) -> None:
    """pkcs11-spy logs alike: a key template without CKA_CLASS, an OTP key, a search by value,
    and a PIN or template under a function this version does not know."""
    assume(len({key, sought, otp, key[::-1]}) == 4)
    data = spy_doubtful(pin, key, sought, otp, unknown_fn)
    control = spy_doubtful("A" * len(pin), b"\x00" * 16, b"\x01" * 16, b"\x02" * 16, unknown_fn)
    assume(not leaks(control, False, [pin], [key, sought, otp, key[::-1]]))
    secrets = [key, sought, otp, key[::-1]]
    assert leaks(data, False, [pin], secrets)
    out = run_redact("pkcs11-spy", data, opts)
    full = io.BytesIO()
    redact_spy_text.redact(io.BytesIO(data), full, opts, lambda _f: None, fast=False)
    assert full.getvalue() == out
    assert leaks(out, False, [pin], secrets) == []
    assert redact.check("pkcs11-spy", io.BytesIO(out), opts) == []
    assert redact.check("pkcs11-spy", io.BytesIO(data), opts) != []
