"""`p11spy replay` of keytool with SunPKCS11 (a JVM: several threads, its own call pattern),
recorded over SoftHSM2 through the shim and replayed with the token folder removed."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import Token, run
from tests.test_clients import PIN, WRONG_PIN, keytool_list, need, prepared  # noqa: F401
from tests.test_replay import matches, replay_module, without_token


def test_keytool_replayed_without_the_token(prepared: Token, tmp_path: Path,  # noqa: F811
                                            spy_env, shim_for) -> None:
    need("keytool", "openjdk-17-jdk-headless")
    tok = prepared.copy(tmp_path / "hsm")
    shim = str(shim_for(tok.module))
    recorded = {}
    for name, pin in (("list", PIN), ("wrong-pin", WRONG_PIN)):
        d = tmp_path / name
        d.mkdir()
        trace = d / "rec.p11"
        res = run(keytool_list(shim, pin, d), spy_env(tok, trace))
        recorded[name] = (res, replay_module(trace, d / "replay"), pin, d)
    assert recorded["list"][0].returncode == 0, recorded["list"][0].stderr
    assert "k1, PrivateKeyEntry" in recorded["list"][0].stdout
    assert recorded["wrong-pin"][0].returncode != 0
    env = without_token(tok)
    for name, (rec, module, pin, d) in recorded.items():
        shutil.rmtree(d / "replay-run", ignore_errors=True)
        (d / "replay-run").mkdir()
        got = run(keytool_list(module, pin, d / "replay-run"), env)
        assert (got.stdout, got.returncode) == (rec.stdout, rec.returncode), (name, got.stderr)
        assert "diverged" not in {m["match"] for ms in matches(d / "replay") for m in ms}
