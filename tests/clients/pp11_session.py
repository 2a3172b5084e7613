"""A python-pkcs11 session for the client tests: `python pp11_session.py MODULE LABEL PIN WRONG`.

Prints library and token information, tries the wrong PIN, then logs in, lists the objects,
signs with the private key of ID 01 (RSA PKCS#1 v1.5: deterministic, printed in hex), and does
an AES-CBC-PAD round trip with a fresh session key (random by nature: only lengths and the
round-trip result are printed). Run once against the real module and once through the shim:
the two outputs must be identical. Its own process, because python-pkcs11 caches libraries.
"""

from __future__ import annotations

import sys

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass


def main(module: str, label: str, pin: str, wrong: str) -> int:
    lib = pkcs11.lib(module)
    print("library", lib.manufacturer_id, "|", lib.library_description, "|",
          lib.cryptoki_version, lib.library_version)
    token = lib.get_token(token_label=label)
    print("token", token.label, "|", token.manufacturer_id, "|", token.model, "|",
          token.serial.hex() if isinstance(token.serial, bytes) else token.serial, "|",
          token.flags, token.hardware_version, token.firmware_version)
    slot = token.slot
    print("slot", slot.slot_id, "|", slot.slot_description, "|", slot.flags)
    print("mechanisms", len(slot.get_mechanisms()))

    try:
        token.open(user_pin=wrong).close()
        print("wrong PIN accepted")
    except pkcs11.PinIncorrect as e:
        print("wrong PIN:", type(e).__name__)

    with token.open(user_pin=pin, rw=True) as session:
        objects = []
        for obj in session.get_objects():
            objects.append((obj[Attribute.CLASS].name, obj[Attribute.LABEL],
                            obj[Attribute.ID].hex()))
        # The order SoftHSM2 returns objects in is the same for identical tokens: not sorted.
        for cls, lab, oid in objects:
            print("object", cls, lab, oid)

        priv = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=b"\x01")
        sig = priv.sign(b"p11spy client test data", mechanism=Mechanism.SHA256_RSA_PKCS)
        print("signature", len(sig), sig.hex())
        pub = session.get_key(object_class=ObjectClass.PUBLIC_KEY, id=b"\x01")
        print("verify", pub.verify(b"p11spy client test data", sig,
                                   mechanism=Mechanism.SHA256_RSA_PKCS))

        aes = session.generate_key(KeyType.AES, 256, label="session-aes", store=False)
        iv = session.generate_random(128)
        plain = b"a message of forty-eight bytes, three AES blocks"
        ct = aes.encrypt(plain, mechanism_param=iv)
        pt = aes.decrypt(ct, mechanism_param=iv)
        print("aes", len(iv), len(ct), len(pt), "roundtrip", pt == plain)
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
