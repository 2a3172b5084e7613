"""Shared fixtures: real SoftHSM2 tokens in temporary directories, and the built shim."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed.card_station import CardStation, card_station

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
REPO = Path(__file__).resolve().parents[1]
SHIM = REPO / "spy" / "libp11spy.so"
USER_PIN = "1234"
SO_PIN = "5678"
LABEL = "p11spy-test"


@dataclass
class Token:
    """A SoftHSM2 token of its own: env to reach it, and the module path."""

    conf: Path
    label: str
    module: str = SOFTHSM_MODULE

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}

    def copy(self, dest: Path) -> Token:
        """An identical token in dest (so two runs start from the same state)."""
        tokens = dest / "tokens"
        shutil.copytree(self.conf.parent / "tokens", tokens)
        conf = dest / "softhsm2.conf"
        conf.write_text(_conf_text(tokens))
        return Token(conf, self.label)


def _conf_text(tokens: Path) -> str:
    return (f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
            "log.level = ERROR\nslots.removable = false\n")


def make_token(root: Path, label: str = LABEL) -> Token:
    if not Path(SOFTHSM_MODULE).exists():
        pytest.fail(f"{SOFTHSM_MODULE} is missing: run `make setup` (softhsm2)")
    tokens = root / "tokens"
    tokens.mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(_conf_text(tokens))
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", USER_PIN,
         "--so-pin", SO_PIN],
        check=True, capture_output=True, env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    )
    return Token(conf, label)


@pytest.fixture
def token(tmp_path: Path) -> Token:
    """A fresh token, initialised with user PIN 1234 and SO PIN 5678."""
    return make_token(tmp_path / "hsm")


@pytest.fixture(scope="session")
def shim() -> Path:
    if not SHIM.is_file():
        pytest.fail(f"{SHIM} is not built: run `make setup`")
    return SHIM


@pytest.fixture(scope="session")
def shim_for(shim: Path) -> Callable[[str], Path]:
    """The shim `p11spy lib` hands out for a real module (the 2.x build for 2.x modules)."""
    from p11spy.spy.shims import shim_path

    return lambda module: shim_path(module)


@pytest.fixture
def spy_env(shim: Path, tmp_path: Path) -> Callable[..., dict[str, str]]:
    """Environment that sends a client through the shim to the given token."""

    def make(tok: Token, output: Path | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in tok.env.items() if not k.startswith(("P11SPY_", "PKCS11SPY"))}
        env["P11SPY_MODULE"] = tok.module
        env["P11SPY_OUTPUT"] = str(output or tmp_path / "trace.p11")
        env.update(extra)
        return env

    return make


def read_trace(path: Path) -> list:
    from p11spy.decoder.formats.p11spy import reader as p11log

    with path.open("rb") as f:
        return list(p11log.read(f))


@pytest.fixture
def trace_calls() -> Callable[[Path], list]:
    from p11spy.decoder.events import Call

    def calls(path: Path) -> list:
        return [e for e in read_trace(path) if isinstance(e, Call)]

    return calls


def with_rsa_key(tok: Token) -> tuple[list[str], dict[str, str]]:
    """An RSA-2048 key pair made on the token by pkcs11-tool (id 01, label k1); gives the
    pkcs11-tool command logged in to it and its environment (no tracer in it)."""
    env = {k: v for k, v in tok.env.items() if not k.startswith("P11SPY_")}
    tool = ["pkcs11-tool", "--module", tok.module, "--login", "--pin", USER_PIN]
    r = subprocess.run([*tool, "--keypairgen", "--key-type", "rsa:2048", "--id", "01",
                        "--label", "k1"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return tool, env


def run(cmd: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture
def piv_card(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CardStation]:
    """A fresh virtual PIV card in a pcscd of the test's own (stopped after the test).

    Parametrize indirectly with a dict of PivCard fields for other PINs or retry limits, and
    `"pinpad": PIN` for a PIN-pad reader whose keypad types PIN.
    """
    args = dict(getattr(request, "param", None) or {})
    with card_station(tmp_path / "station", pinpad=args.pop("pinpad", None), **args) as station:
        yield station
