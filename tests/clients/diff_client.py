"""A raw PKCS#11 client whose runs `p11spy diff` compares: `python diff_client.py MODULE LABEL
PIN [--ebcdic] [--read-only]`.

It logs in and stores a small data object on the token, as a program that keeps its settings
on a token does. The options give the two mistakes the diff tests look for: the right PIN sent
in EBCDIC (cp037) as a z/OS program hands it over, and a read-only session where the store
needs a read/write one. Prints one line per call with its return value, so the test sees what
the module really answered.
"""

from __future__ import annotations

import sys

from diagnose_client import CKR, C, Client, ffi, say


def main(argv: list[str]) -> int:
    module, label, pin = argv[:3]
    c = Client(module)
    f = c.f
    c.init()
    slot = c.slot_of(label)
    h = ffi.new("CK_SESSION_HANDLE *")
    flags = C["CKF_SERIAL_SESSION"] | (0 if "--read-only" in argv else C["CKF_RW_SESSION"])
    say("C_OpenSession", f.C_OpenSession(slot, flags, ffi.NULL, ffi.NULL, h))
    secret = pin.encode("cp037" if "--ebcdic" in argv else "ascii")
    c.login(h[0], secret)
    t, n = c.template([("CKA_CLASS", C["CKO_DATA"]), ("CKA_TOKEN", True),
                       ("CKA_PRIVATE", False), ("CKA_LABEL", "p11spy-diff-settings"),
                       ("CKA_VALUE", b"colour=blue")])
    obj = ffi.new("CK_OBJECT_HANDLE *")
    say("C_CreateObject", f.C_CreateObject(h[0], t, n, obj))
    say("C_CloseSession", f.C_CloseSession(h[0]))
    c.finalize()
    return 0 if CKR else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
