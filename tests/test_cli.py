"""The command frame and the project's set-up, as a newcomer meets them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

P11SPY = str(Path(sys.executable).parent / "p11spy")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([P11SPY, *args], capture_output=True, text=True, timeout=60)


def test_help_lists_the_commands_that_exist():
    res = cli("--help")
    assert res.returncode == 0
    listed = re.findall(r"^    (\w+) ", res.stdout, re.M)
    assert listed == ["lib", "run", "bundle", "decode", "explain", "redact", "diagnose", "show",
                      "report", "diff", "export", "query",
                      "replay"], res.stdout


def test_version():
    res = cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("p11spy ")


def test_no_command_prints_help_and_fails():
    res = cli()
    assert res.returncode == 2 and "usage: p11spy" in res.stdout


def test_lib_prints_the_shim_matching_the_module(shim):
    full = cli("lib", "--module", "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so")
    assert full.returncode == 0 and full.stdout.strip() == str(shim)
    two = cli("lib", "--module", "/usr/lib/softhsm/libsofthsm2.so")
    assert two.returncode == 0 and two.stdout.strip().endswith("libp11spy-2.so")
    assert Path(two.stdout.strip()).is_file()


def test_lib_bad_module_is_one_line():
    res = cli("lib", "--module", "/nonexistent.so")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "cannot load /nonexistent.so" in res.stderr


def test_decode_bad_input_is_one_line(tmp_path):
    empty = tmp_path / "empty.p11"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 10)
    for path, expected in ((empty, "empty"), (garbage, "not a trace format"),
                           (tmp_path / "missing", "no such file"), (tmp_path, "directory")):
        res = cli("decode", str(path))
        assert res.returncode == 2, (path, res.stderr)
        assert res.stderr.count("\n") == 1 and expected in res.stderr
        assert "Traceback" not in res.stderr


def test_setup_is_idempotent():
    """After `make setup` (make test ran it), a second run has nothing to do."""
    res = subprocess.run(["make", "-q", "setup"], cwd=REPO, capture_output=True, timeout=60)
    assert res.returncode == 0, "make setup would redo work on a second run"


def test_decode_summary(token, tmp_path, spy_env, shim_for):
    from tests.test_shim import exercise

    trace = tmp_path / "s.p11"
    assert exercise(str(shim_for(token.module)), spy_env(token, trace)).returncode == 0
    res = cli("decode", "--summary", str(trace))
    assert res.returncode == 0, res.stderr
    assert "C_Login" in res.stdout and "CKR_PIN_INCORRECT x1" in res.stdout
    js = cli("decode", "--summary", "--json", str(trace))
    import json

    data = json.loads(js.stdout)
    assert data["type"] == "summary"
    login = data["functions"]["C_Login"]
    assert login["return_values"]["CKR_PIN_INCORRECT"] == 1
    assert login["count"] == sum(login["return_values"].values())


FIXTURES = REPO / "fixtures"


def test_text_never_prints_python_none():
    """Formats that record no pid or tid (pkcs11-spy, OpenSC's old logs) leave them out."""
    for trace in ("pkcs11-spy/real-0.23-login-wrong-pin.log",
                  "opensc-debug/written-0.15-linux-old-apdu-dumps.log"):
        res = cli("decode", str(FIXTURES / trace))
        assert res.returncode == 0
        assert "None" not in res.stdout and "pid" not in res.stdout.split("\n", 2)[1]
    spy = cli("decode", str(FIXTURES / "pkcs11-spy/real-0.23-login-wrong-pin.log")).stdout
    assert spy.startswith("== process: (program not named in the trace)")
    old = cli("decode", str(FIXTURES / "opensc-debug/written-0.15-linux-old-apdu-dumps.log"))
    assert "#0 C_Initialize  tid 140735307821824  " in old.stdout


def test_summary_without_durations_or_calls():
    """pkcs11-spy records no durations: '-', not 0.000 ms; a PC/SC-only trace has no table of
    PKCS#11 functions at all."""
    res = cli("decode", "--summary", str(FIXTURES / "pkcs11-spy/real-0.23-login-wrong-pin.log"))
    login = next(line for line in res.stdout.splitlines() if line.startswith("C_Login "))
    assert login.split()[1:] == ["1", "1", "-", "-", "-"]
    assert "0.000" not in res.stdout
    res = cli("decode", "--summary", str(FIXTURES / "pcsc-spy/real-1.9.9-card-wrong-pin.raw"))
    assert "function" not in res.stdout and "status words:" in res.stdout


def test_unknown_function_is_an_error_with_a_suggestion():
    trace = str(FIXTURES / "p11spy/real-card-wrong-pin.p11")
    res = cli("decode", "--function", "C_login", trace)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip() == ("p11spy decode: --function C_login: no PKCS#11 function has "
                                  "that name; did you mean C_Login or C_LoginUser or C_Sign?")
    assert cli("decode", "--function", "C_Login", trace).returncode == 0
