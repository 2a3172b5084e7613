"""`redact --check` agrees with a byte search for the planted secrets on every trace of the kept
corpus of hostile inputs (tests/hostile_corpus/, made by tests/hostile.py: traces of each format
holding known PINs and key values, and damaged variants of them): where the search finds a
secret, --check fails; `redact` then leaves none that the search finds, and --check on its
output passes. Also on the fixtures that hold test PINs in clear."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from p11spy.decoder.masking import search
from tests.hostile import BASES, CORPUS, SECRETS, variant_name

P11SPY = str(Path(sys.executable).parent / "p11spy")
FIXTURES = CORPUS.parent.parent / "fixtures"
# Fixtures that show secrets in clear, and what they are (their READMEs say so).
CLEAR_FIXTURES = {
    "pkcs11-spy/real-0.23-set-pin.log": ["123456", "654321"],
    "pkcs11-spy/real-0.23-card-wrong-pin.log": ["975312"],
    "opensc-debug/real-0.23-card-wrong-pin-debug9.log": ["975312"],
    "pcsc-spy/real-1.9.9-card-wrong-pin.raw": ["975312"],
}


def _corpus() -> list[tuple[Path, list[str]]]:
    manifest = json.loads(SECRETS.read_text())
    out = []
    for base, (_secrets, damages, _form) in BASES.items():
        out.append((CORPUS / base, manifest[base]))
        out += [(CORPUS / variant_name(base, d), manifest[base]) for d in damages]
    out += [(FIXTURES / name, secrets) for name, secrets in CLEAR_FIXTURES.items()]
    return out


CASES = _corpus()


def found(path: Path, secrets: list[str]) -> list[str]:
    """Every place a byte search finds one of the secrets: raw, as hex (also across dump
    rows) and in the other encodings a PIN takes."""
    binary = path.suffix == ".p11"
    hits = []
    for secret in secrets:
        encs = search.encodings(secret) if secret.isdigit() else \
            [search.Encoding("secret", secret.encode())]
        with path.open("rb") as f:
            hits += [f"{secret}: {h}" for h in search.search_encodings(f, encs, binary)]
    return hits


def test_the_corpus_is_whole() -> None:
    """Every variant tests.hostile makes is kept, and each base holds all its secrets."""
    for path, _secrets in CASES:
        assert path.is_file(), f"{path} is missing: run .venv/bin/python -m tests.hostile"
    for base in BASES:
        secrets = json.loads(SECRETS.read_text())[base]
        hits = found(CORPUS / base, secrets)
        assert all(any(h.startswith(f"{s}: ") for h in hits) for s in secrets), hits


@pytest.mark.parametrize("path,secrets", CASES, ids=[p.name for p, _ in CASES])
def test_check_agrees_with_a_byte_search(path: Path, secrets: list[str],
                                         tmp_path: Path) -> None:
    before = found(path, secrets)
    check = subprocess.run([P11SPY, "redact", "--check", str(path)], capture_output=True,
                           text=True, timeout=120)
    assert "Traceback" not in check.stderr
    if before:
        assert check.returncode == 1, (before, check.stdout, check.stderr)
    out = tmp_path / f"red{path.suffix}"
    res = subprocess.run([P11SPY, "redact", str(path), "-o", str(out)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert found(out, secrets) == []
    again = subprocess.run([P11SPY, "redact", "--check", str(out)], capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0, again.stdout
