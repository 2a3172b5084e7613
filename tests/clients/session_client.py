"""A PKCS#11 session held open across a card pull: `python session_client.py MODULE LABEL PIN`.

Why: pulling the card *between* calls of one live session is what a long-running client (a
queue manager, a browser) meets; pkcs11-tool runs too briefly for that. The script logs in,
signs once, prints `ready` and waits for a line on stdin (the test pulls the card meanwhile),
then signs again and prints `ok` or `error <ExceptionName>`, then tries to close the session.
Its own process, because python-pkcs11 caches libraries.
"""

from __future__ import annotations

import sys

import pkcs11
from pkcs11 import Mechanism, ObjectClass


def main(module: str, label: str, pin: str) -> int:
    token = pkcs11.lib(module).get_token(token_label=label)
    session = token.open(user_pin=pin)
    key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=b"\x01")
    key.sign(b"before", mechanism=Mechanism.SHA256_RSA_PKCS)
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        key.sign(b"after", mechanism=Mechanism.SHA256_RSA_PKCS)
        print("ok", flush=True)
    except pkcs11.PKCS11Error as e:
        print("error", type(e).__name__, flush=True)
    try:
        session.close()
        print("closed", flush=True)
    except pkcs11.PKCS11Error as e:
        print("close error", type(e).__name__, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
