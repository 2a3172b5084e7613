"""The kept corpus of hostile inputs (tests/hostile_corpus/): traces of every format that hold known
secrets, and damaged variants of them (truncated, bad lengths, flipped bytes, unknown record
types and functions, missing call headers). tests/test_hostile_corpus.py checks that
`redact --check` agrees with a byte search for the secrets on every one of them.

`.venv/bin/python -m tests.hostile` rewrites the corpus: it records two traces of secrets
(SoftHSM2 through the shim with P11SPY_LOG_SECRETS=1, and through OpenSC's pkcs11-spy: a wrong
PIN, then key values under OTP-key, vendor-defined, unknown and no classes and a search by
value: tests/shim_c/classes.c), cuts the VERIFY of the card fixtures (OPENSC_DEBUG level 9,
pcsc-spy) out of fixtures/, and damages each with a fixed seed. The secrets are listed in
tests/hostile_corpus/secrets.json, by the base trace's name.
"""

from __future__ import annotations

import json
import random
import re
import struct
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from p11spy.facts.pkcs11 import functions

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "hostile_corpus"
SECRETS = CORPUS / "secrets.json"
PIN = "5566778899"  # the wrong PIN the recorded client logs in with
KEYS = ["otp-key-secret-8c1f07", "vendor-secret-5d93a2", "unknown-class-secret-e4b6",
        "aes-noclass-secret-71c4d2", "search-by-value-secret-3e90"]  # classes.c's values
CARD_PIN = "975312"  # the card fixtures' wrong PIN
_LOGIN = functions.BY_NAME["C_Login"].index
_CREATE = functions.BY_NAME["C_CreateObject"].index

Damage = Callable[[bytes, bytes], bytes]  # (trace, first secret as it appears) -> damaged


# --- the base traces --------------------------------------------------------------------------


def _record(dest: Path) -> None:
    """The two recorded traces, from real runs of classes.c over a fresh SoftHSM2 token."""
    from tests.conftest import SHIM, make_token, run
    from tests.cprogs import build

    spy = "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        token = make_token(work / "hsm")
        prog = build("classes", work)
        for name, module, env in (
                ("secrets.p11", SHIM, {"P11SPY_MODULE": token.module,
                                       "P11SPY_LOG_SECRETS": "1"}),
                ("secrets-pkcs11-spy.log", spy, {"PKCS11SPY": token.module})):
            out = dest / name
            out.unlink(missing_ok=True)
            env = {**token.env, **env, "P11SPY_OUTPUT": str(out), "PKCS11SPY_OUTPUT": str(out)}
            for mode in ([], ["noclass"]):
                res = run([str(prog), str(module), PIN, *mode], env)
                if res.returncode != 0:
                    sys.exit(f"classes {mode} through {module}: {res.stderr}")


def _excerpts(dest: Path) -> None:
    """The card fixtures' VERIFY with the calls around it (small enough to keep many of)."""
    fx = ROOT / "fixtures"
    debug = (fx / "opensc-debug" / "real-0.23-card-wrong-pin-debug9.log").read_bytes()
    lines = debug.splitlines(keepends=True)
    (dest / "card-opensc-debug9.log").write_bytes(b"".join(lines[2811:2932]))
    raw = (fx / "pcsc-spy" / "real-1.9.9-card-wrong-pin.raw").read_bytes()
    lines = raw.splitlines(keepends=True)
    (dest / "card-pcsc-spy.raw").write_bytes(b"".join(lines[:4] + lines[676:]))


# --- damage -------------------------------------------------------------------------------------


def record_spans(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each record of a trace, as its lengths say."""
    out, off = [], 0
    while off + 8 <= len(data):
        n = struct.unpack_from("<I", data, off + 4)[0]
        out.append((off, n))
        off += n
    return out


def call_span(data: bytes, fidx: int, nth: int = 0) -> tuple[int, int]:
    """(offset, length) of the nth call record of a function."""
    hits = [(o, n) for o, n in record_spans(data)
            if data[o + 8] == 2 and struct.unpack_from("<H", data, o + 10)[0] == fidx]
    return hits[nth]


def _set(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value):]


def _flips(seed: int, count: int = 4) -> Damage:
    def damage(data: bytes, _secret: bytes) -> bytes:
        rnd, out = random.Random(seed), bytearray(data)
        for _ in range(count):
            at = rnd.randrange(len(out))
            out[at] ^= rnd.randrange(1, 256)
        return bytes(out)
    return damage


def _login_len(delta: int | None, prev: bool = False) -> Damage:
    def damage(data: bytes, _secret: bytes) -> bytes:
        recs = record_spans(data)
        o, n = call_span(data, _LOGIN)
        if prev:
            o, n = recs[recs.index((o, n)) - 1]
        return _set(data, o + 4, struct.pack("<I", 0x3FFFFFFF if delta is None else n + delta))
    return damage


def _byte(fidx: int, at: int, value: int) -> Damage:
    return lambda data, _s: _set(data, call_span(data, fidx)[0] + at, bytes([value]))


P11SPY_DAMAGE: dict[str, Damage] = {
    "cut-in-pin": lambda d, s: d[:d.find(s) + 4],
    "cut-half": lambda d, _s: d[:len(d) // 2],
    "login-len+200": _login_len(200),
    "login-len-3": _login_len(-3),
    "login-len-1g": _login_len(None),
    "before-login-len+3": _login_len(3, prev=True),
    "pin-field-len-9999": lambda d, s: _set(d, d.find(s) - 4, struct.pack("<I", 9999)),
    "pin-unflagged": lambda d, s: _set(d, d.find(s) - 5, b"\0"),
    "pin-as-template": lambda d, s: _set(d, d.find(s) - 6, b"\x04"),
    "login-type-9": _byte(_LOGIN, 8, 9),
    "login-function-127": _byte(_LOGIN, 10, 127),
    "create-type-9": _byte(_CREATE, 8, 9),
    "create-function-200": _byte(_CREATE, 10, 200),
    "login-magic-flipped": lambda d, _s: _set(d, call_span(d, _LOGIN)[0], b"P11X"),
    **{f"flips-{seed}": _flips(seed) for seed in range(1, 7)},
}


def _line_start(data: bytes, at: int) -> int:
    return data.rfind(b"\n", 0, at) + 1


def _header(data: bytes, at: int) -> re.Match[bytes] | None:
    """The last pkcs11-spy call header ("12: C_Login") before a position."""
    found = None
    for m in re.finditer(rb"(?m)^\d+: (C_\w+)\r?$", data[:at]):
        found = m
    return found


TEXT_DAMAGE: dict[str, Damage] = {
    "cut-in-secret": lambda d, s: d[:d.find(s) + len(s) // 2],
    "cut-half": lambda d, _s: d[:len(d) // 2],
    "crlf": lambda d, _s: d.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
    "nul-before-secret": lambda d, s: d[:_line_start(d, d.find(s))] + b"\0\0"
    + d[_line_start(d, d.find(s)):],
    "line-joined": lambda d, s: d[:_line_start(d, d.find(s)) - 1]
    + d[_line_start(d, d.find(s)):],
    **{f"flips-{seed}": _flips(seed) for seed in range(1, 5)},
}

SPY_DAMAGE: dict[str, Damage] = {
    **TEXT_DAMAGE,
    "unknown-function": lambda d, s: _set(d, _header(d, d.find(s)).start(1) + 3, b"x"),
    "header-dropped": lambda d, s: d[:_header(d, d.find(s)).start()]
    + d[_header(d, d.find(s)).end() + 1:],
}


def hex_form(secret: str) -> bytes:
    """How a text trace shows a secret's first bytes: a dump's upper-case hex pairs."""
    return " ".join(f"{b:02X}" for b in secret.encode()[:4]).encode()


BASES: dict[str, tuple[list[str], dict[str, Damage], Callable[[str], bytes]]] = {
    "secrets.p11": ([PIN, *KEYS], P11SPY_DAMAGE, str.encode),
    "secrets-pkcs11-spy.log": ([PIN, *KEYS], SPY_DAMAGE, hex_form),
    "card-opensc-debug9.log": ([CARD_PIN], TEXT_DAMAGE, hex_form),
    "card-pcsc-spy.raw": ([CARD_PIN], TEXT_DAMAGE, hex_form),
}


def variant_name(base: str, damage: str) -> str:
    stem, dot, ext = base.partition(".")
    return f"{stem}.{damage}.{ext}"


def main() -> None:
    CORPUS.mkdir(exist_ok=True)
    for old in CORPUS.iterdir():
        if old.name not in ("README.md",):
            old.unlink()
    _record(CORPUS)
    _excerpts(CORPUS)
    manifest = {}
    for base, (secrets, damages, form) in BASES.items():
        data = (CORPUS / base).read_bytes()
        manifest[base] = secrets
        secret = form(secrets[0])
        if secret not in data:
            sys.exit(f"{base}: {secrets[0]} is not where the damage expects it")
        for name, damage in damages.items():
            (CORPUS / variant_name(base, name)).write_bytes(damage(data, secret))
    SECRETS.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(list(CORPUS.iterdir()))} files in {CORPUS}")


if __name__ == "__main__":
    main()
