"""diagnose on a real p11-kit run: GnuTLS's p11tool with no --provider loads every module p11-kit
is configured with on this machine (SoftHSM2, OpenSC, p11-kit-trust), under `p11spy run`, with
no PC/SC service. OpenSC finds no pcscd, SoftHSM2 does the work: a listing that worked has
nothing above info; a wrong PIN is the first finding, not the missing service."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from p11spy.decoder.diagnose import diagnose
from p11spy.decoder.events import Call
from p11spy.decoder.formats.registry import open_events
from tests.conftest import LABEL, USER_PIN

P11SPY = str(Path(sys.executable).parent / "p11spy")


def p11tool(token, out: Path, pin: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in token.env.items() if not k.startswith(("P11SPY_", "OPENSC"))}
    env.update(PCSCLITE_CSOCK_NAME=str(tmp_path / "no-such-socket"), GNUTLS_PIN=pin)
    return subprocess.run([P11SPY, "run", "-o", str(out), "--", "p11tool", "--login",
                           "--list-all", f"pkcs11:token={LABEL}"], env=env,
                          capture_output=True, text=True, timeout=120)


def test_p11tool_through_p11_kit(token, tmp_path: Path) -> None:
    r = subprocess.run(["pkcs11-tool", "--module", token.module, "--login", "--pin", USER_PIN,
                        "--keypairgen", "--key-type", "rsa:2048", "--id", "01", "--label",
                        "k1"], env=token.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    good = tmp_path / "good.p11"
    r = p11tool(token, good, USER_PIN, tmp_path)
    assert r.returncode == 0 and "k1" in r.stdout, r.stdout + r.stderr
    events = list(open_events(good))
    modules = {Path(e.module).name for e in events if isinstance(e, Call) and e.module}
    assert {"libsofthsm2.so", "opensc-pkcs11.so"} <= modules, modules
    findings = diagnose(events)
    assert [f.title for f in findings if f.severity != "info"] == []
    assert any(f.rule == "no-pcsc-service" for f in findings)  # there, as information
    bad = tmp_path / "bad.p11"
    r = p11tool(token, bad, "000000", tmp_path)
    assert r.returncode != 0 and "Wrong PIN" in r.stdout + r.stderr, r.stdout + r.stderr
    findings = diagnose(open_events(bad))
    [first, *rest] = [f for f in findings if f.severity != "info"]
    assert first.rule == "pin-incorrect" and first.severity == "error", \
        [f.title for f in findings]
    assert rest == [], [f.title for f in rest]
