"""The shim, end to end: transparent for the client, complete and safe in what it records."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from p11spy.decoder.events import Call, ModuleInfo, Process, TraceWarning
from tests.conftest import REPO, SO_PIN, Token, make_token, read_trace, run

CLIENTS = REPO / "tests" / "clients"
OPENSC = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
PY = sys.executable


def exercise(module: str, env: dict[str, str], pin: str = "1234") -> subprocess.CompletedProcess:
    return run([PY, str(CLIENTS / "exercise.py"), module, pin, SO_PIN], env)


def test_every_function_same_results_direct_and_through_shim(token, tmp_path, spy_env,
                                                             shim_for):
    """Valid and invalid calls to every function (NULL pointers, bad handles, before
    C_Initialize, too-small buffers, length queries) give the same transcript either way."""
    a, b = token.copy(tmp_path / "a"), token.copy(tmp_path / "b")
    direct = exercise(a.module, a.env)
    trace = tmp_path / "t.p11"
    spied = exercise(str(shim_for(b.module)), spy_env(b, trace))
    assert direct.returncode == 0, direct.stderr
    assert spied.stdout == direct.stdout
    assert spied.returncode == direct.returncode
    assert "C_Login wrong CKR_PIN_INCORRECT" in direct.stdout  # the script really ran
    assert spied.stderr == direct.stderr

    events = read_trace(trace)
    assert not [e for e in events if isinstance(e, TraceWarning)]
    calls = [e for e in events if isinstance(e, Call)]
    # One record per call the client made: every transcript line names at least one call.
    assert len(calls) >= len(direct.stdout.splitlines()) - 5
    names = {c.function for c in calls}
    assert {"C_Initialize", "C_Login", "C_Sign", "C_GetAttributeValue", "C_FindObjects",
            "C_SetPIN", "C_InitPIN", "C_Finalize"} <= names
    assert any(isinstance(e, ModuleInfo) and "SoftHSM" in e.info.get("manufacturerID", "")
               for e in events)


def test_exercise_through_opensc_interfaces(tmp_path, spy_env, shim):
    """OpenSC offers PKCS#11 3.0 interfaces: each of its functions behaves the same through
    the shim, and the shim offers the same interfaces with the same versions and flags."""
    tok = Token(tmp_path / "none.conf", "none", module=OPENSC)
    # No PC/SC service for either run: a pcscd some other test started (with a card or not)
    # would otherwise change what OpenSC answers between the two runs.
    quiet = {"OPENSC_CONF": "/dev/null", "PCSCLITE_CSOCK_NAME": str(tmp_path / "no-pcscd")}
    direct = run([PY, str(CLIENTS / "exercise.py"), OPENSC], {**os.environ, **quiet})
    trace = tmp_path / "o.p11"
    spied = run([PY, str(CLIENTS / "exercise.py"), str(shim)], {**spy_env(tok, trace), **quiet})
    assert direct.returncode == 0, direct.stderr
    assert spied.stdout == direct.stdout
    assert "interface PKCS 11 3.0" in direct.stdout
    assert "null-args C_MessageEncryptInit" in direct.stdout
    calls = [e for e in read_trace(trace) if isinstance(e, Call)]
    assert "C_SessionCancel" in {c.function for c in calls}
    iface = next(c for c in calls if c.function == "C_GetInterfaceList" and c.rv == 0
                 and isinstance(c.args.get("pInterfacesList"), list))
    assert {"name": "PKCS 11", "version": "3.0", "flags": "0"} in iface.args["pInterfacesList"]


def test_pins_and_secret_keys_masked_by_default(token, tmp_path, spy_env, shim):
    pin = "48151623"
    tok = make_token(tmp_path / "hsm2", "masked")
    subprocess.run(["softhsm2-util", "--delete-token", "--token", "masked"], env=tok.env,
                   capture_output=True, check=True)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "masked", "--pin", pin,
                    "--so-pin", "97531864"], env=tok.env, capture_output=True, check=True)
    trace = tmp_path / "m.p11"
    res = run([PY, str(CLIENTS / "exercise.py"), str(shim), pin, "97531864"],
              spy_env(tok, trace))
    assert res.returncode == 0, res.stderr
    raw = trace.read_bytes()
    for secret in (pin, "97531864", "87654321"):
        assert secret.encode() not in raw
        assert secret.encode().hex().encode() not in raw
    assert stat.S_IMODE(trace.stat().st_mode) == 0o600
    events = read_trace(trace)
    header = next(e for e in events if isinstance(e, Process))
    assert header.info["secrets"] is False
    calls = [e for e in events if isinstance(e, Call)]
    login = next(c for c in calls if c.function == "C_Login" and c.rv_name == "CKR_OK")
    assert login.args["pPin"] == {"masked": True, "length": 8, "class": "ASCII digits"}
    setpin = next(c for c in calls if c.function == "C_SetPIN" and c.rv == 0)
    assert setpin.args["pOldPin"]["masked"] and setpin.args["pNewPin"]["masked"]
    # The AES key's value read back, and the private key's exponent, are never in clear.
    key_reads = [c for c in calls if c.function == "C_GetAttributeValue" and c.rv == 0]
    values = [a for c in key_reads for a in c.args["pTemplate"].get("out", [])
              if a["type"] == "CKA_VALUE"]
    assert values, "the exercise reads CKA_VALUE of a secret key and of a data object"
    assert {"masked": True, "length": 32, "class": "binary"} in [
        {k: v for k, v in a["value"].items() if k != "extras"} for a in values
        if isinstance(a.get("value"), dict)]
    # ... while a data object's value, which is no key, stays readable.
    assert any(a.get("value") == "68656c6c6f" for a in values)


def test_secrets_opt_in_is_recorded(token, tmp_path, spy_env, shim):
    trace = tmp_path / "s.p11"
    res = exercise(str(shim), spy_env(token, trace, P11SPY_LOG_SECRETS="1"))
    assert res.returncode == 0, res.stderr
    events = read_trace(trace)
    assert next(e for e in events if isinstance(e, Process)).info["secrets"] is True
    login = next(e for e in events if isinstance(e, Call) and e.function == "C_Login"
                 and e.rv == 0)
    assert login.args["pPin"] == b"1234".hex()


def test_two_threads_every_record_whole(token, tmp_path, spy_env, shim):
    """2 threads x 20,000 calls: every record present, whole and decodable."""
    loop = tmp_path / "loop"
    subprocess.run(["gcc", "-O2", "-o", str(loop), str(REPO / "tests/bench/loop.c"), "-ldl",
                    "-lpthread"], check=True)
    trace = tmp_path / "threads.p11"
    res = run([str(loop), str(shim), "1234", "getsessioninfo", "20000", "2"],
              spy_env(token, trace))
    assert res.returncode == 0, res.stderr
    events = read_trace(trace)
    assert not [e for e in events if isinstance(e, TraceWarning)]
    info = [e for e in events if isinstance(e, Call) and e.function == "C_GetSessionInfo"]
    assert len(info) == 40000
    assert len({e.tid for e in info}) == 2
    assert all(e.rv == 0 and e.args["pInfo"]["state"] == "CKS_RW_USER_FUNCTIONS" for e in info)
    numbers = [e.call_number for e in events if isinstance(e, Call)]
    assert sorted(numbers) == list(range(1, len(numbers) + 1))


def test_sigkill_loses_no_completed_call(token, tmp_path, spy_env, shim):
    trace = tmp_path / "k.p11"
    res = run([PY, str(CLIENTS / "lifecycle.py"), str(shim), "kill", "137"],
              spy_env(token, trace))
    assert res.returncode == -9
    calls = [e for e in read_trace(trace) if isinstance(e, Call)]
    assert [c.function for c in calls].count("C_GetInfo") == 137
    assert not [e for e in read_trace(trace) if isinstance(e, TraceWarning)]


@pytest.mark.parametrize("per_pid", [False, True])
def test_forked_child_recorded_with_its_pid(token, tmp_path, spy_env, shim, per_pid):
    out = tmp_path / ("f-%p.p11" if per_pid else "f.p11")
    res = run([PY, str(CLIENTS / "lifecycle.py"), str(shim), "fork"], spy_env(token, out))
    assert res.returncode == 0, res.stderr
    lines = dict(line.split(" ", 1) for line in res.stdout.splitlines())
    child = int(lines["child"].split()[0])
    parent = int(lines["parent"])
    child_rvs = [int(x) for x in lines["child"].split()[1:]]  # C_Initialize, C_GetInfo
    files = sorted(tmp_path.glob("f*.p11"))
    assert len(files) == (2 if per_pid else 1)
    events = [e for f in files for e in read_trace(f)]
    child_calls = [(e.function, e.rv) for e in events if isinstance(e, Call) and e.pid == child]
    assert child_calls == list(zip(["C_Initialize", "C_GetInfo"], child_rvs, strict=True))
    assert any(isinstance(e, Call) and e.pid == parent and e.function == "C_GetInfo"
               for e in events)
    headers = [e for e in events if isinstance(e, Process) and e.pid == child]
    assert headers and headers[0].info["forked"] is True and headers[0].info["ppid"] == parent


def test_exit_without_finalize_keeps_everything(token, tmp_path, spy_env, shim):
    trace = tmp_path / "e.p11"
    res = run([PY, str(CLIENTS / "lifecycle.py"), str(shim), "exit"], spy_env(token, trace))
    assert res.returncode == 0, res.stderr
    calls = [e.function for e in read_trace(trace) if isinstance(e, Call)]
    assert calls == ["C_GetFunctionList", "C_Initialize", "C_GetInfo"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"P11SPY_MODULE": None}, "P11SPY_MODULE"),
        ({"P11SPY_MODULE": "/nonexistent/module.so"}, "/nonexistent/module.so"),
        ({"P11SPY_MODULE": "/lib/x86_64-linux-gnu/libz.so.1"}, "not a PKCS#11 module"),
        ({"P11SPY_OUTPUT": "/proc/p11spy/forbidden.p11"}, "P11SPY_OUTPUT"),
    ],
)
def test_misconfiguration_one_clear_line(token, tmp_path, spy_env, shim, env, expected):
    full = spy_env(token, tmp_path / "x.p11")
    for k, v in env.items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    res = run([PY, str(CLIENTS / "lifecycle.py"), str(shim), "getfl"], full)
    assert res.returncode == 0
    assert res.stdout.strip() == "C_GetFunctionList rv=5"  # CKR_GENERAL_ERROR
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("p11spy: ") and expected in lines[0]


def test_pkcs11spy_variables_honoured_and_default_output(token, tmp_path, shim):
    """Drop-in for pkcs11-spy: PKCS11SPY names the module; with no output named the trace goes
    to /tmp/p11spy-<uid>/<program>-<pid>.p11, never to the client's stdout or stderr."""
    env = {k: v for k, v in token.env.items() if not k.startswith(("P11SPY", "PKCS11SPY"))}
    env["PKCS11SPY"] = token.module
    res = run([PY, str(CLIENTS / "lifecycle.py"), str(shim), "exit"], env)
    assert res.returncode == 0 and res.stderr == "" and res.stdout == ""
    folder = Path(f"/tmp/p11spy-{os.getuid()}")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    mine = [p for p in folder.glob("python*.p11")
            if any(isinstance(e, Process) and e.info["module"] == token.module
                   and e.info["exe"] == os.path.realpath(PY) for e in read_trace(p))]
    assert mine
    for p in mine:
        p.unlink()


def test_decode_json_fields(token, tmp_path, spy_env, shim):
    trace = tmp_path / "j.p11"
    assert exercise(str(shim), spy_env(token, trace)).returncode == 0
    res = run([str(Path(PY).parent / "p11spy"), "decode", "--json", "--function", "C_Login",
               str(trace)], os.environ.copy())
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    wrong = next(r for r in rows if r["rv_name"] == "CKR_PIN_INCORRECT")
    assert wrong["type"] == "call" and wrong["function"] == "C_Login" and wrong["rv"] == 160
    assert set(wrong) >= {"seq", "pid", "tid", "time", "duration_us", "args"}
    assert wrong["args"]["userType"] == "CKU_USER"
    assert wrong["args"]["pPin"]["masked"] is True


def test_large_buffers_become_length_and_digest(token, tmp_path, spy_env, shim_for):
    """Above P11SPY_MAX_BUFFER a buffer is recorded as its length, a digest and its first
    bytes; mechanisms keep their parameters."""
    trace = tmp_path / "big.p11"
    res = exercise(str(shim_for(token.module)), spy_env(token, trace, P11SPY_MAX_BUFFER="16"))
    assert res.returncode == 0, res.stderr
    calls = [e for e in read_trace(trace) if isinstance(e, Call)]
    enc = next(c for c in calls if c.function == "C_Encrypt" and c.rv == 0
               and c.args.get("pEncryptedData") is not None)
    plain = b"sixteen byte msg" * 3
    assert enc.args["pData"]["length"] == 48
    assert enc.args["pData"]["prefix"] == plain[:32].hex()
    init = next(c for c in calls if c.function == "C_EncryptInit" and c.rv == 0)
    assert init.args["pMechanism"] == {"mechanism": "CKM_AES_CBC_PAD",
                                       "parameter": bytes(range(16)).hex()}
