"""The shims are plain C: they need libc alone, load on glibc 2.17, and run with no Python.

A server where a client fails often has no Python (or another one), and an old glibc: the shim
must load there all the same. These tests read the built shims' dynamic sections and symbol
versions, and run a real client through them with every Python on this machine hidden.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from p11spy.decoder.events import Call, Process
from tests.conftest import REPO, USER_PIN, read_trace

SPY = REPO / "spy"
SHIMS = [SPY / "libp11spy.so", SPY / "libp11spy-2.so", SPY / "libp11spy-preload.so",
         SPY / "libp11spy-replay.so", SPY / "libp11spy-replay-2.so"]  # the replay: for clients too
# libc, the dynamic linker, and the two libraries glibc before 2.34 kept apart from libc.
LIBC_ONLY = re.compile(r"^(libc\.so\.6|ld-linux[-\w.]*\.so\.\d|ld64\.so\.\d|libdl\.so\.2|"
                       r"libpthread\.so\.0)$")
GLIBC_BASELINE = (2, 17)


def dynamic(shim: Path) -> str:
    if not shim.is_file():
        pytest.fail(f"{shim} is not built: run `make setup`")
    return subprocess.run(["readelf", "-d", str(shim)], check=True, capture_output=True,
                          text=True).stdout


def glibc_versions(shim: Path) -> list[tuple[int, ...]]:
    out = subprocess.run(["objdump", "-T", str(shim)], check=True, capture_output=True,
                         text=True).stdout
    return sorted({tuple(int(x) for x in v.split(".")) for v in re.findall(r"GLIBC_([\d.]+)", out)})


@pytest.mark.parametrize("shim", SHIMS, ids=lambda p: p.name)
def test_shim_needs_only_libc(shim):
    dyn = dynamic(shim)
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
    assert "libc.so.6" in needed
    assert [n for n in needed if not LIBC_ONLY.match(n)] == []
    assert "python" not in dyn.lower()
    assert "RUNPATH" not in dyn and "RPATH" not in dyn


@pytest.mark.parametrize("shim", SHIMS, ids=lambda p: p.name)
def test_shim_loads_on_glibc_2_17(shim):
    versions = glibc_versions(shim)
    assert versions, "no GLIBC_ symbol versions at all: not a glibc build"
    assert max(versions) <= GLIBC_BASELINE, ".".join(map(str, max(versions)))


def test_generated_c_includes_no_python_header(tmp_path):
    """Every header the shim's C pulls in, as the compiler lists them: libc's only."""
    from shim_build.codegen import generate

    src = tmp_path / "shim.c"
    src.write_text(generate())
    deps = subprocess.run(["cc", "-M", "-DP11SPY_PRELOAD=1", "-DP11SPY_EXPORT_INTERFACES=1",
                           str(src)], check=True, capture_output=True, text=True).stdout
    headers = [h for h in deps.replace("\\\n", " ").split()[1:] if h.endswith(".h")]
    assert any(h.endswith("dlfcn.h") for h in headers)  # the list is real
    assert [h for h in headers if "python" in h.lower()] == []


def python_places() -> tuple[list[Path], list[Path]]:
    """The directories and files that make up a Python here: covered in the namespace."""
    dirs = {Path(sys.base_prefix), Path(sys.prefix), REPO / ".venv",
            Path(os.path.realpath(sys.executable)).parents[1]}
    dirs |= {p for p in Path("/usr/lib").glob("python3*") if p.is_dir()}
    dirs |= {p for p in Path("/usr/local/lib").glob("python3*") if p.is_dir()}
    files = {p for d in ("/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/local/lib")
             for p in Path(d).glob("libpython*.so*")}
    files |= {p for p in Path("/usr/bin").glob("python*") if p.is_file()}
    return sorted(d for d in dirs if d.is_dir()), sorted(files)


def run_without_python(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Runs cmd in a mount namespace where every Python directory is an empty tmpfs and every
    libpython and python binary an empty file; the script first proves they are gone."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("hiding Python needs root and unshare(1) for a mount namespace")
    dirs, files = python_places()
    lines = ["set -e"]
    lines += [f"mount -t tmpfs -o size=1m p11spy-hidden '{d}'" for d in dirs]
    lines += [f"mount --bind /dev/null '{f}'" for f in files]
    lines.append(f"if [ -e '{sys.executable}' ] || [ -e '{os.path.realpath(sys.executable)}' ];"
                 " then echo 'python still visible'; exit 99; fi")
    lines.append('exec "$@"')
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           "\n".join(lines), "sh", *cmd], env=env, capture_output=True,
                          text=True, timeout=120)


def test_client_through_shim_with_python_hidden(token, tmp_path, spy_env, shim):
    """pkcs11-tool logs in and lists objects through the shim while no Python can be found;
    the trace, decoded afterwards, holds its calls."""
    trace = tmp_path / "hidden.p11"
    done = run_without_python(
        ["pkcs11-tool", "--module", str(shim), "--token-label", token.label, "--login",
         "--pin", USER_PIN, "--list-objects"], spy_env(token, trace))
    assert done.returncode == 0, done.stdout + done.stderr
    events = read_trace(trace)
    assert isinstance(events[0], Process)
    calls = {c.function: c.rv for c in events if isinstance(c, Call)}
    assert calls["C_Login"] == 0
    assert "C_FindObjectsInit" in calls and calls["C_Finalize"] == 0


def test_preloaded_spy_with_python_hidden(token, tmp_path):
    """The preloaded spy of `p11spy run` too: set by hand, as on a server without Python."""
    trace = tmp_path / "preload.p11"
    env = {**token.env, "LD_PRELOAD": str(SPY / "libp11spy-preload.so"),
           "P11SPY_OUTPUT": str(trace)}
    done = run_without_python(["pkcs11-tool", "--module", token.module, "-L"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert token.label in done.stdout
    calls = [c.function for c in read_trace(trace) if isinstance(c, Call)]
    assert "C_GetSlotList" in calls and "C_GetTokenInfo" in calls


def test_build_checks_struct_layouts_against_each_target_compiler(tmp_path):
    """The layout checks the build adds (from cffi, as the decoder reads captured structs) pass
    for a 64-bit target and stop a build for one that lays the structs out differently."""
    from p11spy.facts.pkcs11 import structs
    from shim_build.build import layout_checks

    src = tmp_path / "layout.c"
    src.write_text("#include <stddef.h>\n" + structs.CDEF + layout_checks())
    zig = [sys.executable, "-m", "ziglang", "cc", "-c", "-o", str(tmp_path / "layout.o"),
           str(src), "-target"]
    ok = subprocess.run([*zig, "s390x-linux-gnu"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*zig, "x86-linux-gnu"], capture_output=True, text=True)  # 32-bit
    assert bad.returncode != 0
    assert "CK_INFO: size differs from the decoder's" in bad.stderr
