"""p11spy installs like any other package (issue 12): `python -m build` makes an sdist and,
from that sdist, a wheel whose build compiles the shims; the wheel installs into a fresh
virtualenv on a machine with no C compiler, and there `p11spy lib`, `run`, `decode`, `show` and
`report` work as they do in the checkout, and `bundle` packs the shims it carries.

The build and the install take a minute or two (the build environment and the dependencies
come from the package index, through pip's cache)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from p11spy.spy.shims import NATIVE
from tests.conftest import REPO, SOFTHSM_MODULE, Token
from tests.test_tui import _tmux, _wait_screen, tmux_session

SHIMS = ("libp11spy.so", "libp11spy-2.so", "libp11spy-preload.so")
TOOLS = ("pkcs11-tool", "softhsm2-util", "tmux", "sleep")  # what the tests run, besides the venv
FIXTURE = REPO / "fixtures" / "p11spy" / "real-card-wrong-pin.p11"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    res = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob("p11spy-*.whl")
    return found


@pytest.fixture(scope="module")
def no_compiler(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH with the tools the tests run and no C compiler."""
    tools = tmp_path_factory.mktemp("tools")
    for name in TOOLS:
        (tools / name).symlink_to(shutil.which(name))
    path = str(tools)
    for cc in ("cc", "gcc", "clang", "tcc", "zig"):
        assert shutil.which(cc, path=path) is None
    return path


@pytest.fixture(scope="module")
def venv(wheel: Path, no_compiler: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    res = subprocess.run([str(root / "bin/python"), "-m", "pip", "install", "-q", str(wheel)],
                         env=_env(root, no_compiler), cwd=root, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return root


def _env(venv: Path, path: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("P11SPY", "PKCS11SPY", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, "PATH": f"{venv}/bin:{path}", **extra}


def p11spy(venv: Path, path: str, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin/p11spy"), *args], env=_env(venv, path, **extra),
                          cwd=venv, capture_output=True, text=True, timeout=120)


def test_sdist_holds_what_the_build_needs_and_no_built_shim(dist: Path) -> None:
    (sdist,) = dist.glob("p11spy-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"setup.py", "shim_build/build.py", "shim_build/codegen.py", "spy/shim_runtime.c",
            "spy/preload.c", "facts/pkcs11/functions.py", "facts/LOGFORMAT.md"} <= names
    assert not [n for n in names if n.endswith(".so")]


def test_wheel_carries_the_shims_and_says_it_is_native(wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert {f"p11spy/spy/{so}" for so in SHIMS} <= names
        assert "p11spy/decoder/formats/p11spy/libp11json.so" in names  # decode --json's
        # cffi's declarations parsed at build time (no C parser at start-up)
        assert {"p11spy/facts/pkcs11/_layout.py",
                "p11spy/decoder/formats/p11spy/_p11json_ffi.py"} <= names
        assert "Root-Is-Purelib: false" in z.read("p11spy-0.1.0.dist-info/WHEEL").decode()
        z.extractall(tmp_path, [f"p11spy/spy/{so}" for so in SHIMS])
    # Any Python 3 unless a shim links one interpreter's libpython (readelf, not our reader).
    dynamic = "".join(subprocess.run(["readelf", "-d", str(tmp_path / "p11spy/spy" / so)],
                                     capture_output=True, text=True, check=True).stdout
                      for so in SHIMS)
    python = f"cp{sys.version_info[0]}{sys.version_info[1]}" if "libpython" in dynamic else "py3"
    assert wheel.name.startswith(f"p11spy-0.1.0-{python}-none-"), wheel.name


def test_wheel_claims_manylinux_only_when_auditwheel_agrees(wheel: Path) -> None:
    """auditwheel, the tool that judges manylinux wheels, reads the same shims: the wheel is
    called manylinux2014 exactly when auditwheel finds it fit for glibc 2.17 or older, and
    linux_<arch> otherwise (a shim that links libpython or a newer glibc)."""
    res = subprocess.run([str(Path(sys.executable).parent / "auditwheel"), "show", str(wheel)],
                         capture_output=True, text=True, timeout=120)
    said = re.search(r'consistent with the following platform tag: "(\w+)"',
                     " ".join(res.stdout.split()))
    assert res.returncode == 0 and said, res.stdout + res.stderr
    arch = sysconfig.get_platform().split("-", 1)[1].replace("-", "_")
    fit = re.fullmatch(rf"manylinux_2_(\d+)_{arch}", said[1])
    expected = f"manylinux2014_{arch}" if fit and int(fit[1]) <= 17 else f"linux_{arch}"
    assert wheel.name.endswith(f"-none-{expected}.whl"), (wheel.name, said[1])


def test_lib_names_a_shim_inside_the_venv(venv: Path, no_compiler: str) -> None:
    res = p11spy(venv, no_compiler, "lib")
    assert res.returncode == 0, res.stderr
    shim = Path(res.stdout.strip())
    assert shim.is_relative_to(venv) and shim.name == "libp11spy.so" and shim.is_file()
    res = p11spy(venv, no_compiler, "lib", "--module", SOFTHSM_MODULE)
    assert res.returncode == 0 and Path(res.stdout.strip()) == shim.with_name("libp11spy-2.so")


def test_bundle_from_the_installed_package(venv: Path, no_compiler: str, tmp_path: Path) -> None:
    res = p11spy(venv, no_compiler, "bundle", "-o", str(tmp_path / "b.tar.gz"))
    assert res.returncode == 0, res.stderr
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"README.md", "SHA256SUMS", *(f"{NATIVE}/{so}" for so in SHIMS)} <= names


def test_run_traces_a_real_client_and_the_trace_decodes(venv: Path, no_compiler: str,
                                                        token: Token, tmp_path: Path) -> None:
    res = p11spy(venv, no_compiler, "run", "-o", str(tmp_path / "%n-%p.p11"), "--",
                 "pkcs11-tool", "--module", SOFTHSM_MODULE, "-L",
                 SOFTHSM2_CONF=str(token.conf))
    assert res.returncode == 0, res.stderr
    assert token.label in res.stdout  # the client worked as without the spy
    (trace,) = tmp_path.glob("pkcs11-tool-*.p11")
    dec = p11spy(venv, no_compiler, "decode", str(trace))
    assert dec.returncode == 0, dec.stderr
    for call in ("C_Initialize", "C_GetSlotList", "C_GetTokenInfo", "C_Finalize"):
        assert call in dec.stdout
    assert token.label in dec.stdout


def test_replay_from_the_installed_package(venv: Path, no_compiler: str, token: Token,
                                          tmp_path: Path) -> None:
    """The wheel carries the replay module: a run traced by the installed p11spy is answered
    by the installed replay module, the token's folder gone."""
    res = p11spy(venv, no_compiler, "run", "-o", str(tmp_path / "%n-%p.p11"), "--",
                 "pkcs11-tool", "--module", SOFTHSM_MODULE, "-L",
                 SOFTHSM2_CONF=str(token.conf))
    assert res.returncode == 0, res.stderr
    (trace,) = tmp_path.glob("pkcs11-tool-*.p11")
    lib = p11spy(venv, no_compiler, "replay", "--lib", str(trace), "-o", str(tmp_path / "r"))
    assert lib.returncode == 0, lib.stderr
    shutil.rmtree(token.conf.parent / "tokens")
    got = subprocess.run(["pkcs11-tool", "--module", lib.stdout.strip(), "-L"],
                         capture_output=True, text=True, timeout=120,
                         env=_env(venv, no_compiler))
    assert (got.stdout, got.returncode) == (res.stdout, 0), got.stderr


def test_decode_and_diagnose_read_a_fixture_as_the_checkout_does(venv: Path,
                                                                 no_compiler: str) -> None:
    checkout = str(Path(sys.executable).parent / "p11spy")
    for args in (["decode", str(FIXTURE)], ["diagnose", str(FIXTURE)],
                 ["decode", "--json", str(FIXTURE)]):
        installed = p11spy(venv, no_compiler, *args)
        here = subprocess.run([checkout, *args], capture_output=True, text=True, timeout=120)
        assert installed.stdout == here.stdout and installed.returncode == here.returncode
    assert "CKR_PIN_INCORRECT" in installed.stdout
    # and the installed decode --json is the compiled decoder's (no compiler needed for it)
    probe = "from p11spy.decoder.formats.p11spy import fastjson; print(fastjson._library() " \
            "is not None)"
    got = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True,
                         text=True, env=_env(venv, no_compiler), timeout=60)
    assert got.stdout == "True\n", got.stderr


def test_report_from_the_installed_package(venv: Path, no_compiler: str, tmp_path: Path
                                           ) -> None:
    """The report's template, style and script are package data the wheel carries: the page
    the installed p11spy writes is the checkout's (but for the line saying when it was made)."""
    checkout = str(Path(sys.executable).parent / "p11spy")
    pages = []
    for name in ("installed", "checkout"):
        out = tmp_path / f"{name}.html"
        args = ("report", str(FIXTURE), "-o", str(out))
        res = p11spy(venv, no_compiler, *args) if name == "installed" else \
            subprocess.run([checkout, *args], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        pages.append(re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+", "", out.read_text()))
    assert pages[0] == pages[1]
    assert "CKR_PIN_INCORRECT" in pages[0] and "function start()" in pages[0]


def test_show_opens_the_viewer_in_a_terminal(venv: Path, no_compiler: str) -> None:
    cmd = f"{venv}/bin/p11spy show {FIXTURE}; echo EXITED $?; sleep 30"
    with tmux_session(cmd, _env(venv, no_compiler, TZ="UTC"), "installed-show") as session:
        text = _wait_screen(session, lambda s: "q Quit" in s and "C_Login" in s, timeout=60)
        assert "e Next error" in text
        _tmux("send-keys", "-t", session, "q")
        assert "EXITED 0" in _wait_screen(session, lambda s: "EXITED" in s)
