"""python-pkcs11 signs a file with the private key of ID 01 (SHA256-RSA-PKCS), as
`pkcs11-tool --sign --id 01 -m SHA256-RSA-PKCS` does: `python pp11_sign.py MODULE LABEL PIN
INPUT OUTPUT`. The diff tests compare the two clients' runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pkcs11
from pkcs11 import Mechanism, ObjectClass


def main(module: str, label: str, pin: str, data: str, out: str) -> int:
    token = pkcs11.lib(module).get_token(token_label=label)
    with token.open(user_pin=pin) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=b"\x01")
        Path(out).write_bytes(key.sign(Path(data).read_bytes(),
                                       mechanism=Mechanism.SHA256_RSA_PKCS))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
