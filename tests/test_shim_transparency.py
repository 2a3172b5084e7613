"""The client sees what the real module does, also where the shim must answer for it: the
3.x shim over a PKCS#11 2.x module, and a module named the way dlopen finds it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from p11spy.decoder.events import Call, ModuleInfo

from .conftest import SOFTHSM_MODULE, read_trace, run

OPENSC_NAME = "opensc-pkcs11.so"


def _same(a: subprocess.CompletedProcess, b: subprocess.CompletedProcess) -> None:
    assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)


@pytest.mark.parametrize("args", [["-L"], ["-I"], ["-M"], ["-O", "--login", "--pin", "1234"]])
def test_3x_shim_over_2x_module_same_as_the_module(token, tmp_path, spy_env, shim, args):
    """pkcs11-tool through the 3.x shim over SoftHSM 2 (no C_GetInterface): same output,
    errors and exit status as on SoftHSM itself, no "C_GetInterface failed" line."""
    direct = run(["pkcs11-tool", "--module", SOFTHSM_MODULE, *args], token.env)
    trace = tmp_path / "t.p11"
    spied = run(["pkcs11-tool", "--module", str(shim), *args], spy_env(token, trace))
    assert direct.returncode == 0, direct.stderr
    _same(spied, direct)
    events = read_trace(trace)
    iface = next(e for e in events if isinstance(e, Call) and e.function == "C_GetInterface")
    assert iface.rv == 0
    assert iface.args["ppInterface"] == {"name": "PKCS 11", "version": "2.40", "flags": "0"}
    assert iface.module is not None and iface.module.startswith("p11spy shim: answered")
    assert {e.module for e in events if isinstance(e, Call) and e.function != "C_GetInterface"
            } == {SOFTHSM_MODULE}


def test_nss_adds_the_3x_shim_over_a_2x_module(token, tmp_path, spy_env, shim):
    """NSS asks for interfaces and does not fall back: `modutil -add -libfile $(p11spy lib)`
    over SoftHSM 2 works, and NSS sees the token through it."""
    db = tmp_path / "nssdb"
    db.mkdir()
    subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True,
                   capture_output=True)
    env = spy_env(token, tmp_path / "nss-%p.p11")
    add = run(["modutil", "-force", "-dbdir", f"sql:{db}", "-add", "spy", "-libfile",
               str(shim)], env)
    assert add.returncode == 0, add.stdout + add.stderr
    listed = run(["modutil", "-dbdir", f"sql:{db}", "-list", "spy"], env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert f"Token Name: {token.label}" in listed.stdout
    calls = [e for p in tmp_path.glob("nss-*.p11") for e in read_trace(p)
             if isinstance(e, Call)]
    assert any(c.function == "C_GetInterface" and c.rv == 0 for c in calls)
    assert any(c.function == "C_GetTokenInfo" and c.rv == 0 for c in calls)


def test_bare_file_name_found_like_dlopen_finds_it(tmp_path, shim):
    """P11SPY_MODULE=opensc-pkcs11.so works as `--module opensc-pkcs11.so` does; the trace
    names the file that was loaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P11SPY", "PKCS11SPY"))}
    env["OPENSC_CONF"] = "/dev/null"
    direct = run(["pkcs11-tool", "--module", OPENSC_NAME, "-I"], env)
    trace = tmp_path / "o.p11"
    spied = run(["pkcs11-tool", "--module", str(shim), "-I"],
                {**env, "P11SPY_MODULE": OPENSC_NAME, "P11SPY_OUTPUT": str(trace)})
    assert "OpenSC" in direct.stdout
    _same(spied, direct)
    loaded = [e.info["loaded"] for e in read_trace(trace)
              if isinstance(e, ModuleInfo) and e.info.get("index") == 0]
    assert len(loaded) == 1 and Path(loaded[0]).is_absolute()
    assert Path(loaded[0]).resolve() == Path(f"/usr/lib/x86_64-linux-gnu/{OPENSC_NAME}").resolve()


def test_bare_file_name_on_the_library_path(token, tmp_path, spy_env, shim):
    env = spy_env(token, tmp_path / "s.p11", P11SPY_MODULE="libsofthsm2.so",
                  LD_LIBRARY_PATH=str(Path(SOFTHSM_MODULE).parent))
    spied = run(["pkcs11-tool", "--module", str(shim), "-L"], env)
    direct = run(["pkcs11-tool", "--module", SOFTHSM_MODULE, "-L"], token.env)
    _same(spied, direct)
