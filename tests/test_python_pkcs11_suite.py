"""python-pkcs11's own test suite, run against SoftHSM2 directly and through the shim: the same
tests pass, fail and skip both ways (issue 13: the shim never changes what a client sees).

The suite comes from python-pkcs11's source distribution on PyPI (the version installed here),
fetched once into build/ by pip. It chooses some tests by the module's file name, so the shim
is given to it under SoftHSM2's name (a symbolic link).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import REPO, SOFTHSM_MODULE, make_token

SUITE = REPO / "build" / "python-pkcs11-suite"


def _suite() -> Path:
    """The tests/ folder of python-pkcs11's sdist, downloaded once."""
    ver = version("python-pkcs11")
    tests = SUITE / ver / "tests"
    if tests.is_dir():
        return tests
    SUITE.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                          ":all:", "-d", str(SUITE), f"python-pkcs11=={ver}"],
                         capture_output=True, text=True, timeout=600)
    sdist = next(SUITE.glob(f"python_pkcs11-{ver}.tar.gz"), None)
    if sdist is None:
        pytest.fail(f"cannot fetch python-pkcs11 {ver}'s sources from PyPI: {res.stderr[-500:]}")
    prefix = f"python_pkcs11-{ver}/tests/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        tar.extractall(SUITE, members=members, filter="data")
    tests.parent.mkdir(parents=True, exist_ok=True)
    (SUITE / prefix).rename(tests)
    return tests


def _outcomes(tests: Path, module: str, env: dict[str, str]) -> dict[str, str]:
    """Each test's outcome (PASSED, FAILED, SKIPPED, ERROR) in one run of the suite."""
    res = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
                          "-W", "ignore", "tests"], cwd=tests.parent, capture_output=True,
                         text=True, timeout=900,
                         env={**env, "PKCS11_MODULE": module, "PKCS11_TOKEN_LABEL": "suite",
                              "PKCS11_TOKEN_PIN": "1234", "PKCS11_TOKEN_SO_PIN": "5678"})
    found = {}
    for line in res.stdout.splitlines():
        m = re.match(r"(PASSED|FAILED|ERROR|SKIPPED) (\S+)", line)
        if m:
            found[m.group(2) + (line if m.group(1) == "SKIPPED" else "")] = m.group(1)
    assert found, res.stdout[-2000:] + res.stderr[-2000:]
    return found


def test_python_pkcs11_suite_same_through_the_shim(tmp_path: Path, shim: Path) -> None:
    tests = _suite()
    direct_tok = make_token(tmp_path / "direct", "suite")
    direct = _outcomes(tests, SOFTHSM_MODULE, direct_tok.env)
    link = tmp_path / "shim" / "libsofthsm2.so"
    link.parent.mkdir()
    link.symlink_to(shim)
    spied_tok = make_token(tmp_path / "spied", "suite")
    env = {**spied_tok.env, "P11SPY_MODULE": SOFTHSM_MODULE,
           "P11SPY_OUTPUT": str(tmp_path / "suite-%p.p11")}
    spied = _outcomes(tests, str(link), env)
    assert spied == direct
    assert sum(v == "PASSED" for v in direct.values()) > 100
    traces = list(tmp_path.glob("suite-*.p11"))
    assert traces and os.path.getsize(traces[0]) > 10_000  # the calls went through the shim
