"""The host name in p11spy traces: the shim records uname's nodename once per process, and
decode, the viewer, export and `redact --strict` show, use or mask it.

The runs are real (pkcs11-tool and a small C client through the shim over SoftHSM2). The
machine's name is set for them in a UTS namespace of their own (`unshare --uts`), to one with
a quote and a backslash, so the test sees it is the nodename that arrives, escaped right.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from p11spy.decoder.events import Call, Process
from p11spy.tui.p11_index import P11Index
from p11spy.tui.row_text import header_text
from tests.conftest import SOFTHSM_MODULE, Token, make_token, read_trace, run
from tests.cprogs import build
from tests.test_diff import P11SPY

HOST = 'hsm-7.example."q\\'
SET_HOST = ("import os, socket, sys; socket.sethostname(sys.argv[1]); "
            "os.execvp(sys.argv[2], sys.argv[2:])")


def on_host(host: str, cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """cmd run on a machine named host: a UTS namespace of its own (root in a user namespace
    of its own, so any user may make one)."""
    return run(["unshare", "--map-root-user", "--uts", sys.executable, "-c", SET_HOST, host,
                *cmd], env)


def shim_env(tok: Token, trace: Path) -> dict[str, str]:
    return {**tok.env, "P11SPY_MODULE": tok.module, "P11SPY_OUTPUT": str(trace)}


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory, shim: Path) -> Path:
    """pkcs11-tool listing slots through the shim, on the machine HOST; it saw what it sees
    without the shim."""
    root = tmp_path_factory.mktemp("host")
    tok = make_token(root / "hsm")
    trace = root / "named.p11"
    spied = on_host(HOST, ["pkcs11-tool", "--module", str(shim), "-L"], shim_env(tok, trace))
    direct = run(["pkcs11-tool", "--module", SOFTHSM_MODULE, "-L"], tok.env)
    assert spied.returncode == direct.returncode == 0, spied.stderr
    assert spied.stdout == direct.stdout and "SoftHSM slot" in direct.stdout
    return trace


def p11spy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([P11SPY, *args], capture_output=True, text=True, timeout=120)


def test_decode_names_the_host(named: Path) -> None:
    process = next(e for e in read_trace(named) if isinstance(e, Process))
    assert process.host == HOST
    text = p11spy("decode", str(named))
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"== process {process.pid} on {HOST}: /usr/bin/pkcs11-tool ")
    first = json.loads(p11spy("decode", "--json", str(named)).stdout.splitlines()[0])
    assert first["type"] == "process" and first["host"] == HOST


def test_viewer_process_row_names_the_host(named: Path) -> None:
    idx = P11Index(named)
    try:
        idx.scan(lambda: False)
        rows = [idx.event(r) for r in range(len(idx.kinds))]
    finally:
        idx.close()
    process = next(e for e in rows if isinstance(e, Process))
    assert header_text(process)[0].startswith(f"== process {process.pid} on {HOST}: ")


def test_strict_redact_masks_the_host_plain_redact_keeps_it(named: Path, tmp_path: Path) -> None:
    plain, strict = tmp_path / "plain.p11", tmp_path / "strict.p11"
    assert p11spy("redact", str(named), "-o", str(plain)).returncode == 0
    assert p11spy("redact", "--strict", str(named), "-o", str(strict)).returncode == 0
    assert next(e for e in read_trace(plain) if isinstance(e, Process)).host == HOST
    masked = next(e for e in read_trace(strict) if isinstance(e, Process))
    assert masked.host == "*" * len(HOST)
    assert b"hsm-7" not in strict.read_bytes() and b"hsm-7" in plain.read_bytes()
    found = p11spy("redact", "--check", "--strict", str(named))
    assert found.returncode == 1 and "host name" in found.stdout + found.stderr
    again = p11spy("redact", "--check", "--strict", str(strict))
    assert "host name" not in again.stdout + again.stderr


def test_no_host_when_uname_fails(tmp_path: Path, shim: Path) -> None:
    """A sandbox that denies uname: the client sees the same answers through the shim, and
    the trace's process header names no host."""
    prog = build("nouname", tmp_path)
    tok = make_token(tmp_path / "hsm")
    trace = tmp_path / "nouname.p11"
    direct = run([str(prog), SOFTHSM_MODULE], tok.env)
    spied = run([str(prog), str(shim)], shim_env(tok, trace))
    assert direct.returncode == spied.returncode == 0, direct.stdout
    assert "uname fails" in direct.stdout and "C_Initialize 0" in direct.stdout
    assert spied.stdout == direct.stdout
    events = read_trace(trace)
    process = next(e for e in events if isinstance(e, Process))
    assert "host" not in process.info and process.host is None
    assert process.info["exe"] == str(prog)
    assert [c.function for c in events if isinstance(c, Call)][:2] == ["C_GetFunctionList",
                                                                        "C_Initialize"]
