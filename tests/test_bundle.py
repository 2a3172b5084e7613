"""`p11spy bundle` (issue 12): the shims for a server without Python. The bundle is unpacked as
a server would (tar), checked as its README says (sha256sum), and used as its README says by a
real client (pkcs11-tool over SoftHSM2) in a server's environment (system PATH, no virtualenv);
the trace it leaves decodes here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from p11spy import __version__
from p11spy.spy.shims import NAMES, NATIVE, built_arches
from tests.conftest import SOFTHSM_MODULE, USER_PIN, Token

P11SPY = str(Path(sys.executable).parent / "p11spy")


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([P11SPY, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture
def unpacked(tmp_path: Path) -> Path:
    res = cli("bundle", cwd=tmp_path)  # the default name, in the current folder
    assert res.returncode == 0, res.stderr
    tarball = tmp_path / f"p11spy-shim-{__version__}.tar.gz"
    assert f"{tarball.name}: shims for {', '.join(built_arches())}" in res.stderr
    server = tmp_path / "server"
    server.mkdir()
    subprocess.run(["tar", "xzf", str(tarball), "-C", str(server)], check=True)
    return server / f"p11spy-shim-{__version__}"


def _server_env(tok: Token, **extra: str) -> dict[str, str]:
    """A server's environment: the system's tools, no virtualenv, no p11spy variables."""
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"),
            "SOFTHSM2_CONF": str(tok.conf), **extra}


def test_bundle_holds_every_arch_built_a_readme_and_sums(unpacked: Path) -> None:
    arches = built_arches()
    assert NATIVE in arches
    assert sorted(p.name for p in unpacked.iterdir()) == sorted([*arches, "README.md",
                                                                  "SHA256SUMS"])
    for arch in arches:
        assert sorted(p.name for p in (unpacked / arch).iterdir()) == sorted(NAMES)
        assert os.access(unpacked / arch / "libp11spy.so", os.X_OK)
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=unpacked, capture_output=True,
                           text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == 3 * len(arches)
    readme = (unpacked / "README.md").read_text()
    for needed in ("P11SPY_MODULE", "P11SPY_OUTPUT", "GSK_PKCS11=", "library = ",
                   "modutil -dbdir", "p11spy.module", "LD_PRELOAD=", "p11spy decode",
                   f"p11spy-shim-{__version__}", f"`{NATIVE}/`"):
        assert needed in readme, needed
    assert "@" not in readme.replace("user@", "")  # every placeholder filled


def test_readme_states_what_the_shims_need(unpacked: Path) -> None:
    """The README's line for an architecture agrees with binutils on its shims: the newest
    glibc symbol version they ask for, and every library or RUNPATH beyond glibc."""
    shims = [str(unpacked / NATIVE / n) for n in NAMES]
    symbols = subprocess.run(["objdump", "-T", *shims], capture_output=True, text=True,
                             check=True).stdout
    newest = max(tuple(map(int, v.split("."))) for v in
                 re.findall(r"\(GLIBC_(\d+(?:\.\d+)+)\)", symbols))
    dynamic = subprocess.run(["readelf", "-d", *shims], capture_output=True, text=True,
                             check=True).stdout
    beyond = {lib for lib in re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic)
              if not re.fullmatch(r"lib(c|dl|pthread|m|rt)\.so\.\d|ld-linux.*", lib)}
    beyond |= {f"RUNPATH {p}" for p in re.findall(r"\(RUNPATH\)\s+Library runpath: \[(.+?)\]",
                                                  dynamic)}
    line = next(x for x in (unpacked / "README.md").read_text().splitlines()
                if x.startswith(f"- `{NATIVE}/`: "))
    assert line.startswith(f"- `{NATIVE}/`: glibc {'.'.join(map(str, newest))} or later")
    assert all(b in line for b in beyond) and (("nothing else" in line) == (not beyond)), line


def test_unpacked_shim_traces_a_real_client_as_the_readme_says(unpacked: Path, token: Token,
                                                                tmp_path: Path) -> None:
    # The README's choice: a module without C_GetInterface (SoftHSM2 2.6) takes libp11spy-2.so.
    has = subprocess.run(["grep", "-c", "C_GetInterface", SOFTHSM_MODULE], capture_output=True,
                         text=True)
    shim = unpacked / NATIVE / ("libp11spy.so" if int(has.stdout) else "libp11spy-2.so")
    env = _server_env(token, P11SPY_MODULE=SOFTHSM_MODULE,
                      P11SPY_OUTPUT=str(tmp_path / "traces" / "%n-%p.p11"))
    (tmp_path / "traces").mkdir()
    res = subprocess.run(["pkcs11-tool", "--module", str(shim), "--login", "--pin", USER_PIN,
                          "-O"], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    (trace,) = (tmp_path / "traces").glob("pkcs11-tool-*.p11")
    assert trace.stat().st_mode & 0o777 == 0o600
    dec = cli("decode", str(trace))
    assert dec.returncode == 0, dec.stderr
    for call in ("C_Initialize", "C_GetSlotList", "C_OpenSession", "C_Login", "C_FindObjects",
                 "C_Finalize"):
        assert call in dec.stdout
    login = dec.stdout[dec.stdout.index(" C_Login "):].split("\n#")[0]
    assert "pPin = <masked: 4 bytes, ASCII digits>" in login  # masked at capture


def test_unpacked_preload_shim_traces_a_client_without_configuration(unpacked: Path,
                                                                     token: Token,
                                                                     tmp_path: Path) -> None:
    env = _server_env(token, LD_PRELOAD=str(unpacked / NATIVE / "libp11spy-preload.so"),
                      P11SPY_OUTPUT=str(tmp_path / "%n-%p.p11"))
    res = subprocess.run(["pkcs11-tool", "--module", SOFTHSM_MODULE, "-L"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and token.label in res.stdout, res.stderr
    (trace,) = tmp_path.glob("pkcs11-tool-*.p11")
    dec = cli("decode", str(trace))
    assert dec.returncode == 0 and "C_GetTokenInfo" in dec.stdout and token.label in dec.stdout


def test_lib_arch_names_the_shims_the_bundle_holds() -> None:
    assert cli("lib", "--arch", NATIVE).stdout == cli("lib").stdout
    missing = next(a for a in ("s390x", "aarch64", "ppc64le", "riscv64")
                   if a not in built_arches())
    res = cli("lib", "--arch", missing)
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert f"no shims built for {missing} (built: {', '.join(built_arches())}" in res.stderr


def test_bundle_of_one_arch(tmp_path: Path) -> None:
    res = cli("bundle", "--arch", NATIVE, "-o", str(tmp_path / "one.tar.gz"))
    assert res.returncode == 0 and f"shims for {NATIVE}," in res.stderr
    with tarfile.open(tmp_path / "one.tar.gz") as tar:
        folders = {n.split("/")[1] for n in tar.getnames() if n.count("/") == 2}
    assert folders == {NATIVE}


def test_bundle_bad_input_is_one_line(tmp_path: Path) -> None:
    for args, said in ((["-o", str(tmp_path)], "is a directory"),
                       (["-o", str(tmp_path / "no" / "b.tar.gz")], "does not exist"),
                       (["--arch", "riscv64", "-o", str(tmp_path / "b.tar.gz")],
                        "no shims built for riscv64")):
        res = cli("bundle", *args)
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and said in res.stderr
    assert list(tmp_path.iterdir()) == []
