"""`p11spy run` tells the truth and leaves the client as it was (issue 13, `p11spy run` part).

Real clients over SoftHSM2 and OpenSC (pkcs11-tool, Python's ctypes, Debian's setgid
ssh-agent, p11-kit-proxy, the p11spy shim) and two small C programs in tests/run_clients/: a
client that clears its environment before it loads a module, as daemons do, and one that loads
two modules in turn, each where the other was unloaded.

Every run here gets PCSCLITE_CSOCK_NAME pointing at a socket that does not exist, so OpenSC
never reaches a pcscd the card bench may be running.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import stat
import subprocess
import sys
import termios
import time
from collections import Counter
from pathlib import Path

import pytest

from p11spy.decoder.events import Call
from p11spy.tui import detail
from p11spy.tui.p11_index import P11Index

from .conftest import SOFTHSM_MODULE, Token, read_trace
from .test_clients import need
from .test_run import P11SPY, TIMEOUT, p11spy_run, plain_env, split_message

HERE = Path(__file__).resolve().parent
OPENSC = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
OPENSC_ONEPIN = "/usr/lib/x86_64-linux-gnu/onepin-opensc-pkcs11.so"
P11KIT_PROXY = "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so"
SHIM_2 = HERE.parent / "spy" / "libp11spy-2.so"  # the shim for 2.x modules such as SoftHSM2


def env_for(token: Token, tmp: Path) -> dict[str, str]:
    return {**plain_env(), "SOFTHSM2_CONF": str(token.conf),
            "PCSCLITE_CSOCK_NAME": str(tmp / "no-pcscd.comm")}


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/run_clients/*.c, compiled."""
    out = tmp_path_factory.mktemp("run-clients")
    for src in (HERE / "run_clients").glob("*.c"):
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(out / src.stem), str(src), "-ldl"],
                       check=True, timeout=TIMEOUT)
    return out


def calls(paths: list[Path]) -> list[Call]:
    return [e for p in paths for e in read_trace(p) if isinstance(e, Call)]


def module_of_calls(paths: list[Path]) -> Counter:
    """(function, module path) of every call, counted, from `decode --json`."""
    res = subprocess.run([P11SPY, "decode", "--json", *map(str, paths)], capture_output=True,
                         text=True, timeout=TIMEOUT, check=True)
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    return Counter((r["function"], r.get("module")) for r in rows
                   if r.get("function", "").startswith("C_"))


# --- 1. true messages -----------------------------------------------------------------------

def test_setgid_client_is_named(tmp_path: Path) -> None:
    """Debian's ssh-agent is setgid: the loader preloads nothing into it. The run says so,
    instead of claiming the command loaded no module."""
    agent = need("ssh-agent", "openssh-client")
    if not os.stat(agent).st_mode & (stat.S_ISGID | stat.S_ISUID):
        pytest.fail(f"{agent} is not setgid here: this test needs Debian's ssh-agent")
    res = p11spy_run(["ssh-agent", "-a", str(tmp_path / "agent.sock"), "sh", "-c",
                      "echo $SSH_AGENT_PID"], plain_env(), "-o", str(tmp_path / "t-%p.p11"))
    with_pid = res.stdout.strip()
    if with_pid.isdigit():
        os.kill(int(with_pid), signal.SIGTERM)  # the agent outlives its command for a while
    assert res.returncode == 0, res.stderr
    assert res.stderr == ("p11spy: no trace: ssh-agent is setgid: the system preloads nothing "
                          "into a setuid or setgid program (trace it with the shim instead: "
                          "see `p11spy lib`)\n")


def test_client_that_clears_its_environment_is_traced_into_the_run(
        token: Token, programs: Path, tmp_path: Path) -> None:
    """A client that calls clearenv() before it loads a module is traced where -o says, and
    the run lists that trace; nothing goes to the default folder."""
    out = tmp_path / "out"
    out.mkdir()
    default = Path(f"/tmp/p11spy-{os.getuid()}")
    before = set(default.glob("clearenv-*.p11"))
    res = p11spy_run([str(programs / "clearenv"), SOFTHSM_MODULE, str(token.conf)],
                     env_for(token, tmp_path), "-o", str(out / "%n-%p.p11"))
    assert res.returncode == 0 and res.stdout.startswith("SoftHSM"), res.stderr
    _, _, paths = split_message(res.stderr)
    assert paths == sorted(out.iterdir()) and len(paths) == 1
    assert [c.function for c in calls(paths)] == ["C_GetFunctionList", "C_Initialize",
                                                 "C_GetInfo", "C_Finalize"]
    assert set(default.glob("clearenv-*.p11")) == before


CLEARS_THEN_RUNS = """
import os, subprocess, sys
os.environ.clear()
os.environ["SOFTHSM2_CONF"] = sys.argv[1]
subprocess.run(["pkcs11-tool", "--module", sys.argv[2], "-L"], check=True,
               stdout=subprocess.DEVNULL)
"""


def test_client_that_clears_the_environment_of_its_children_is_named(
        token: Token, tmp_path: Path) -> None:
    """A program that clears its environment starts the next one without the spy: the run
    names the program that did it."""
    need("pkcs11-tool", "opensc")
    res = p11spy_run([sys.executable, "-c", CLEARS_THEN_RUNS, str(token.conf), SOFTHSM_MODULE],
                     env_for(token, tmp_path), "-o", str(tmp_path / "t-%p.p11"))
    assert res.returncode == 0, res.stderr
    exe = os.path.basename(os.path.realpath(sys.executable))
    assert re.fullmatch(rf"p11spy: no trace: {re.escape(exe)} \(pid \d+\) started pkcs11-tool "
                        r"with a cleared environment, so without the spy\n", res.stderr), \
        res.stderr


def test_env_i_is_named(token: Token, tmp_path: Path) -> None:
    """`env -i` starts its command with an empty environment, so without the spy: the run names
    env and the program it started."""
    need("pkcs11-tool", "opensc")
    res = p11spy_run(["env", "-i", f"SOFTHSM2_CONF={token.conf}", "pkcs11-tool", "--module",
                      SOFTHSM_MODULE, "-L"], env_for(token, tmp_path), "-o",
                     str(tmp_path / "t-%p.p11"))
    assert res.returncode == 0 and "p11spy-test" in res.stdout, res.stderr
    assert re.fullmatch(r"p11spy: no trace: env \(pid \d+\) started pkcs11-tool with a cleared "
                        r"environment, so without the spy\n", res.stderr), res.stderr


def test_static_program_is_named(tmp_path: Path) -> None:
    """A statically linked program (Debian's ldconfig) gets nothing preloaded: the run says
    the spy was not loaded into it."""
    ldconfig = "/sbin/ldconfig"
    if "static" not in subprocess.run(["file", "-L", ldconfig], capture_output=True,
                                      text=True, timeout=TIMEOUT).stdout:
        pytest.fail(f"{ldconfig} is not statically linked here: this test needs Debian's")
    res = p11spy_run([ldconfig, "--version"], plain_env(), "-o", str(tmp_path / "t-%p.p11"))
    assert res.returncode == 0 and "ldconfig" in res.stdout
    assert res.stderr == (f"p11spy: no trace: the spy was not loaded into {ldconfig}: the system "
                          "did not preload it (a statically linked program?)\n")


def test_unopenable_trace_is_said_once_by_run_naming_o(token: Token, tmp_path: Path) -> None:
    """A trace file that cannot be opened: the client's stderr stays its own, and run says
    why, naming -o (the thing to change under run), not P11SPY_OUTPUT."""
    need("pkcs11-tool", "opensc")
    cmd = ["pkcs11-tool", "--module", SOFTHSM_MODULE, "-L"]
    pattern = str(tmp_path / "%n" / "t.p11")  # the folder is made per program: it is missing
    res = p11spy_run(cmd, env_for(token, tmp_path), "-o", pattern)
    assert res.returncode == 0 and "p11spy-test" in res.stdout
    lines = res.stderr.splitlines()
    assert len(lines) == 2, res.stderr
    # the reason is the shim's own words (they name the missing folder); run adds who said it
    assert re.fullmatch(rf"p11spy: pkcs11-tool \(pid \d+\): .*{re.escape(str(tmp_path))}/"
                        r"pkcs11-tool\b.* \(choose another -o\)", lines[0]), lines[0]
    assert lines[1] == "p11spy: no trace: the trace file could not be opened (above)"
    assert "P11SPY_OUTPUT" not in res.stderr


def test_client_that_changes_user_still_says_why_it_has_no_trace(
        token: Token, tmp_path: Path) -> None:
    """A client that becomes another user cannot write run's status file (nor, here, the trace
    folder): its complaint then goes to its stderr, as without run, once, naming -o."""
    need("pkcs11-tool", "opensc")
    if os.geteuid() != 0:
        pytest.skip("changing user (setpriv) needs root")
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "pkcs11-tool",
           "--module", SOFTHSM_MODULE, "-I"]
    env = env_for(token, tmp_path)
    direct = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    res = p11spy_run(cmd, env, "-o", str(out / "t-%p.p11"))
    assert (res.returncode, res.stdout) == (direct.returncode, direct.stdout)
    spy_lines = [ln for ln in res.stderr.splitlines() if ln.startswith("p11spy: ")]
    assert len(spy_lines) == 2, res.stderr
    assert re.fullmatch(rf"p11spy: .*{re.escape(str(out))}\b.* \(choose another -o\)",
                        spy_lines[0]), spy_lines
    assert spy_lines[1].startswith("p11spy: no trace: ")
    assert list(out.iterdir()) == []


# --- 2. signals and exit status -------------------------------------------------------------

SLEEPER = """
import os, signal, sys, time
got = []
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, lambda n, f: got.append(n))
open(sys.argv[1], "w").write(str(os.getpid()))
deadline = time.time() + 20
while not got and time.time() < deadline:
    time.sleep(0.05)
time.sleep(0.3)  # a second copy of the signal would arrive now
print(" ".join(signal.Signals(n).name for n in got))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_to_run_reaches_the_client_once(sig: signal.Signals, tmp_path: Path) -> None:
    """kill -TERM/-INT/-HUP of `p11spy run` is passed on to the client, once; run waits for
    the client, then ends as usual."""
    ready = tmp_path / "pid"
    run = subprocess.Popen([P11SPY, "run", "-o", str(tmp_path / "t-%p.p11"), "--",
                            sys.executable, "-c", SLEEPER, str(ready)], env=plain_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           stdin=subprocess.DEVNULL)
    deadline = time.time() + TIMEOUT
    while not (ready.exists() and ready.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    client = int(ready.read_text())
    run.send_signal(sig)
    out, err = run.communicate(timeout=TIMEOUT)
    assert out == f"{sig.name}\n", (out, err)
    assert run.returncode == 0, err
    with pytest.raises(ProcessLookupError):
        os.kill(client, 0)


def running(pid: int) -> bool:
    """Whether pid is a live process (not gone, nor a zombie waiting for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_to_run_show_reaches_the_client(tmp_path: Path) -> None:
    """Under --show the client has a session of its own (the viewer's keys are not for it):
    SIGTERM sent to run is passed on to it, and it is gone before the viewer is closed."""
    from .test_tui import _tmux, _wait_screen, tmux_session

    ready = tmp_path / "pid"
    trace = tmp_path / "live.p11"
    cmd = (f"{P11SPY} run --show -o {trace} -- {sys.executable} -c '{SLEEPER}' {ready}; "
           "echo EXITED $?; sleep 60")
    with tmux_session(cmd, plain_env(), "run-show-term") as session:
        _wait_screen(session, lambda s: "q Quit" in s, timeout=60)
        deadline = time.time() + TIMEOUT
        while not (ready.exists() and ready.read_text()) and time.time() < deadline:
            time.sleep(0.05)
        client = int(ready.read_text())
        run = int(Path(f"/proc/{client}/stat").read_text().rsplit(")", 1)[1].split()[1])  # ppid
        os.kill(run, signal.SIGTERM)
        deadline = time.time() + 10
        while running(client) and time.time() < deadline:
            time.sleep(0.05)
        assert not running(client), "the client still runs"
        _tmux("send-keys", "-t", session, "q")
        text = _wait_screen(session, lambda s: "EXITED" in s)
        assert "SIGTERM" in text and "EXITED 0" in text, text


def test_ctrl_c_at_the_terminal_reaches_the_client_once(tmp_path: Path) -> None:
    """Ctrl-C at the terminal signals the client and run alike (one process group): run does
    not pass its copy on, so the client gets one SIGINT, not two."""
    ready = tmp_path / "pid"
    master, slave = os.openpty()

    def own_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    run = subprocess.Popen([P11SPY, "run", "-o", str(tmp_path / "t-%p.p11"), "--",
                            sys.executable, "-c", SLEEPER, str(ready)], env=plain_env(),
                           stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, preexec_fn=own_terminal)
    os.close(slave)
    try:
        deadline = time.time() + TIMEOUT
        while not (ready.exists() and ready.read_text()) and time.time() < deadline:
            time.sleep(0.05)
        os.write(master, b"\x03")
        out, err = run.communicate(timeout=TIMEOUT)
    finally:
        os.close(master)
    assert out == "SIGINT\n", (out, err)
    assert run.returncode == 0, err


def test_command_that_cannot_be_executed_is_126(tmp_path: Path) -> None:
    """As a shell: 126 for a file that exists but cannot be executed, 127 when not found."""
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\necho ran\n")
    for cmd, status, why in ((str(script), 126, "Permission denied"),
                             (str(tmp_path), 126, "Permission denied"),
                             (str(tmp_path / "missing"), 127, "No such file or directory")):
        res = p11spy_run([cmd], plain_env(), "-o", str(tmp_path / "t-%p.p11"))
        assert (res.returncode, res.stdout) == (status, ""), res.stderr
        assert res.stderr == f"p11spy run: cannot run {cmd}: {why}\n"


# --- 3. its own files only ------------------------------------------------------------------

def test_run_lists_only_the_traces_it_wrote(token: Token, tmp_path: Path) -> None:
    """Files in the -o folder that match the pattern but were not written by this run (an
    earlier run's, someone else's, made a moment before) are not listed."""
    need("pkcs11-tool", "opensc")
    env = env_for(token, tmp_path)
    pattern = str(tmp_path / "t-%p.p11")
    cmd = ["pkcs11-tool", "--module", SOFTHSM_MODULE, "-L"]
    first = p11spy_run(cmd, env, "-o", pattern)
    _, _, earlier = split_message(first.stderr)
    planted = tmp_path / "t-99999.p11"
    planted.write_bytes(earlier[0].read_bytes())
    res = p11spy_run(cmd, env, "-o", pattern)
    _, _, paths = split_message(res.stderr)
    assert len(paths) == 1 and paths[0] not in (planted, earlier[0]), res.stderr
    assert sorted(tmp_path.glob("t-*.p11")) == sorted([planted, earlier[0], paths[0]])


# --- 4. background jobs that outlive the run ------------------------------------------------

LATE_LOADER = """
import ctypes, sys, time
time.sleep(1.5)  # the run is over by now
lib = ctypes.CDLL(sys.argv[1])
fl = ctypes.c_void_p()
print("C_GetFunctionList", lib.C_GetFunctionList(ctypes.byref(fl)))
"""


def test_background_jobs_stay_silent_after_the_run(token: Token, tmp_path: Path) -> None:
    """A job the command leaves running, which loads a module after the run ended (and one
    started after it), prints nothing of the spy's, leaves no file, and works as without it."""
    need("pkcs11-tool", "opensc")
    top = Path(f"/tmp/p11spy-{os.getuid()}")
    before = set(top.rglob("*")) if top.is_dir() else set()
    jobs = (f"( {sys.executable} -c '{LATE_LOADER}' {SOFTHSM_MODULE} >{tmp_path}/a.out "
            f"2>{tmp_path}/a.err </dev/null & "
            f"sleep 1.5; pkcs11-tool --module {SOFTHSM_MODULE} -L >{tmp_path}/b.out "
            f"2>{tmp_path}/b.err </dev/null ) &")
    res = p11spy_run(["sh", "-c", jobs], env_for(token, tmp_path))  # the default folder
    assert res.returncode == 0, res.stderr
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and not all(
            (tmp_path / f).exists() and (tmp_path / f).stat().st_size for f in ("a.out", "b.out")):
        time.sleep(0.1)
    time.sleep(0.5)
    assert (tmp_path / "a.out").read_text() == "C_GetFunctionList 0\n"
    assert "p11spy-test" in (tmp_path / "b.out").read_text()
    assert (tmp_path / "a.err").read_text() == "" and (tmp_path / "b.err").read_text() == ""
    assert (set(top.rglob("*")) if top.is_dir() else set()) == before


# --- 5. a module loaded where another was unloaded ------------------------------------------

def test_module_loaded_at_an_unloaded_modules_address_is_traced(
        programs: Path, tmp_path: Path) -> None:
    """OpenSC and its one-PIN build, loaded in turn, 20 times: the loader puts each where the
    other was. Every round is traced, each call under the module that answered it (and the
    function lists of unloaded modules do not use up the spy's room for new ones)."""
    need("pkcs11-tool", "opensc")  # the OpenSC modules
    for m in (OPENSC, OPENSC_ONEPIN):
        if not Path(m).is_file():
            pytest.fail(f"{m} is missing: install opensc-pkcs11")
    env = {**plain_env(), "PCSCLITE_CSOCK_NAME": str(tmp_path / "no-pcscd.comm")}
    res = p11spy_run([str(programs / "swap"), OPENSC, OPENSC_ONEPIN, "20"], env, "-o",
                     str(tmp_path / "t-%p.p11"))
    assert res.returncode == 0, res.stdout + res.stderr
    bases = [line.split()[1] for line in res.stdout.splitlines()]
    assert len(bases) == 20 and len(set(bases)) < 20, res.stdout  # some address was reused
    _, _, paths = split_message(res.stderr)
    infos = [c for c in calls(paths) if c.function == "C_GetInfo"]
    assert len(infos) == 20
    assert module_of_calls(paths)[("C_GetInfo", OPENSC)] == 10
    assert module_of_calls(paths)[("C_GetInfo", OPENSC_ONEPIN)] == 10
    # text decode and the viewer name the module too, once the trace holds several
    text = subprocess.run([P11SPY, "decode", str(paths[0])], capture_output=True, text=True,
                          timeout=TIMEOUT, check=True).stdout
    heads = [line for line in text.splitlines() if " C_GetInfo " in line]
    named = [h.rpartition("  module ")[2] if "  module " in h else None for h in heads]
    assert named == [None] + ["onepin-opensc-pkcs11.so", "opensc-pkcs11.so"] * 9 + \
        ["onepin-opensc-pkcs11.so"], heads
    index = P11Index(paths[0])
    index.scan(lambda: False)
    panes = [detail.plain(detail.build(index, r)) for r in index.rows
             if index.function(r) == "C_GetInfo"]
    assert [f"module {m}" in pane for pane, m in zip(panes, [OPENSC, OPENSC_ONEPIN] * 10,
                                                      strict=True)] == [True] * 20


# --- 6. nesting: each call once, under the module that answered -----------------------------

def test_run_around_the_shim_records_each_call_once(token: Token, tmp_path: Path) -> None:
    """`p11spy run` around pkcs11-tool using the shim over SoftHSM2: one process header, each
    call once, under SoftHSM2 (the shim records; the preloaded spy leaves it alone), the same
    calls as pkcs11-tool makes on SoftHSM2 directly under run."""
    need("pkcs11-tool", "opensc")
    env = env_for(token, tmp_path)
    plain = p11spy_run(["pkcs11-tool", "--module", SOFTHSM_MODULE, "-L"], env, "-o",
                       str(tmp_path / "plain-%p.p11"))
    _, _, direct = split_message(plain.stderr)
    res = p11spy_run(["pkcs11-tool", "--module", str(SHIM_2), "-L"],
                     {**env, "P11SPY_MODULE": SOFTHSM_MODULE}, "-o",
                     str(tmp_path / "t-%p.p11"))
    assert res.returncode == 0 and "p11spy-test" in res.stdout, res.stderr
    _, _, paths = split_message(res.stderr)
    assert len(paths) == 1
    headers = subprocess.run([P11SPY, "decode", str(paths[0])], capture_output=True,
                             text=True, timeout=TIMEOUT).stdout
    assert headers.count("== process ") == 1, headers
    got = module_of_calls(paths)
    assert {m for _, m in got} == {SOFTHSM_MODULE}, got
    assert got == module_of_calls(direct)


def test_p11kit_proxy_calls_are_recorded_once_under_the_real_module(
        token: Token, tmp_path: Path) -> None:
    """pkcs11-tool over p11-kit-proxy, whose registry has SoftHSM2 only: each call the proxy
    passes on is recorded once, under SoftHSM2, not a second time under the proxy."""
    need("pkcs11-tool", "opensc")
    if not Path(P11KIT_PROXY).is_file():
        pytest.fail(f"{P11KIT_PROXY} is missing: install p11-kit-modules")
    home = tmp_path / "home"
    config = home / ".config" / "pkcs11"
    (config / "modules").mkdir(parents=True)
    (config / "pkcs11.conf").write_text("user-config: only\n")
    (config / "modules" / "softhsm2.module").write_text(f"module: {SOFTHSM_MODULE}\n")
    env = {**env_for(token, tmp_path), "HOME": str(home)}
    res = p11spy_run(["pkcs11-tool", "--module", P11KIT_PROXY, "-L"], env, "-o",
                     str(tmp_path / "t-%p.p11"))
    assert res.returncode == 0 and "p11spy-test" in res.stdout, res.stderr
    _, _, paths = split_message(res.stderr)
    got = module_of_calls(paths)
    softhsm = [m for _, m in got if m and m.endswith("libsofthsm2.so")]
    assert softhsm, got
    assert not [k for k in got if k[1] == P11KIT_PROXY and k[0] != "C_GetFunctionList"], got
    plain = p11spy_run(["pkcs11-tool", "--module", SOFTHSM_MODULE, "-L"], env, "-o",
                       str(tmp_path / "plain-%p.p11"))
    _, _, direct = split_message(plain.stderr)
    # pkcs11-tool asks for each slot's token once, through the proxy as directly
    token_infos = Counter(m for f, m in got.elements() if f == "C_GetTokenInfo")
    assert list(token_infos.values()) == [module_of_calls(direct)[("C_GetTokenInfo",
                                                                   SOFTHSM_MODULE)]], got
    assert next(iter(token_infos)).endswith("libsofthsm2.so")
