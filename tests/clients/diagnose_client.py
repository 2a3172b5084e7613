"""A raw PKCS#11 client that gets into the situations `p11spy diagnose` must recognise.

`python diagnose_client.py MODULE MODE [LABEL [PIN [LABEL2]]]`: each mode does what a buggy or
unlucky real program does (an EBCDIC PIN, a second C_Initialize, a key without CKA_SIGN used to
sign, ...) against a real module, and prints one line per call with its return value, so the
test can check the module really answered what the trace is supposed to show. Raw cffi calls,
because the libraries built for clients (python-pkcs11) will not send such bytes or sequences.
"""

from __future__ import annotations

import sys

import cffi

from p11spy.facts.pkcs11 import constants
from p11spy.facts.pkcs11.cdecl import function_list_cdef

F = constants.FAMILIES
C = {**F["CKA"].names, **F["CKM"].names, **F["CKO"].names, **F["CKK"].names,
     **F["CKU"].names, **F["CKF_SESSION"].names}
CKR = F["CKR"]

ffi = cffi.FFI()
ffi.cdef(function_list_cdef())
ffi.cdef("CK_RV C_GetFunctionList(void **);")


PREFIX = ""  # "child " in a forked child


def say(name: str, rv: int) -> int:
    print(PREFIX + name, CKR.name_of(rv), flush=True)
    return rv


class Client:
    def __init__(self, module: str) -> None:
        self.lib = ffi.dlopen(module)
        pp = ffi.new("void **")
        assert self.lib.C_GetFunctionList(pp) == 0
        self.f = ffi.cast("P11_FUNCTION_LIST_3_2 *", pp[0])
        self.keep: list = []

    def init(self) -> int:
        return say("C_Initialize", self.f.C_Initialize(ffi.NULL))

    def finalize(self) -> int:
        return say("C_Finalize", self.f.C_Finalize(ffi.NULL))

    def slots(self) -> list[int]:
        n = ffi.new("CK_ULONG *")
        say("C_GetSlotList", self.f.C_GetSlotList(1, ffi.NULL, n))
        arr = ffi.new("CK_SLOT_ID[]", max(n[0], 1))
        say("C_GetSlotList", self.f.C_GetSlotList(1, arr, n))
        return [arr[i] for i in range(n[0])]

    def slot_of(self, label: str) -> int:
        for s in self.slots():
            info = ffi.new("CK_TOKEN_INFO *")
            say("C_GetTokenInfo", self.f.C_GetTokenInfo(s, info))
            if bytes(info.label).decode().rstrip() == label:
                return s
        raise SystemExit(f"no token {label}")

    def open(self, slot: int) -> int:
        h = ffi.new("CK_SESSION_HANDLE *")
        flags = C["CKF_SERIAL_SESSION"] | C["CKF_RW_SESSION"]
        say("C_OpenSession", self.f.C_OpenSession(slot, flags, ffi.NULL, ffi.NULL, h))
        return h[0]

    def login(self, h: int, pin: bytes) -> int:
        buf = ffi.new("CK_UTF8CHAR[]", pin or b"\0")
        return say("C_Login", self.f.C_Login(h, C["CKU_USER"], buf, len(pin)))

    def template(self, attrs: list[tuple[str, object]]):
        t = ffi.new("CK_ATTRIBUTE[]", len(attrs))
        for i, (name, value) in enumerate(attrs):
            if isinstance(value, bool):
                data = ffi.new("CK_BBOOL *", value)
                size = 1
            elif isinstance(value, int):
                data = ffi.new("CK_ULONG *", value)
                size = ffi.sizeof("CK_ULONG")
            else:
                raw = value.encode() if isinstance(value, str) else value
                data = ffi.new("char[]", raw)
                size = len(raw)
            self.keep.append(data)
            t[i].type = C[name]
            t[i].pValue = data
            t[i].ulValueLen = size
        return t, len(attrs)

    def mechanism(self, name: str):
        m = ffi.new("CK_MECHANISM *")
        m.mechanism = C[name]
        self.keep.append(m)
        return m

    def secret_key(self, h: int, sign: bool, private: bool = True, token: bool = False) -> int:
        t, n = self.template([("CKA_CLASS", C["CKO_SECRET_KEY"]),
                              ("CKA_KEY_TYPE", C["CKK_GENERIC_SECRET"]),
                              ("CKA_VALUE_LEN", 32), ("CKA_TOKEN", token),
                              ("CKA_PRIVATE", private), ("CKA_SIGN", sign),
                              ("CKA_LABEL", "diagnose-key")])
        k = ffi.new("CK_OBJECT_HANDLE *")
        say("C_GenerateKey", self.f.C_GenerateKey(
            h, self.mechanism("CKM_GENERIC_SECRET_KEY_GEN"), t, n, k))
        return k[0]

    def find_key(self, h: int, label: str) -> int:
        t, n = self.template([("CKA_LABEL", label)])
        say("C_FindObjectsInit", self.f.C_FindObjectsInit(h, t, n))
        found = ffi.new("CK_OBJECT_HANDLE[]", 1)
        count = ffi.new("CK_ULONG *")
        say("C_FindObjects", self.f.C_FindObjects(h, found, 1, count))
        say("C_FindObjectsFinal", self.f.C_FindObjectsFinal(h))
        return found[0]

    def read_sign(self, h: int, key: int) -> None:
        t, n = self.template([("CKA_SIGN", False)])
        say("C_GetAttributeValue", self.f.C_GetAttributeValue(h, key, t, n))


def forked_child(c: Client, label: str, init: bool) -> int:
    """The parent initialises, opens a session and forks; the child uses the library (its
    slots, a session of its own, the session the parent opened), with its own C_Initialize
    first if init, else without (PKCS#11 2.40 6.7.6: the child must call C_Initialize), and
    exits; then the parent closes its session. The child's lines start with "child "."""
    global PREFIX
    import os

    slot = c.slot_of(label)
    h = c.open(slot)
    pid = os.fork()
    if pid == 0:
        PREFIX = "child "
        print("child pid", os.getpid(), flush=True)
        if init:
            c.init()
        slots = c.slots()
        c.open(slots[0] if slots else slot)
        info = ffi.new("CK_SESSION_INFO *")
        say("C_GetSessionInfo", c.f.C_GetSessionInfo(h, info))
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    say("C_CloseSession", c.f.C_CloseSession(h))
    c.finalize()
    return os.waitstatus_to_exitcode(status)


def setup_per_sign(c: Client, label: str, pin: bytes, n: int, init: bool) -> int:
    """n HMAC signatures, each with its own session and login (and, if init, its own
    C_Initialize ... C_Finalize), as a program does that keeps nothing open between requests.
    The key is a token object made once, as a service's key would be."""
    f = c.f
    slot = c.slot_of(label)
    h = c.open(slot)
    c.login(h, pin)
    c.secret_key(h, sign=True, token=True)
    say("C_CloseSession", f.C_CloseSession(h))
    data = ffi.new("CK_BYTE[]", b"data to sign")
    sig = ffi.new("CK_BYTE[]", 64)
    size = ffi.new("CK_ULONG *")
    for i in range(n):
        if init and i:
            c.init()
        h = c.open(slot)
        c.login(h, pin)
        key = c.find_key(h, "diagnose-key")
        say("C_SignInit", f.C_SignInit(h, c.mechanism("CKM_SHA256_HMAC"), key))
        size[0] = 64
        say("C_Sign", f.C_Sign(h, data, 12, sig, size))
        say("C_Logout", f.C_Logout(h))
        say("C_CloseSession", f.C_CloseSession(h))
        if init and i < n - 1:
            c.finalize()
    c.finalize()
    return 0


def threads(c: Client, label: str, pin: bytes, n: int) -> int:
    """n threads, each with a session of its own, generating RSA key pairs at the same time:
    long calls (tens of ms) that overlap. cffi lets go of the GIL during each call."""
    import threading

    f = c.f
    slot = c.slot_of(label)
    h = c.open(slot)
    c.login(h, pin)
    pub = [("CKA_TOKEN", False), ("CKA_MODULUS_BITS", 2048), ("CKA_VERIFY", True)]
    priv = [("CKA_TOKEN", False), ("CKA_SIGN", True), ("CKA_PRIVATE", True)]

    def work() -> None:
        s = c.open(slot)
        for _ in range(2):
            tpub, npub = c.template(pub)
            tpriv, npriv = c.template(priv)
            k1, k2 = ffi.new("CK_OBJECT_HANDLE *"), ffi.new("CK_OBJECT_HANDLE *")
            say("C_GenerateKeyPair", f.C_GenerateKeyPair(
                s, c.mechanism("CKM_RSA_PKCS_KEY_PAIR_GEN"), tpub, npub, tpriv, npriv, k1, k2))
        say("C_CloseSession", f.C_CloseSession(s))

    workers = [threading.Thread(target=work) for _ in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    say("C_CloseSession", f.C_CloseSession(h))
    c.finalize()
    return 0


def main() -> int:
    module, mode = sys.argv[1], sys.argv[2]
    label = sys.argv[3] if len(sys.argv) > 3 else "p11spy-test"
    pin = (sys.argv[4] if len(sys.argv) > 4 else "1234").encode()
    c = Client(module)
    f = c.f
    if mode == "threads-os-locking":  # the same threads, the library told to lock
        args = ffi.new("CK_C_INITIALIZE_ARGS *")
        args.flags = F["CKF_INIT_ARGS"].names["CKF_OS_LOCKING_OK"]
        say("C_Initialize", f.C_Initialize(args))
        return threads(c, label, pin, 3)
    bad_pins = {"ebcdic": pin.decode().encode("cp037"), "utf16": pin.decode().encode("utf-16-le"),
                "newline": pin + b"\n", "nul": pin + b"\0", "short-pin": pin[:2],
                "wrong-pin": b"0000"}
    if mode == "before-init":
        n = ffi.new("CK_ULONG *")
        say("C_GetSlotList", f.C_GetSlotList(0, ffi.NULL, n))
        c.init()
        c.slots()
        c.finalize()
        return 0
    if mode == "after-finalize":
        c.init()
        c.finalize()
        info = ffi.new("CK_INFO *")
        say("C_GetInfo", f.C_GetInfo(info))
        return 0
    c.init()
    if mode in ("login-per-sign", "init-per-sign"):
        return setup_per_sign(c, label, pin, 20, init=mode == "init-per-sign")
    if mode == "gives-up-waiting":  # a call that takes too long, and a program that exits
        import threading
        import time

        h = c.open(c.slot_of(label))
        c.login(h, pin)
        tpub, npub = c.template([("CKA_TOKEN", False), ("CKA_MODULUS_BITS", 8192)])
        tpriv, npriv = c.template([("CKA_TOKEN", False), ("CKA_SIGN", True)])
        k1, k2 = ffi.new("CK_OBJECT_HANDLE *"), ffi.new("CK_OBJECT_HANDLE *")
        threading.Thread(target=lambda: say("C_GenerateKeyPair", f.C_GenerateKeyPair(
            h, c.mechanism("CKM_RSA_PKCS_KEY_PAIR_GEN"), tpub, npub, tpriv, npriv, k1, k2)),
            daemon=True).start()
        time.sleep(0.5)  # the program's timeout: it gives up on the call and exits
        print("gave up", flush=True)
        return 3
    if mode == "threads-no-locking":  # C_Initialize(NULL): the module need not lock
        return threads(c, label, pin, 3)
    if mode in ("forked-child", "forked-child-init"):
        return forked_child(c, label, init=mode == "forked-child-init")
    if mode == "double-init":
        c.init()
        c.slots()
        c.finalize()
        return 0
    slot = c.slot_of(label)
    if mode == "no-finalize":
        c.open(slot)
        c.open(slot)
        return 0  # no C_CloseSession, no C_Finalize
    if mode == "many-sessions":
        for _ in range(40):
            c.open(slot)
        c.finalize()
        return 0
    h = c.open(slot)
    if mode in bad_pins:
        c.login(h, bad_pins[mode])
    elif mode == "not-logged-in":
        c.secret_key(h, sign=True)
    elif mode == "after-failed-login":  # a wrong PIN, and the program goes on anyway
        c.login(h, b"0000")
        c.secret_key(h, sign=True)
    elif mode == "after-logout":
        c.login(h, pin)
        say("C_Logout", f.C_Logout(h))
        c.secret_key(h, sign=True)
    elif mode == "closed-last-session":
        c.login(h, pin)
        say("C_CloseSession", f.C_CloseSession(h))
        h = c.open(slot)
        c.secret_key(h, sign=True)
    elif mode == "other-slot":
        c.login(h, pin)
        other = c.slot_of(sys.argv[5])
        h2 = c.open(other)
        c.secret_key(h2, sign=True)
    elif mode == "sign-not-permitted":
        c.login(h, pin)
        key = c.secret_key(h, sign=False)
        c.read_sign(h, key)
        say("C_SignInit", f.C_SignInit(h, c.mechanism("CKM_SHA256_HMAC"), key))
    elif mode == "bad-mechanism":
        n = ffi.new("CK_ULONG *")
        say("C_GetMechanismList", f.C_GetMechanismList(slot, ffi.NULL, n))
        mechs = ffi.new("CK_MECHANISM_TYPE[]", n[0])
        say("C_GetMechanismList", f.C_GetMechanismList(slot, mechs, n))
        c.login(h, pin)
        key = c.secret_key(h, sign=True)
        say("C_SignInit", f.C_SignInit(h, c.mechanism("CKM_RSA_9796"), key))
    elif mode == "find-missing":
        c.login(h, pin)
        t, n = c.template([("CKA_CLASS", C["CKO_PRIVATE_KEY"]), ("CKA_LABEL", "my_key3")])
        say("C_FindObjectsInit", f.C_FindObjectsInit(h, t, n))
        found = ffi.new("CK_OBJECT_HANDLE[]", 4)
        count = ffi.new("CK_ULONG *")
        say("C_FindObjects", f.C_FindObjects(h, found, 4, count))
        say("C_FindObjectsFinal", f.C_FindObjectsFinal(h))
    elif mode == "buffer-loop":
        c.login(h, pin)
        key = c.secret_key(h, sign=True)
        say("C_SignInit", f.C_SignInit(h, c.mechanism("CKM_SHA256_HMAC"), key))
        data = ffi.new("CK_BYTE[]", b"data to sign")
        sig = ffi.new("CK_BYTE[]", 64)
        size = ffi.new("CK_ULONG *")
        for _ in range(5):  # the bug: retries with the same small buffer
            size[0] = 8
            say("C_Sign", f.C_Sign(h, data, 12, sig, size))
        size[0] = 64
        say("C_Sign", f.C_Sign(h, data, 12, sig, size))
    elif mode == "healthy":
        c.login(h, pin)
        key = c.secret_key(h, sign=True)
        say("C_SignInit", f.C_SignInit(h, c.mechanism("CKM_SHA256_HMAC"), key))
        data = ffi.new("CK_BYTE[]", b"data to sign")
        sig = ffi.new("CK_BYTE[]", 64)
        size = ffi.new("CK_ULONG *", 64)
        say("C_Sign", f.C_Sign(h, data, 12, sig, size))
        say("C_Logout", f.C_Logout(h))
    else:
        raise SystemExit(f"unknown mode {mode}")
    say("C_CloseSession", f.C_CloseSession(h))
    c.finalize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
