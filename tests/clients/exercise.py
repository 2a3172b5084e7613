"""A PKCS#11 client that calls every function with valid and invalid arguments.

Run as `python exercise.py MODULE [USER_PIN SO_PIN [valid]]`; prints one line per call with its
return value and outputs. Run once against the real module and once through the shim: the two
transcripts must be identical (outputs that are random by nature, such as keys and random
bytes, are printed as lengths or checked in place).
"""

from __future__ import annotations

import sys

import cffi

from p11spy.facts.pkcs11 import constants, functions
from p11spy.facts.pkcs11.cdecl import function_list_cdef
from p11spy.facts.pkcs11.model import Role

F = constants.FAMILIES
CKR = F["CKR"]
C = {**F["CKA"].names, **F["CKM"].names, **F["CKO"].names, **F["CKK"].names, **F["CKU"].names,
     **F["CKF_SESSION"].names, **F["CKF_WAIT"].names}

ffi = cffi.FFI()
ffi.cdef(function_list_cdef())
ffi.cdef("CK_RV C_GetFunctionList(void **);")
ffi.cdef("CK_RV C_GetInterfaceList(CK_INTERFACE *, CK_ULONG *);")
ffi.cdef("CK_RV C_GetInterface(CK_UTF8CHAR *, CK_VERSION *, CK_INTERFACE **, CK_FLAGS);")
out = []


def say(*parts: object) -> None:
    line = " ".join(str(p) for p in parts)
    out.append(line)
    print(line, flush=True)


def rvn(rv: int) -> str:
    return CKR.name_of(rv)


def zero_args(fn, *, handle: int = 0) -> list:
    """Arguments of the right C types: NULL pointers, zero lengths, the given handle."""
    args = []
    for p in fn.params:
        if p.role is Role.HANDLE:
            args.append(handle)
        elif p.role is Role.FLAGS and p.kind == "CKF_WAIT":
            args.append(C["CKF_DONT_BLOCK"])
        elif p.ctype.endswith("_PTR") or "*" in p.ctype or p.role in (
                Role.POINTER, Role.FUNCTION_LIST_OUT, Role.INTERFACE_OUT,
                Role.INTERFACE_LIST_OUT):
            args.append(ffi.NULL)
        else:
            args.append(0)
    return args


SKIP_BLIND = {"C_Initialize", "C_Finalize", "C_GetFunctionList", "C_GetInterfaceList",
              "C_GetInterface"}


def blind_calls(fl, label: str, nslots: int, handle: int = 0) -> None:
    for fn in functions.FUNCTIONS[:nslots]:
        if fn.name in SKIP_BLIND:
            continue
        f = getattr(fl, fn.name)
        if f == ffi.NULL:
            say(label, fn.name, "absent")
            continue
        say(label, fn.name, rvn(f(*zero_args(fn, handle=handle))))


def tmpl(*items: tuple[str, object]):
    """A CK_ATTRIBUTE array from (name, value) with value bytes, bool, int or None (NULL)."""
    arr = ffi.new("CK_ATTRIBUTE[]", len(items))
    keep = []
    for i, (name, v) in enumerate(items):
        arr[i].type = C[name]
        if v is None:
            arr[i].pValue = ffi.NULL
            arr[i].ulValueLen = 0
            continue
        if isinstance(v, bool):
            buf = ffi.new("CK_BBOOL *", v)
            size = 1
        elif isinstance(v, int):
            buf = ffi.new("CK_ULONG *", v)
            size = 8
        elif isinstance(v, tuple):  # ("room", n): an output buffer of n bytes
            buf = ffi.new("unsigned char[]", v[1])
            size = v[1]
        else:
            buf = ffi.new("unsigned char[]", bytes(v))
            size = len(v)
        keep.append(buf)
        arr[i].pValue = buf
        arr[i].ulValueLen = size
    return arr, keep


def mech(name: str, param: bytes | None = None):
    m = ffi.new("CK_MECHANISM *")
    m.mechanism = C[name]
    keep = None
    if param is not None:
        keep = ffi.new("unsigned char[]", param)
        m.pParameter = keep
        m.ulParameterLen = len(param)
    return m, keep


def two_call(label: str, f, *head):
    """Length query, too-small buffer, then the real call; returns the bytes."""
    n = ffi.new("CK_ULONG *", 0)
    rv = f(*head, ffi.NULL, n)
    say(label, "length-query", rvn(rv), n[0])
    if rv != 0:
        return None
    if n[0] > 1:
        small = ffi.new("unsigned char[]", 1)
        n1 = ffi.new("CK_ULONG *", 1)
        rv = f(*head, small, n1)
        say(label, "too-small", rvn(rv), n1[0])
        if rv == CKR.value_of("CKR_OK"):
            return bytes(ffi.buffer(small, n1[0]))  # a one-shot operation ended here
    buf = ffi.new("unsigned char[]", max(n[0], 1))
    rv = f(*head, buf, n)
    say(label, rvn(rv), n[0])
    return bytes(ffi.buffer(buf, n[0])) if rv == 0 else None


def interfaces(lib, blind: bool = True):
    """Lists the module's interfaces; returns its newest "PKCS 11" list, or None."""
    try:
        get_list, get_one = lib.C_GetInterfaceList, lib.C_GetInterface
    except AttributeError:
        say("no C_GetInterfaceList")
        return None
    count = ffi.new("CK_ULONG *")
    if blind:
        say("C_GetInterfaceList(NULL, NULL)", rvn(get_list(ffi.NULL, ffi.NULL)))
    rv = get_list(ffi.NULL, count)
    say("C_GetInterfaceList length-query", rvn(rv), count[0])
    arr = ffi.new("CK_INTERFACE[]", max(count[0], 1))
    rv = get_list(arr, count)
    best = None
    for i in range(count[0] if rv == 0 else 0):
        fl = ffi.cast("P11_FUNCTION_LIST_3_2 *", arr[i].pFunctionList)
        name = ffi.string(ffi.cast("char *", arr[i].pInterfaceName)).decode()
        say("interface", name, f"{fl.version.major}.{fl.version.minor}", arr[i].flags)
    pp = ffi.new("CK_INTERFACE **")
    rv = get_one(b"PKCS 11", ffi.NULL, pp, 0)
    if rv == 0:
        fl = ffi.cast("P11_FUNCTION_LIST_3_2 *", pp[0].pFunctionList)
        say("C_GetInterface", rvn(rv), f"{fl.version.major}.{fl.version.minor}", pp[0].flags)
        if fl.version.major == 3:
            best = fl
    else:
        say("C_GetInterface", rvn(rv))
    ver = ffi.new("CK_VERSION *", {"major": 2, "minor": 40})
    rv = get_one(b"PKCS 11", ver, pp, 0)
    say("C_GetInterface 2.40", rvn(rv))
    say("C_GetInterface bogus", rvn(get_one(b"No such", ffi.NULL, pp, 0)))
    return best


def main(module: str, user_pin: bytes, so_pin: bytes, blind: bool = True) -> int:
    lib = ffi.dlopen(module)
    pp = ffi.new("void **")
    if blind:
        say("C_GetFunctionList(NULL)", rvn(lib.C_GetFunctionList(ffi.NULL)))
    rv = lib.C_GetFunctionList(pp)
    fl = ffi.cast("P11_FUNCTION_LIST_3_2 *", pp[0])
    say("C_GetFunctionList", rvn(rv), f"{fl.version.major}.{fl.version.minor}")
    n = len(functions.functions_in("2.40"))

    # pkcs11-spy (0.23) crashes in C_GetInterfaceList over a 2.x module: the "valid" run,
    # made for comparing with it, keeps to C_GetFunctionList.
    fl3 = interfaces(lib, blind) if blind else None
    if fl3 is not None:
        fl = fl3  # the richest list the module offers: every function it has is exercised
        version = "3.2" if fl.version.minor >= 2 else "3.0"
        n = len(functions.functions_in(version))
    if blind:
        blind_calls(fl, "before-init", n)
        say("C_Finalize before init", rvn(fl.C_Finalize(ffi.NULL)))
    say("C_Initialize", rvn(fl.C_Initialize(ffi.NULL)))
    say("C_Initialize again", rvn(fl.C_Initialize(ffi.NULL)))
    if blind:
        blind_calls(fl, "null-args", n)
        blind_calls(fl, "bad-handle", n, handle=0xDEAD)

    info = ffi.new("CK_INFO *")
    say("C_GetInfo", rvn(fl.C_GetInfo(info)), ffi.string(info.manufacturerID, 32))

    count = ffi.new("CK_ULONG *")
    rv = fl.C_GetSlotList(1, ffi.NULL, count)
    say("C_GetSlotList length-query", rvn(rv), count[0])
    slots = ffi.new("CK_SLOT_ID[]", max(count[0], 1))
    if count[0] > 1:
        small = ffi.new("CK_ULONG *", 1)
        say("C_GetSlotList too-small", rvn(fl.C_GetSlotList(1, slots, small)), small[0])
    rv = fl.C_GetSlotList(1, slots, count)
    say("C_GetSlotList", rvn(rv), [slots[i] for i in range(count[0])])
    if not count[0]:
        say("no token: stopping before sessions")
        say("C_Finalize", rvn(fl.C_Finalize(ffi.NULL)))
        return 0
    slot = slots[0]

    tinfo = ffi.new("CK_TOKEN_INFO *")
    say("C_GetTokenInfo", rvn(fl.C_GetTokenInfo(slot, tinfo)), ffi.string(tinfo.label, 32),
        tinfo.flags, tinfo.ulMinPinLen, tinfo.ulMaxPinLen)
    sinfo = ffi.new("CK_SLOT_INFO *")
    say("C_GetSlotInfo", rvn(fl.C_GetSlotInfo(slot, sinfo)), sinfo.flags)

    rv = fl.C_GetMechanismList(slot, ffi.NULL, count)
    mechs = ffi.new("CK_MECHANISM_TYPE[]", max(count[0], 1))
    rv = fl.C_GetMechanismList(slot, mechs, count)
    say("C_GetMechanismList", rvn(rv), count[0])
    minfo = ffi.new("CK_MECHANISM_INFO *")
    for i in range(min(count[0], 8)):
        rv = fl.C_GetMechanismInfo(slot, mechs[i], minfo)
        say("C_GetMechanismInfo", mechs[i], rvn(rv), minfo.ulMinKeySize, minfo.ulMaxKeySize,
            minfo.flags)
    say("C_GetMechanismInfo bogus", rvn(fl.C_GetMechanismInfo(slot, 0x7FFFFFF0, minfo)))

    hs = ffi.new("CK_SESSION_HANDLE *")
    flags = C["CKF_SERIAL_SESSION"] | C["CKF_RW_SESSION"]
    say("C_OpenSession", rvn(fl.C_OpenSession(slot, flags, ffi.NULL, ffi.NULL, hs)), hs[0])
    s = hs[0]
    ses = ffi.new("CK_SESSION_INFO *")
    say("C_GetSessionInfo", rvn(fl.C_GetSessionInfo(s, ses)), ses.state, ses.flags)

    wrong = b"0000"
    say("C_Login wrong", rvn(fl.C_Login(s, C["CKU_USER"], wrong, len(wrong))))
    say("C_Login NULL pin", rvn(fl.C_Login(s, C["CKU_USER"], ffi.NULL, 4)))
    say("C_Login", rvn(fl.C_Login(s, C["CKU_USER"], user_pin, len(user_pin))))
    say("C_Login again", rvn(fl.C_Login(s, C["CKU_USER"], user_pin, len(user_pin))))
    say("C_GetSessionInfo", rvn(fl.C_GetSessionInfo(s, ses)), ses.state)

    # An RSA key pair; PKCS#1 v1.5 signatures are deterministic, so they compare exactly.
    pub, k1 = tmpl(("CKA_TOKEN", True), ("CKA_VERIFY", True), ("CKA_MODULUS_BITS", 1024),
                   ("CKA_PUBLIC_EXPONENT", b"\x01\x00\x01"), ("CKA_LABEL", b"exercise"),
                   ("CKA_ID", b"\x01"))
    priv, k2 = tmpl(("CKA_TOKEN", True), ("CKA_SIGN", True), ("CKA_SENSITIVE", True),
                    ("CKA_LABEL", b"exercise"), ("CKA_ID", b"\x01"), ("CKA_PRIVATE", True))
    m, _ = mech("CKM_RSA_PKCS_KEY_PAIR_GEN")
    hpub = ffi.new("CK_OBJECT_HANDLE *")
    hpriv = ffi.new("CK_OBJECT_HANDLE *")
    rv = fl.C_GenerateKeyPair(s, m, pub, 6, priv, 6, hpub, hpriv)
    say("C_GenerateKeyPair", rvn(rv), hpub[0], hpriv[0])

    data = b"p11spy exercise data"
    m, _ = mech("CKM_SHA256_RSA_PKCS")
    say("C_SignInit", rvn(fl.C_SignInit(s, m, hpriv[0])))
    sig = two_call("C_Sign", fl.C_Sign, s, data, len(data))
    say("C_VerifyInit", rvn(fl.C_VerifyInit(s, m, hpub[0])))
    if sig:
        say("C_Verify", rvn(fl.C_Verify(s, data, len(data), sig, len(sig))))
    say("C_VerifyInit", rvn(fl.C_VerifyInit(s, m, hpub[0])))
    say("C_Verify bad", rvn(fl.C_Verify(s, data, len(data), b"\x00" * 128, 128)))
    say("C_SignInit", rvn(fl.C_SignInit(s, m, hpriv[0])))
    say("C_SignUpdate", rvn(fl.C_SignUpdate(s, data, len(data))))
    sig2 = two_call("C_SignFinal", fl.C_SignFinal, s)
    say("signatures equal", sig == sig2)

    # Attributes: length queries, too-small buffers, sensitive values, invalid types.
    t, _ = tmpl(("CKA_MODULUS", None), ("CKA_LABEL", None), ("CKA_PRIVATE_EXPONENT", None))
    rv = fl.C_GetAttributeValue(s, hpriv[0], t, 3)
    say("C_GetAttributeValue lengths", rvn(rv), [t[i].ulValueLen for i in range(3)])
    t, _ = tmpl(("CKA_MODULUS", ("room", 128)), ("CKA_LABEL", ("room", 2)),
                ("CKA_CLASS", ("room", 8)), ("CKA_SIGN", ("room", 1)))
    rv = fl.C_GetAttributeValue(s, hpriv[0], t, 4)
    say("C_GetAttributeValue small", rvn(rv), [t[i].ulValueLen for i in range(4)])
    t, keep = tmpl(("CKA_MODULUS", ("room", 128)), ("CKA_LABEL", ("room", 8)))
    rv = fl.C_GetAttributeValue(s, hpub[0], t, 2)
    say("C_GetAttributeValue", rvn(rv), bytes(ffi.buffer(keep[1], 8)))
    t, _ = tmpl(("CKA_PRIVATE_EXPONENT", ("room", 128)))
    say("C_GetAttributeValue sensitive", rvn(fl.C_GetAttributeValue(s, hpriv[0], t, 1)),
        t[0].ulValueLen)
    t, _ = tmpl(("CKA_VALUE_LEN", ("room", 8)))
    say("C_GetAttributeValue invalid", rvn(fl.C_GetAttributeValue(s, hpub[0], t, 1)),
        t[0].ulValueLen)
    size = ffi.new("CK_ULONG *")
    say("C_GetObjectSize", rvn(fl.C_GetObjectSize(s, hpub[0], size)))

    # Finding objects, in small pages.
    t, _ = tmpl(("CKA_LABEL", b"exercise"))
    say("C_FindObjectsInit", rvn(fl.C_FindObjectsInit(s, t, 1)))
    found = ffi.new("CK_OBJECT_HANDLE[]", 1)
    got = ffi.new("CK_ULONG *")
    handles = []
    while True:
        rv = fl.C_FindObjects(s, found, 1, got)
        if rv or not got[0]:
            break
        handles.append(found[0])
    say("C_FindObjects", rvn(rv), sorted(handles))
    say("C_FindObjectsFinal", rvn(fl.C_FindObjectsFinal(s)))

    # A secret key: its value must not show in a trace, but the call must work.
    aes, keep = tmpl(("CKA_CLASS", C["CKO_SECRET_KEY"]), ("CKA_KEY_TYPE", C["CKK_AES"]),
                     ("CKA_VALUE_LEN", 32), ("CKA_ENCRYPT", True), ("CKA_DECRYPT", True),
                     ("CKA_EXTRACTABLE", True), ("CKA_SENSITIVE", False),
                     ("CKA_TOKEN", False))
    m, _ = mech("CKM_AES_KEY_GEN")
    hk = ffi.new("CK_OBJECT_HANDLE *")
    say("C_GenerateKey", rvn(fl.C_GenerateKey(s, m, aes, 8, hk)), hk[0])
    t, keep = tmpl(("CKA_VALUE", ("room", 32)))
    say("C_GetAttributeValue key", rvn(fl.C_GetAttributeValue(s, hk[0], t, 1)), t[0].ulValueLen)
    iv = bytes(range(16))
    plain = b"sixteen byte msg" * 3
    m, _ = mech("CKM_AES_CBC_PAD", iv)
    say("C_EncryptInit", rvn(fl.C_EncryptInit(s, m, hk[0])))
    ct = two_call("C_Encrypt", fl.C_Encrypt, s, plain, len(plain))
    say("C_DecryptInit", rvn(fl.C_DecryptInit(s, m, hk[0])))
    pt = two_call("C_Decrypt", fl.C_Decrypt, s, ct or b"", len(ct or b""))
    say("roundtrip", pt == plain)
    say("C_EncryptInit", rvn(fl.C_EncryptInit(s, m, hk[0])))
    part = ffi.new("unsigned char[]", 64)
    pl = ffi.new("CK_ULONG *", 64)
    say("C_EncryptUpdate", rvn(fl.C_EncryptUpdate(s, plain, len(plain), part, pl)), pl[0])
    pl[0] = 64
    say("C_EncryptFinal", rvn(fl.C_EncryptFinal(s, part, pl)), pl[0])

    m, _ = mech("CKM_SHA256")
    say("C_DigestInit", rvn(fl.C_DigestInit(s, m)))
    dig = two_call("C_Digest", fl.C_Digest, s, data, len(data))
    say("digest", dig.hex() if dig else None)
    say("C_DigestInit", rvn(fl.C_DigestInit(s, m)))
    say("C_DigestUpdate", rvn(fl.C_DigestUpdate(s, data, len(data))))
    dig2 = two_call("C_DigestFinal", fl.C_DigestFinal, s)
    say("digests equal", dig == dig2)

    rnd = ffi.new("unsigned char[]", 32)
    say("C_GenerateRandom", rvn(fl.C_GenerateRandom(s, rnd, 32)))
    say("C_SeedRandom", rvn(fl.C_SeedRandom(s, b"seed", 4)))

    obj, keep = tmpl(("CKA_CLASS", C["CKO_DATA"]), ("CKA_TOKEN", False),
                     ("CKA_LABEL", b"data object"), ("CKA_VALUE", b"hello"))
    ho = ffi.new("CK_OBJECT_HANDLE *")
    say("C_CreateObject", rvn(fl.C_CreateObject(s, obj, 4, ho)), ho[0])
    t, keep = tmpl(("CKA_VALUE", ("room", 5)))
    say("C_GetAttributeValue data", rvn(fl.C_GetAttributeValue(s, ho[0], t, 1)),
        bytes(ffi.buffer(keep[0], 5)))
    t, _ = tmpl(("CKA_LABEL", b"renamed"))
    say("C_SetAttributeValue", rvn(fl.C_SetAttributeValue(s, ho[0], t, 1)))
    t, _ = tmpl(("CKA_LABEL", b"copy"))
    hc = ffi.new("CK_OBJECT_HANDLE *")
    say("C_CopyObject", rvn(fl.C_CopyObject(s, ho[0], t, 1, hc)), hc[0])
    say("C_DestroyObject", rvn(fl.C_DestroyObject(s, hc[0])))
    say("C_DestroyObject again", rvn(fl.C_DestroyObject(s, hc[0])))

    new_pin = b"87654321"
    say("C_SetPIN", rvn(fl.C_SetPIN(s, user_pin, len(user_pin), new_pin, len(new_pin))))
    say("C_SetPIN back", rvn(fl.C_SetPIN(s, new_pin, len(new_pin), user_pin, len(user_pin))))
    say("C_Logout", rvn(fl.C_Logout(s)))
    say("C_Logout again", rvn(fl.C_Logout(s)))
    say("C_Login SO", rvn(fl.C_Login(s, C["CKU_SO"], so_pin, len(so_pin))))
    say("C_InitPIN", rvn(fl.C_InitPIN(s, user_pin, len(user_pin))))
    say("C_Logout", rvn(fl.C_Logout(s)))
    say("C_CloseSession", rvn(fl.C_CloseSession(s)))
    say("C_CloseSession again", rvn(fl.C_CloseSession(s)))
    say("C_OpenSession", rvn(fl.C_OpenSession(slot, flags, ffi.NULL, ffi.NULL, hs)))
    say("C_CloseAllSessions", rvn(fl.C_CloseAllSessions(slot)))
    slot_out = ffi.new("CK_SLOT_ID *")
    say("C_WaitForSlotEvent", rvn(fl.C_WaitForSlotEvent(C["CKF_DONT_BLOCK"], slot_out,
                                                        ffi.NULL)))
    say("C_Finalize", rvn(fl.C_Finalize(ffi.NULL)))
    say("C_Finalize again", rvn(fl.C_Finalize(ffi.NULL)))
    return 0


if __name__ == "__main__":
    pin = (sys.argv[2] if len(sys.argv) > 2 else "1234").encode()
    so = (sys.argv[3] if len(sys.argv) > 3 else "5678").encode()
    # "valid" as fourth argument: only well-formed calls (pkcs11-spy crashes on the others).
    sys.exit(main(sys.argv[1], pin, so, blind=sys.argv[4:5] != ["valid"]))
