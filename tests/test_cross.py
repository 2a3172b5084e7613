"""The shim on other machines: s390x (big-endian), aarch64 and ppc64le, under qemu-user.

A C client built for each architecture drives Debian's own SoftHSM2 for that architecture
through that architecture's shim; its trace, decoded here, must hold the same calls, values
and return codes as the trace of the same client run natively. `make setup` prepares the
sysroots and the cross-built shims (testbed/cross.py); `make test-cross` runs only these.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from p11spy.decoder.events import Call, ModuleInfo, Process
from p11spy.decoder.formats.p11spy import masker, reader
from p11spy.decoder.masking import Options
from testbed import cross
from tests.conftest import read_trace
from tests.rows import same
from tests.test_shim_standalone import GLIBC_BASELINE, LIBC_ONLY, dynamic, glibc_versions

# What legitimately differs between two runs of the client, on one machine or two: the
# token's random serial number and clock, and the random bytes.
VARYING = {"serialNumber", "utcTime", "RandomData"}
SHIMS = ("libp11spy.so", "libp11spy-2.so", "libp11spy-preload.so")
ARCHES = [pytest.param(a, id=a.name) for a in cross.ARCHES.values()]


def ready(arch: cross.Arch) -> None:
    why = cross.missing(arch)
    if why:
        pytest.skip(why)


def scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<varies>" if k in VARYING else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def run_client(arch: cross.Arch, root: Path, preload: bool = False) -> tuple[str, list]:
    """The client's transcript and the decoded trace, on a fresh token of its own."""
    done, trace = cross.run_client(arch, root, preload=preload)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.endswith("0 unexpected\n"), done.stdout
    return done.stdout, read_trace(trace)


@pytest.fixture(scope="module")
def native(tmp_path_factory) -> tuple[str, list]:
    return run_client(cross.NATIVE, tmp_path_factory.mktemp("native"))


def calls(events: list) -> list:
    """What must match call by call: function, return code, arguments less what varies."""
    return [(c.function, c.rv, c.rv_name, c.length_query, scrub(c.args))
            for c in events if isinstance(c, Call)]


@pytest.mark.parametrize("arch", ARCHES)
def test_cross_shims_need_only_libc_and_glibc_2_17(arch):
    ready(arch)
    for name in SHIMS:
        path = arch.shim_dir / name
        dyn = dynamic(path)
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
        assert "libc.so.6" in needed, name
        assert [n for n in needed if not LIBC_ONLY.match(n)] == [], name
        assert "RPATH" not in dyn and "RUNPATH" not in dyn, name
        assert max(glibc_versions(path)) <= GLIBC_BASELINE, name
        header = subprocess.run(["readelf", "-h", str(path)], check=True, capture_output=True,
                                text=True).stdout
        assert ("big endian" in header) == arch.big_endian, name


@pytest.mark.parametrize("arch", ARCHES)
def test_foreign_trace_decodes_to_the_native_calls(arch, native, tmp_path):
    ready(arch)
    native_out, native_events = native
    out, events = run_client(arch, tmp_path)
    assert out == native_out  # the client saw the same through the shim on both machines

    process = next(e for e in events if isinstance(e, Process))
    assert process.info["byte_order"] == ("big" if arch.big_endian else "little")
    assert process.info["ulong_size"] == 8
    assert process.info["exe"].endswith(f"/{arch.name}/cross_client")
    assert process.host == os.uname().nodename  # qemu-user passes uname through
    strict = io.BytesIO()  # --strict masks the host of a trace in either byte order
    with (tmp_path / f"cross-{arch.name}.p11").open("rb") as f:
        masker.redact(f, strict, Options(strict=True), lambda _finding: None)
    masked = next(e for e in reader.read(io.BytesIO(strict.getvalue())) if isinstance(e, Process))
    assert masked.host == "*" * len(process.host)

    want, got = calls(native_events), calls(events)
    assert len(got) == len(want) >= 35
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"call {i} ({w[0]}) differs"
    infos = [e.info for e in events if isinstance(e, ModuleInfo) and "manufacturerID" in e.info]
    assert infos == [e.info for e in native_events
                     if isinstance(e, ModuleInfo) and "manufacturerID" in e.info]
    # The values the comparison rests on, as the decoder shows them.
    by_name = {}
    for c in events:
        if isinstance(c, Call):
            by_name.setdefault(c.function, []).append(c)
    digest = by_name["C_Digest"][0].args["pDigest"]
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    gcm = by_name["C_EncryptInit"][0].args["pMechanism"]["parameter"]
    assert gcm["ulIvLen"] == 12 and gcm["ulTagBits"] == 128 and gcm["pAAD"] == b"head".hex()
    find = by_name["C_FindObjectsInit"][0].args["pTemplate"]
    assert find == [{"type": "CKA_CLASS", "len": 8, "value": "CKO_DATA"}]
    assert [c.rv_name for c in by_name["C_Login"]] == ["CKR_OK", "CKR_PIN_INCORRECT", "CKR_OK"]
    # decode --json of the foreign trace: the compiled decoder's where it takes the trace (a
    # little-endian writer's), the same rows as the Python reader's either way
    taken = same(tmp_path / f"cross-{arch.name}.p11")
    assert taken == (not arch.big_endian)


@pytest.mark.parametrize("arch", ARCHES)
def test_preloaded_spy_on_foreign_machine(arch, tmp_path):
    """The preloaded spy finds the foreign glibc's real dlsym, wraps the module the client
    loads itself, and records the same calls as the preloaded spy does here."""
    ready(arch)
    native_out, native_events = run_client(cross.NATIVE, tmp_path / "native", preload=True)
    out, events = run_client(arch, tmp_path / arch.name, preload=True)
    assert out == native_out
    want, got = calls(native_events), calls(events)
    assert len(got) == len(want) >= 35
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"call {i} ({w[0]}) differs"
