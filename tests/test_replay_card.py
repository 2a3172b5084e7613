"""`p11spy replay` of clients recorded on the card station (`p11spy run`: OpenSC, pcscd and the
virtual PIV card), answered with the station stopped: the same output, the same exit status,
and a blocked PIN is blocked again."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testbed.card_station import CardStation
from tests.test_replay import matches, replay_module
from tests.test_run_card import TIMEOUT, WRONG_PIN, pkcs11_tool, traced

PY_CARD_CLIENT = """
import sys, pkcs11
from pkcs11 import Mechanism, ObjectClass
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
print("token", token.label, token.serial.hex() if isinstance(token.serial, bytes) else token.serial)
with token.open(user_pin=sys.argv[3]) as s:
    key = s.get_key(object_class=ObjectClass.PRIVATE_KEY)
    sig = key.sign(b"data to sign", mechanism=Mechanism.SHA256_RSA_PKCS)
    print("signature", len(sig), sig.hex())
"""


def replayed(cmd: list[str], card_module: str, module: str, env: dict[str, str]):
    return subprocess.run([module if a == card_module else a for a in cmd], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("piv_card", [{"retries": 1}], indirect=True)
def test_card_runs_replayed_with_the_station_stopped(piv_card: CardStation,
                                                     tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"sign me")
    runs = {
        "sign": pkcs11_tool(piv_card, "--login", "--pin", piv_card.pin, "--sign", "--id", "01",
                            "-m", "SHA256-RSA-PKCS", "-i", str(data), "-o",
                            str(tmp_path / "sig")),
        "wrong-pin": pkcs11_tool(piv_card, "--login", "--pin", WRONG_PIN, "-O"),
        "blocked": pkcs11_tool(piv_card, "--login", "--pin", WRONG_PIN, "-O"),
    }
    recorded = {}
    for name, cmd in runs.items():
        t = traced(piv_card, tmp_path / name, cmd)
        (trace,) = t.traces
        recorded[name] = (t.result, replay_module(trace, tmp_path / f"replay-{name}"))
    assert "CKR_PIN_LOCKED" in recorded["blocked"][0].stderr
    env = dict(piv_card.env)
    piv_card.daemon.stop()  # no pcscd, no card: only the replay answers
    gone = subprocess.run(runs["wrong-pin"], env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert gone.returncode != 0 and "CKR_PIN" not in gone.stderr  # the card really is gone
    (tmp_path / "sig").rename(tmp_path / "sig.recorded")
    for name, cmd in runs.items():
        rec, module = recorded[name]
        got = replayed(cmd, piv_card.module, module, env)
        assert (got.stdout, got.returncode) == (rec.stdout, rec.returncode), (name, got.stderr)
        (run_matches,) = matches(tmp_path / f"replay-{name}")
        assert "diverged" not in {m["match"] for m in run_matches}, name
    assert (tmp_path / "sig").read_bytes() == (tmp_path / "sig.recorded").read_bytes()
    assert "CKR_PIN_LOCKED" in replayed(runs["blocked"], piv_card.module,
                                        recorded["blocked"][1], env).stderr


def test_python_pkcs11_on_the_card_replayed_with_the_station_stopped(piv_card: CardStation,
                                                                     tmp_path: Path) -> None:
    import sys

    script = tmp_path / "client.py"
    script.write_text(PY_CARD_CLIENT)
    cmd = [sys.executable, str(script), piv_card.module, piv_card.token_label, piv_card.pin]
    t = traced(piv_card, tmp_path / "rec", cmd)
    assert t.result.returncode == 0 and "signature 256" in t.result.stdout, t.result.stderr
    (trace,) = t.traces
    module = replay_module(trace, tmp_path / "replay")
    env = dict(piv_card.env)
    piv_card.daemon.stop()
    got = replayed(cmd, piv_card.module, module, env)
    assert (got.stdout, got.returncode) == (t.result.stdout, 0), got.stderr
    (run_matches,) = matches(tmp_path / "replay")
    assert "diverged" not in {m["match"] for m in run_matches}


def test_keytool_on_the_card_replayed_with_the_station_stopped(piv_card: CardStation,
                                                                tmp_path: Path) -> None:
    from tests.test_clients import keytool_list, need

    need("keytool", "openjdk-17-jdk-headless")
    (tmp_path / "rec").mkdir()
    t = traced(piv_card, tmp_path / "traces",
               keytool_list(piv_card.module, piv_card.pin, tmp_path / "rec", "Card"), timeout=120)
    assert t.result.returncode == 0 and "PrivateKeyEntry" in t.result.stdout, t.result.stderr
    (trace,) = t.traces
    module = replay_module(trace, tmp_path / "replay")
    env = dict(piv_card.env)
    piv_card.daemon.stop()
    (tmp_path / "again").mkdir()
    got = subprocess.run(keytool_list(module, piv_card.pin, tmp_path / "again", "Card"), env=env,
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert (got.stdout, got.returncode) == (t.result.stdout, 0), got.stderr
    (run_matches,) = matches(tmp_path / "replay")
    assert "diverged" not in {m["match"] for m in run_matches}
