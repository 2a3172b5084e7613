"""Foreign architectures on this machine: Debian's own SoftHSM2 for s390x, aarch64 and ppc64le
in a sysroot, run under qemu-user, and C clients cross-built with zig.

The sysroots are Debian's packages for that architecture, unpacked (`apt-get download`, then
`dpkg -x`) under build/sysroot-<arch>; qemu-<arch>-static -L <sysroot> runs a client there, and
the client's paths that are not in the sysroot (the shim, the trace, the token) are this
machine's. `python -m testbed.cross` makes the sysroots (`make setup` runs it, after adding the
architectures to dpkg), `make shim` the shims.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from p11spy.facts.pkcs11.cdecl import function_list_cdef
from shim_build.build import compiler

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
CLIENT_SRC = ROOT / "tests" / "clients" / "cross_client.c"
# What Debian's libsofthsm2 needs to load, each for the foreign architecture.
PACKAGES = ("libc6", "libgcc-s1", "libstdc++6", "libssl3", "libsofthsm2")


@dataclass(frozen=True)
class Arch:
    name: str  # ours, as in spy/<name>/
    debian: str  # Debian's architecture name
    zig: str  # zig's
    qemu: str  # Debian's qemu-user-static runner
    big_endian: bool

    @property
    def sysroot(self) -> Path:
        return BUILD / f"sysroot-{self.name}"

    @property
    def softhsm(self) -> str:
        """The module's path as the client sees it (inside the sysroot under qemu)."""
        return "/usr/lib/softhsm/libsofthsm2.so"

    @property
    def shim_dir(self) -> Path:
        return ROOT / "spy" / self.name


ARCHES = {a.name: a for a in (
    Arch("s390x", "s390x", "s390x", "qemu-s390x-static", big_endian=True),
    Arch("aarch64", "arm64", "aarch64", "qemu-aarch64-static", big_endian=False),
    Arch("ppc64le", "ppc64el", "powerpc64le", "qemu-ppc64le-static", big_endian=False),
)}
NATIVE = Arch("x86_64", "amd64", "x86_64", "", big_endian=False)


def missing(arch: Arch) -> str | None:
    """What keeps an architecture from running here, in one line, or None."""
    if shutil.which(arch.qemu) is None:
        return f"{arch.qemu} is missing: run `make setup` (Debian qemu-user-static)"
    if not (arch.sysroot / ".complete").is_file():
        return f"{arch.sysroot} is missing: run `make setup` (python -m testbed.cross)"
    if not (arch.shim_dir / "libp11spy.so").is_file():
        return f"{arch.shim_dir}/libp11spy.so is missing: run `make setup`"
    return None


def make_sysroot(arch: Arch) -> Path:
    """Debian's packages for arch, unpacked; done once (build/sysroot-<arch>/.complete)."""
    root = arch.sysroot
    if (root / ".complete").is_file():
        return root
    debs = BUILD / f"debs-{arch.name}"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir(parents=True)
    download = ["apt-get", "download", *(f"{p}:{arch.debian}" for p in PACKAGES)]
    if subprocess.run(download, cwd=debs, capture_output=True).returncode != 0:
        # Package lists older than the mirror name versions it no longer has: renew them once.
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(download, cwd=debs, check=True, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    shutil.rmtree(debs)
    _relative_links(root)
    (root / ".complete").write_text(" ".join(PACKAGES) + "\n")
    return root


def _relative_links(root: Path) -> None:
    """Absolute symbolic links (ppc64el's /lib64/ld64.so.2) would point out of the sysroot
    into this machine: point them at the sysroot's own file instead."""
    for link in root.rglob("*"):
        if link.is_symlink() and os.readlink(link).startswith("/"):
            target = root / os.readlink(link).lstrip("/")
            link.unlink()
            link.symlink_to(os.path.relpath(target, link.parent))


def build_client(arch: Arch) -> Path:
    """tests/clients/cross_client.c for arch, with the shims' compiler (zig, old glibc)."""
    out = BUILD / "cross" / arch.name
    out.mkdir(parents=True, exist_ok=True)
    header = out / "p11_cdef.h"
    header.write_text(function_list_cdef())
    exe = out / "cross_client"
    subprocess.run([*compiler(arch.name), "-O1", "-std=gnu11", "-Wall", "-Werror", "-I",
                    str(out), "-o", str(exe), str(CLIENT_SRC), "-ldl"],
                   check=True, capture_output=True, text=True)
    return exe


def command(arch: Arch, exe: Path, *args: str) -> list[str]:
    """How to run exe built for arch here."""
    if arch is NATIVE:
        return [str(exe), *args]
    return [arch.qemu, "-L", str(arch.sysroot), str(exe), *args]


def shim(arch: Arch, name: str = "libp11spy.so") -> Path:
    return ROOT / "spy" / name if arch is NATIVE else arch.shim_dir / name


def run_client(arch: Arch, work: Path, *, preload: bool = False
               ) -> tuple[subprocess.CompletedProcess, Path]:
    """The client through arch's shim on a fresh SoftHSM2 token in work: its run, its trace.
    With preload, the client loads SoftHSM2 itself and the preloaded spy wraps it, as under
    `p11spy run`."""
    tokens = work / "tokens"
    tokens.mkdir(parents=True)
    conf = work / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    trace = work / f"cross-{arch.name}.p11"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P11SPY_", "PKCS11SPY"))}
    env.update(SOFTHSM2_CONF=str(conf), P11SPY_OUTPUT=str(trace))
    if preload:  # qemu-user hands the variable to the foreign program, not to itself
        env["LD_PRELOAD"] = str(shim(arch, "libp11spy-preload.so"))
        module = arch.softhsm
    else:
        env["P11SPY_MODULE"] = arch.softhsm
        module = str(shim(arch))
    done = subprocess.run(command(arch, build_client(arch), module), env=env,
                          capture_output=True, text=True, timeout=300)
    return done, trace


def record(dest: Path) -> None:
    """The fixtures fixtures/p11spy/cross-{x86_64,s390x}.p11: one run each, same client."""
    with tempfile.TemporaryDirectory(prefix="p11spy-cross-") as tmp:
        for arch in (NATIVE, ARCHES["s390x"]):
            done, trace = run_client(arch, Path(tmp) / arch.name)
            if done.returncode != 0:
                raise SystemExit(f"{arch.name}: the client failed:\n{done.stdout}{done.stderr}")
            shutil.copyfile(trace, dest / trace.name)
            print(f"wrote {dest / trace.name}")


def main() -> int:
    """Makes every architecture's sysroot (the shims are built by `make shim`); with
    `--record DIR`, records the cross fixtures into DIR instead."""
    if sys.argv[1:2] == ["--record"]:
        record(Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "fixtures" / "p11spy")
        return 0
    for arch in ARCHES.values():
        print(f"{arch.name}: {make_sysroot(arch).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
