"""`make demo`'s script: the main job on the card station, shown as a user sees it.

Without a terminal (CI) it prints the failed C_Login with its masked VERIFY and the card's
63C2, explains the codes, and waits for nothing; in a terminal it opens the viewer.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.test_tui import _tmux, _wait_screen, tmux_session

DEMO = [sys.executable, "-m", "demo"]  # as `make demo` runs it, from the repository


def _kept(out: str) -> Path:
    m = re.search(r"# The traces are kept in (\S+):", out)
    assert m, out[-500:]
    return Path(m.group(1))


def test_demo_without_a_terminal_prints_the_failed_login() -> None:
    res = subprocess.run(DEMO, cwd=REPO, capture_output=True, text=True,
                         timeout=180, stdin=subprocess.DEVNULL)
    try:
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr
        out = res.stdout
        failed = out[out.index("# 3."):out.index("# 4.")]
        assert "C_Login" in failed and "-> CKR_PIN_INCORRECT (0xa0)" in failed
        assert ">> 00 20 00 80 08 2A 2A 2A 2A 2A 2A 2A 2A  [VERIFY]  (PIN masked)" in failed
        assert "<< 63 C2  SW 63C2" in failed
        assert "Verification failed (wrong PIN or key): 2 tries left" in out
        assert "[error] Wrong PIN: 1 failed login(s); 2 tries left  (pin-incorrect)" in out
        assert "opens `p11spy show` instead" in out
        assert "975312" not in out.replace("--pin 975312", "")  # the PIN only in the command
    finally:
        shutil.rmtree(_kept(res.stdout), ignore_errors=True)


def test_demo_in_a_terminal_opens_the_viewer() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    cmd = f"cd {REPO} && {sys.executable} -m demo; echo EXITED $?; sleep 60"
    with tmux_session(cmd, env, "demo") as session:
        text = _wait_screen(session, lambda s: "q Quit" in s and "C_Login" in s, timeout=120)
        assert "e Next error" in text
        _tmux("send-keys", "-t", session, "q")
        text = _wait_screen(session, lambda s: "EXITED" in s)
        assert "EXITED 0" in text
        full = _tmux("capture-pane", "-p", "-S", "-200", "-t", session)
        shutil.rmtree(_kept(full.replace("\n", "")), ignore_errors=True)
