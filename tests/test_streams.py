"""Traces read from pipes, FIFOs and standard input, and files the user may not read: the same
events as from the file, or one line and a non-zero exit, never a hang or a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import REPO

P11SPY = str(Path(sys.executable).parent / "p11spy")
FIXTURES = REPO / "fixtures"
TRACES = [FIXTURES / "p11spy" / "real-card-wrong-pin.p11",
          FIXTURES / "pkcs11-spy" / "real-0.23-login-wrong-pin.log",
          FIXTURES / "opensc-debug" / "real-0.23-card-wrong-pin-debug9.log",
          FIXTURES / "pcsc-spy" / "real-1.9.9-card-wrong-pin.raw"]


def p11spy(*args: str, stdin: bytes | None = None, timeout: float = 60
           ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([P11SPY, *args], input=stdin, capture_output=True, timeout=timeout)


@pytest.mark.parametrize("trace", TRACES, ids=lambda p: p.parent.name)
def test_a_pipe_decodes_as_the_file(trace: Path) -> None:
    direct = p11spy("decode", "--json", str(trace))
    assert direct.returncode == 0 and direct.stdout
    for name in ("-", "/dev/stdin"):
        piped = p11spy("decode", "--json", name, stdin=trace.read_bytes())
        assert piped.returncode == 0, piped.stderr
        assert piped.stdout == direct.stdout, name
        assert b"unreadable" not in piped.stdout


def test_a_fifo_with_a_writer_decodes_and_does_not_hang(tmp_path: Path) -> None:
    trace = TRACES[0]
    fifo = tmp_path / "trace.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with fifo.open("wb") as f:
            f.write(trace.read_bytes())

    writer = threading.Thread(target=write)
    writer.start()
    res = p11spy("decode", "--json", str(fifo), timeout=30)
    writer.join(10)
    assert res.returncode == 0, res.stderr
    assert res.stdout == p11spy("decode", "--json", str(trace)).stdout


def test_redact_reads_a_pipe_and_refuses_what_needs_two_passes(tmp_path: Path) -> None:
    trace = FIXTURES / "pkcs11-spy" / "real-0.23-login-wrong-pin.log"
    out = tmp_path / "red.log"
    piped = p11spy("redact", "-", "-o", str(out), stdin=trace.read_bytes())
    assert piped.returncode == 0, piped.stderr
    direct = tmp_path / "direct.log"
    assert p11spy("redact", str(trace), "-o", str(direct)).returncode == 0
    assert out.read_bytes() == direct.read_bytes()
    twice = p11spy("redact", "--check", "--pin", "1234", "-", stdin=trace.read_bytes())
    assert twice.returncode == 2
    assert twice.stderr.count(b"\n") == 1 and b"save the stream to a file" in twice.stderr


def test_unreadable_file_is_one_line(tmp_path: Path) -> None:
    """As a user who may not read the trace (root without its override capabilities)."""
    trace = tmp_path / "theirs.p11"
    shutil.copy(TRACES[0], trace)
    os.chown(trace, 65534, 65534)
    trace.chmod(0o600)
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    for cmd in (["decode"], ["diagnose"], ["redact", "--check"]):
        res = subprocess.run([*drop, P11SPY, *cmd, str(trace)], capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 2, (cmd, res.stderr)
        assert res.stderr.strip() == f"p11spy {cmd[0]}: {trace}: Permission denied"


def test_in_place_refuses_links_and_keeps_the_owner(tmp_path: Path) -> None:
    """A symbolic or second hard link would keep the unredacted trace under the other name."""
    trace = FIXTURES / "pkcs11-spy" / "real-0.23-login-wrong-pin.log"
    orig = tmp_path / "orig.log"
    shutil.copy(trace, orig)
    link = tmp_path / "link.log"
    link.symlink_to(orig)
    res = p11spy("redact", "--in-place", str(link))
    assert res.returncode == 2 and b"symbolic link" in res.stderr
    assert res.stderr.count(b"\n") == 1
    assert orig.read_bytes() == trace.read_bytes() and link.is_symlink()
    hard = tmp_path / "hard.log"
    os.link(orig, hard)
    res = p11spy("redact", "--in-place", str(hard))
    assert res.returncode == 2 and b"2 hard links" in res.stderr
    assert orig.read_bytes() == trace.read_bytes()
    hard.unlink()
    os.chown(orig, 65534, 65534)  # a user's trace, redacted in place by root
    res = p11spy("redact", "--in-place", str(orig))
    assert res.returncode == 0, res.stderr
    assert orig.read_bytes() != trace.read_bytes()
    assert p11spy("redact", "--check", str(orig)).returncode == 0
    st = orig.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 65534, 0o600)


def test_sigterm_during_redact_leaves_no_partial_output(tmp_path: Path) -> None:
    """Stopped by SIGTERM (a service manager, `timeout`), redact removes its temporary file and
    leaves what was at the output name before."""
    one = (FIXTURES / "pkcs11-spy" / "real-0.23-login-wrong-pin.log").read_bytes()
    big = tmp_path / "big.log"
    with big.open("wb") as f:
        for _ in range(max(1, (200 << 20) // len(one))):
            f.write(one)
    out = tmp_path / "out.log"
    out.write_text("kept\n")
    proc = subprocess.Popen([P11SPY, "redact", str(big), "-o", str(out)],
                            stderr=subprocess.DEVNULL)
    for _ in range(200):  # until its temporary file exists
        if any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
            break
        threading.Event().wait(0.05)
    proc.terminate()
    assert proc.wait(30) == 128 + 15
    assert out.read_text() == "kept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.log", "out.log"]
