"""The shim inside other people's processes: it never becomes a way in (setuid programs,
names planted where the trace goes), never writes into the client's own files, never leaks
what a long-lived client needs (descriptors), and never records key material in clear."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from p11spy.decoder.events import Call, ModuleInfo, Process, TraceWarning
from p11spy.facts.logformat import RECORD, RecordType
from p11spy.facts.pkcs11 import functions
from p11spy.tui.p11_index import P11Index

from .conftest import SOFTHSM_MODULE, USER_PIN, read_trace, run
from .cprogs import build

SECURE_CONF = Path("/etc/p11spy.conf")


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a user and a setuid-root program")


@pytest.fixture
def stranger() -> Iterator[pwd.struct_passwd]:
    """An unprivileged user of its own, removed afterwards."""
    _needs_root()
    name = f"p11spy-t{os.getpid() % 100000}"
    subprocess.run(["userdel", name], capture_output=True)  # left by an interrupted run
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A root-owned folder other users can enter (pytest's own is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="p11spy-suid-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


def _as_user(user: pwd.struct_passwd, env: dict[str, str],
             *cmd: str) -> subprocess.CompletedProcess:
    clean = {"PATH": "/usr/bin:/bin", **env}
    return subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                           "--clear-groups", "--", "env", "-i",
                           *(f"{k}={v}" for k, v in clean.items()), *cmd],
                          capture_output=True, text=True, timeout=60)


def _suid_root(program: Path, mode: int = 0o4755) -> Path:
    os.chown(program, 0, 0)
    program.chmod(mode)
    return program


@pytest.fixture(params=[0o4755, 0o2755], ids=["setuid", "setgid"])
def attack(request: pytest.FixtureRequest, public_dir: Path, shim: Path) -> dict[str, Path]:
    """A setuid-root (or setgid-root) helper whose module is the shim, the attacker's
    library (it leaves a mark when loaded), and a root-only folder holding a root-owned
    file."""
    mark = public_dir / "evil-ran.txt"
    rootonly = public_dir / "rootonly"
    rootonly.mkdir(mode=0o700)
    (rootonly / "important.conf").write_text("root's setting\n")
    return {
        "helper": _suid_root(build("suid_helper", public_dir, f'SHIM="{shim}"'), request.param),
        "direct": _suid_root(_direct_helper(public_dir), request.param),
        "evil": build("evil", public_dir, f'MARK="{mark}"', shared=True),
        "mark": mark,
        "rootonly": rootonly,
    }


def _direct_helper(public_dir: Path) -> Path:
    d = public_dir / "direct"
    d.mkdir(mode=0o755)
    return build("suid_helper", d, f'SHIM="{SOFTHSM_MODULE}"')


def test_setuid_program_takes_nothing_from_the_callers_environment(attack, stranger):
    """An unprivileged caller names their own library and a root-only file: the setuid
    helper loads neither, writes nothing, and gets CKR_GENERAL_ERROR with one line naming
    the only place that configures the shim there."""
    if SECURE_CONF.exists():
        pytest.fail(f"{SECURE_CONF} exists on this machine: the test needs it absent")
    rootonly = attack["rootonly"]
    for output in (rootonly / "important.conf", rootonly / "new.p11"):
        res = _as_user(stranger, {"P11SPY_MODULE": str(attack["evil"]),
                                  "P11SPY_OUTPUT": str(output), "P11SPY_DEEPBIND": "1"},
                       str(attack["helper"]))
        ids = res.stdout.split("\n")[0]
        assert f"ruid={stranger.pw_uid} " in ids
        assert " euid=0 " in ids or ids.endswith(" egid=0")  # it really ran privileged
        assert "C_GetFunctionList 0x5" in res.stdout
        lines = res.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("p11spy: setuid/setgid program")
        assert str(SECURE_CONF) in lines[0]
    assert not attack["mark"].exists(), attack["mark"].read_text()
    assert (rootonly / "important.conf").read_text() == "root's setting\n"
    assert sorted(p.name for p in rootonly.iterdir()) == ["important.conf"]
    assert not Path(f"/tmp/p11spy-{stranger.pw_uid}").exists()


def test_setuid_program_passes_calls_to_the_root_configured_module(attack, stranger):
    """With the module named in root's /etc/p11spy.conf, the helper works exactly as on
    the module itself, the caller's P11SPY_MODULE is ignored and no trace is written."""
    if SECURE_CONF.exists():
        pytest.fail(f"{SECURE_CONF} exists on this machine: the test needs it absent")
    SECURE_CONF.write_text(f"# written by p11spy's tests\nmodule = {SOFTHSM_MODULE}\n")
    try:
        env = {"P11SPY_MODULE": str(attack["evil"]),
               "P11SPY_OUTPUT": str(attack["rootonly"] / "new.p11")}
        spied = _as_user(stranger, env, str(attack["helper"]))
        direct = _as_user(stranger, env, str(attack["direct"]))
    finally:
        SECURE_CONF.unlink()
    # The module's own answers (as setgid, SoftHSM cannot read its root-only tokens: 0x5).
    assert "C_GetFunctionList 0x0\nC_Initialize" in direct.stdout
    assert "C_GetInfo 0x0 SoftHSM" in direct.stdout or "egid=0" in direct.stdout
    assert spied.stdout == direct.stdout
    assert spied.stderr == direct.stderr == ""
    assert not attack["mark"].exists()
    assert sorted(p.name for p in attack["rootonly"].iterdir()) == ["important.conf"]


def test_client_closing_descriptors_never_gets_records_in_its_own_file(token, tmp_path,
                                                                       spy_env, shim):
    """closefrom(3), then a file of the client's own takes the trace's old number: the
    client's file holds only what it wrote; the calls after it are still traced."""
    prog = build("fdreuse", tmp_path)
    own = tmp_path / "own.txt"
    trace = tmp_path / "t.p11"
    res = run([str(prog), str(shim), str(own)], spy_env(token, trace))
    assert res.returncode == 0, res.stderr
    assert "own file fd 3" in res.stdout  # the number the trace had
    assert own.read_bytes() == b"client line 1\nclient line 2\n"
    calls = [e.function for e in read_trace(trace) if isinstance(e, Call)]
    assert calls[-3:] == ["C_GetInfo", "C_GetSlotList", "C_Finalize"]


def test_trace_removed_and_descriptor_reused_starts_a_new_trace(token, tmp_path, spy_env,
                                                                  shim):
    """The trace deleted (rotated), then closefrom(3) and a file of the client's own: the
    shim starts the trace afresh, saying again whose it is and which module it traces."""
    prog = build("fdreuse", tmp_path)
    own = tmp_path / "own.txt"
    trace = tmp_path / "t.p11"
    res = run([str(prog), str(shim), str(own), str(trace)], spy_env(token, trace))
    assert res.returncode == 0, res.stderr
    assert own.read_bytes() == b"client line 1\nclient line 2\n"
    events = read_trace(trace)
    assert isinstance(events[0], Process) and events[0].info["module"] == SOFTHSM_MODULE
    assert [e.info.get("loaded") for e in events if isinstance(e, ModuleInfo)] == [SOFTHSM_MODULE]
    assert [e.function for e in events if isinstance(e, Call)] == [
        "C_GetInfo", "C_GetSlotList", "C_Finalize"]


def _getfl(shim: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    from .test_shim import CLIENTS, PY

    return run([PY, str(CLIENTS / "lifecycle.py"), str(shim), "getfl"], env)


def _refused(res: subprocess.CompletedProcess, why: str) -> None:
    assert res.stdout.strip() == "C_GetFunctionList rv=5"  # CKR_GENERAL_ERROR
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("p11spy: ") and why in lines[0], res.stderr


def test_name_taken_by_another_users_file_is_refused(token, tmp_path, spy_env, shim):
    trace = tmp_path / "t.p11"
    trace.write_bytes(b"")
    os.chown(trace, 65534, 65534)
    trace.chmod(0o666)
    _refused(_getfl(shim, spy_env(token, trace)), "belongs to another user")
    assert trace.read_bytes() == b""


def test_fifo_at_the_trace_name_never_hangs_the_client(token, tmp_path, spy_env, shim):
    trace = tmp_path / "t.p11"
    os.mkfifo(trace)
    _refused(_getfl(shim, spy_env(token, trace)), "is not a regular file")  # within the timeout


def test_own_file_that_is_no_trace_is_left_alone(token, tmp_path, spy_env, shim):
    trace = tmp_path / "t.p11"
    trace.write_text("my notes\n")
    _refused(_getfl(shim, spy_env(token, trace)), "is not a p11spy trace")
    assert trace.read_text() == "my notes\n"


def test_dev_null_takes_the_trace_and_keeps_its_mode(token, spy_env, shim):
    """P11SPY_OUTPUT=/dev/null: the shim works and keeps no trace; /dev/null stays 0666."""
    before = os.stat("/dev/null")
    res = _getfl(shim, spy_env(token, Path("/dev/null")))
    assert res.stdout.strip() == "C_GetFunctionList rv=0" and res.stderr == ""
    after = os.stat("/dev/null")
    assert stat.S_IMODE(after.st_mode) == stat.S_IMODE(before.st_mode) == 0o666
    assert after.st_uid == before.st_uid == 0


def test_file_with_other_names_is_refused(token, tmp_path, spy_env, shim):
    """A hard link to the name would make the trace readable under another name."""
    trace = tmp_path / "t.p11"
    env = spy_env(token, trace)
    assert _getfl(shim, env).stdout.strip() == "C_GetFunctionList rv=0"
    os.link(trace, tmp_path / "elsewhere.p11")
    size = trace.stat().st_size
    _refused(_getfl(shim, env), "has other names")
    assert trace.stat().st_size == size


def test_own_trace_is_appended_to_and_made_private(token, tmp_path, spy_env, shim):
    trace = tmp_path / "t.p11"
    env = spy_env(token, trace)
    assert _getfl(shim, env).stdout.strip() == "C_GetFunctionList rv=0"
    trace.chmod(0o666)
    assert _getfl(shim, env).stdout.strip() == "C_GetFunctionList rv=0"
    assert stat.S_IMODE(trace.stat().st_mode) == 0o600
    assert len([e for e in read_trace(trace) if isinstance(e, Process)]) == 2


@pytest.mark.parametrize(("mode", "owner", "why"), [
    (0o777, 0, "may write in it"),          # writable by all, not sticky
    (0o770, 0, "may write in it"),          # writable by the group
    (0o755, 65534, "another user owns it"),
])
def test_folder_others_control_is_refused(token, tmp_path, spy_env, shim, mode, owner, why):
    folder = tmp_path / "others-folder"
    folder.mkdir()
    folder.chmod(mode)
    os.chown(folder, owner, owner)
    _refused(_getfl(shim, spy_env(token, folder / "t.p11")), why)
    assert list(folder.iterdir()) == []


def test_sticky_shared_folder_takes_a_new_trace(token, tmp_path, spy_env, shim):
    folder = tmp_path / "tmp"
    folder.mkdir()
    folder.chmod(0o1777)
    trace = folder / "t.p11"
    assert _getfl(shim, spy_env(token, trace)).stdout.strip() == "C_GetFunctionList rv=0"
    assert stat.S_IMODE(trace.stat().st_mode) == 0o600


def test_reloading_the_shim_leaks_no_descriptor(token, tmp_path, spy_env, shim):
    """1100 rounds of dlopen ... dlclose (a plug-in host): descriptors stay as they were,
    every round works, and the real module is unloaded with the shim."""
    prog = build("reload", tmp_path)
    trace = tmp_path / "r.p11"
    res = run([str(prog), str(shim), SOFTHSM_MODULE, "1100"], spy_env(token, trace))
    assert res.returncode == 0, res.stderr
    before, after = (int(x) for x in res.stdout.split("\n")[0].split()[2::2])
    assert after == before
    assert "failures 0" in res.stdout
    assert "real module still loaded: no" in res.stdout
    calls = [e.function for e in read_trace(trace) if isinstance(e, Call)]
    assert calls.count("C_Initialize") == 1100


@pytest.mark.parametrize("which", ["libp11spy.so", "libp11spy-2.so"])
def test_shim_named_as_its_own_module_is_refused(token, tmp_path, spy_env, shim, which):
    """P11SPY_MODULE=$(p11spy lib) is an easy mistake: one line, and pkcs11-tool fails
    cleanly instead of crashing."""
    env = spy_env(token, tmp_path / "t.p11")
    env["P11SPY_MODULE"] = str(shim.parent / which)
    res = run(["pkcs11-tool", "--module", str(shim), "-L"], env)
    assert res.returncode == 1  # pkcs11-tool's "Failed to load pkcs11 module", not a signal
    ours = [ln for ln in res.stderr.splitlines() if "p11spy:" in ln]
    assert len(ours) == 1 and "is a p11spy shim, not the real module" in ours[0]


def test_key_values_of_classes_that_may_hold_keys_are_masked(token, tmp_path, spy_env, shim):
    """CKA_VALUE under CKO_OTP_KEY, a vendor-defined class and a class no version of
    PKCS#11 defines never reaches the trace; a data object's value does."""
    prog = build("classes", tmp_path)
    trace = tmp_path / "c.p11"
    res = run([str(prog), str(shim), USER_PIN], spy_env(token, trace))
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("C_CreateObject") == 4
    raw = trace.read_bytes()
    for secret in ("otp-key-secret-8c1f07", "vendor-secret-5d93a2", "unknown-class-secret-e4b6"):
        assert secret in res.stdout
        assert secret.encode() not in raw and secret.encode().hex().encode() not in raw
    assert b"plain-data-value-0a11" in raw


def _call_records(trace: Path, function: str) -> int:
    """Entry and call records of one function in a little-endian trace, from the headers."""
    index = next(i for i, f in enumerate(functions.FUNCTIONS) if f.name == function)
    data, off, n = trace.read_bytes(), 0, 0
    while off + RECORD.size <= len(data):
        _m, length, rtype, _mod, fidx, *_ = RECORD.unpack_from(data, off)
        n += fidx == index and rtype in (RecordType.ENTRY, RecordType.CALL)
        off += max(length, RECORD.size)
    return n


@pytest.mark.parametrize("after", [20, 0])
def test_full_disk_says_how_many_records_are_missing(token, tmp_path, spy_env, shim, after):
    """Writes failing (file size limit, as a full disk): the client sees nothing; the trace
    says how many records are missing, where they are missing: as soon as a write works
    again (after=20 more calls), or when the shim is unloaded at exit (after=0: the limit
    lasts past C_Finalize), and stays readable."""
    prog = build("fulldisk", tmp_path)
    trace = tmp_path / "f.p11"
    res = run([str(prog), str(shim), "3000", "50", str(after)], spy_env(token, trace))
    assert res.returncode == 0 and res.stdout == "failures 0\n", res.stderr
    events = read_trace(trace)
    notes = [e.message for e in events if isinstance(e, TraceWarning)]
    assert notes and all("record(s) missing here" in n for n in notes)
    missing = sum(int(n.split(": ", 1)[1].split()[0]) for n in notes)
    calls = [e for e in events if isinstance(e, Call)]
    made = 50 + after + 1  # C_GetInfo calls and C_Finalize, two records each (entry, return)
    written = sum(_call_records(trace, fn) for fn in ("C_GetInfo", "C_Finalize"))
    assert 0 < missing < 2 * made and written + missing == 2 * made
    assert ("C_Finalize" in [c.function for c in calls if c.rv is not None]) == (after > 0)
    # a call whose return was among the lost records is not said to have crashed
    assert not any(c.never_returned for c in calls)
    if not after:
        # written at unload, after everything else (but entries the reader lists at the end)
        assert isinstance([e for e in events if getattr(e, "rv", 0) is not None][-1],
                          TraceWarning)
    assert any(isinstance(e, ModuleInfo) for e in events)
    index = P11Index(trace)  # the viewer says the same, where decode says it
    index.scan(lambda: False)
    assert sorted(index.warnings.values()) == sorted(notes)
