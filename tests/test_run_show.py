"""`p11spy run --show`: a client run under the spy while the viewer follows its trace live.

In a real terminal (tmux), as a user runs it: the viewer shows the client's calls as they come,
and when the user quits it the client's own output is printed, then where the trace is, and
the run exits with the client's status. Without a terminal it refuses in one line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import SOFTHSM_MODULE, Token
from tests.test_tui import _tmux, _wait_screen, tmux_session

P11SPY = str(Path(sys.executable).parent / "p11spy")


def test_show_follows_the_client_and_prints_its_output_after(token: Token,
                                                             tmp_path: Path) -> None:
    trace = tmp_path / "live.p11"
    cmd = (f"{P11SPY} run --show -o {trace} -- pkcs11-tool --module {SOFTHSM_MODULE} "
           f"--login --pin 0000 -O; echo EXITED $?; sleep 60")
    with tmux_session(cmd, {**token.env, "TZ": "UTC"}, "run-show") as session:
        text = _wait_screen(session, lambda s: "C_Login" in s and "q Quit" in s, timeout=60)
        assert "live.p11" in text and "following" in text
        _tmux("send-keys", "-t", session, "q")
        text = _wait_screen(session, lambda s: "EXITED" in s)
        # pkcs11-tool's own error line, kept while the viewer was open, then the trace
        assert "error: PKCS11 function C_Login failed: rv = CKR_PIN_INCORRECT" in text
        assert f"p11spy: 1 trace(s): {trace}" in text.replace("\n", "")
        assert "EXITED 1" in text
    assert trace.stat().st_mode & 0o777 == 0o600


def test_show_without_a_terminal_is_one_line(tmp_path: Path) -> None:
    res = subprocess.run([P11SPY, "run", "--show", "-o", str(tmp_path / "t.p11"), "--",
                          "true"], capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 2 and res.stdout == "" and not list(tmp_path.iterdir())
    assert res.stderr == ("p11spy run: --show needs a terminal (without it, the traces are "
                          "listed at the end)\n")
