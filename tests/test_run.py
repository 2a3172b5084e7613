"""`p11spy run` with real clients over SoftHSM2: no shim path anywhere, the spy is preloaded.

Each client is configured only as a user has it: pkcs11-tool and python-pkcs11 are given
/usr/lib/softhsm/libsofthsm2.so, p11tool takes its modules from p11-kit's registry, NSS certutil
from its database, keytool from a SunPKCS11 config file. Each command runs twice, each time on
its own copy of the prepared token of test_clients.py (PIN 48151623, key pair and certificate
k1/01): directly, and as `p11spy run -o <tmp>/<name>-%p.p11 -- COMMAND...`. Both must print the
same and exit the same; the only extra output of the run is its own last line on stderr,
`p11spy: N trace(s): PATHS`, which must name exactly the trace files that were written. The
traces must then show the client's calls to SoftHSM2, with the PINs masked and absent from the
bytes of the files.

What is normalised between the two runs, and only that: each copy's work directory (its path
differs), in case a client prints it. None of these commands does; nothing else is rewritten.

Both runs of every command get PCSCLITE_CSOCK_NAME pointing at a socket that does not exist:
p11tool loads OpenSC from the p11-kit registry, and OpenSC asks pcscd for readers. The station
that someone else builds may run a pcscd with virtual cards coming and going; this keeps both
runs away from it (OpenSC then finds no service, the same in both runs, and the run's trace
shows that SCardEstablishContext).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from p11spy.decoder.events import Call, Event, ModuleInfo, PcscCall, Process
from tests import test_clients as tc
from tests.conftest import SOFTHSM_MODULE, Token, read_trace
from tests.test_clients import DATA, PIN, WRONG_PIN, Command, need, ok

P11SPY = str(Path(sys.executable).parent / "p11spy")
TIMEOUT = tc.TIMEOUT  # seconds, for any one command
# The prepared token of test_clients.py (module scope): every random thing made before copies.
prepared = tc.prepared
URL = "pkcs11:token=p11spy-test"  # the prepared token, as p11tool's URLs name it
MESSAGE = re.compile(r"p11spy: (\d+) trace\(s\): (.+)\n\Z")
NO_TRACE = "p11spy: no trace: the command loaded no PKCS#11 module and used no reader\n"
P11KIT_SOFTHSM = Path("/usr/share/p11-kit/modules/softhsm2.module")
# Bug: the spy's own lookups of C_GetInterfaceList / C_GetInterface leave their failure in
# dlerror() after the client's successful dlsym of C_GetFunctionList (PKCS#11 2.x modules).
DLERROR_BUG = ("p11spy run: after dlsym(h, \"C_GetFunctionList\") on a module without "
               "C_GetInterface (SoftHSM2), dlerror() returns \"undefined symbol: "
               "C_GetInterface\" from the spy's own lookups in p11_module_of; the JDK checks "
               "dlerror() and SunPKCS11 fails with ProviderException: Initialization failed")


# --- running p11spy run ---------------------------------------------------------------------

@dataclass
class Spied:
    """A command run under `p11spy run`: its result with the run's own line taken off stderr,
    that line, and the trace files it names."""

    result: subprocess.CompletedProcess
    message: str
    traces: list[Path]

    def events(self) -> list[Event]:
        return [e for p in self.traces for e in read_trace(p)]

    def calls(self) -> list[Call]:
        return [e for e in self.events() if isinstance(e, Call)]

    def loaded(self) -> list[str]:
        """The modules the spy wrapped (ModuleInfo "loaded"), in every process."""
        return [e.info["loaded"] for e in self.events()
                if isinstance(e, ModuleInfo) and e.info.get("loaded")]


def p11spy_run(cmd: list[str], env: dict[str, str], *opts: str) -> subprocess.CompletedProcess:
    return subprocess.run([P11SPY, "run", *opts, "--", *cmd], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def split_message(stderr: str) -> tuple[str, str, list[Path]]:
    """The command's own stderr, and the run's `p11spy: N trace(s): PATHS` line with the paths
    it names: that line must be the last one, whole, and its count must match."""
    m = MESSAGE.search(stderr)
    assert m, f"no `p11spy: N trace(s): ...` last line on stderr:\n{stderr}"
    assert m.start() == 0 or stderr[m.start() - 1] == "\n", stderr
    paths = [Path(p) for p in m.group(2).split(" ")]
    assert int(m.group(1)) == len(paths), m.group(0)
    return stderr[:m.start()], m.group(0), paths


def spy(cmd: list[str], env: dict[str, str], output: Path, *opts: str) -> Spied:
    """cmd under `p11spy run -o output`: the run's line is checked against the files the
    pattern produced (output's folder holds nothing else) and taken off stderr."""
    res = p11spy_run(cmd, env, "-o", str(output), *opts)
    rest, message, paths = split_message(res.stderr)
    assert all(p.is_file() for p in paths), message
    written = sorted(output.parent.glob(output.name.replace("%p", "*")))
    assert sorted(paths) == written, (message, written)
    assert "p11spy: " not in rest, rest  # the spy itself never complains on the client's stderr
    return Spied(subprocess.CompletedProcess(res.args, res.returncode, res.stdout, rest),
                 message, paths)


def no_pcscd(d: Path) -> dict[str, str]:
    """Keeps OpenSC (loaded by p11tool from the registry) off any pcscd: see the docstring."""
    return {"PCSCLITE_CSOCK_NAME": str(d / "no-pcscd.comm")}


# --- one client, directly and under run -----------------------------------------------------

@dataclass
class Pair:
    """A client's commands run directly on copy a and under `p11spy run` on copy b."""

    direct: dict[str, subprocess.CompletedProcess] = field(default_factory=dict)
    spied: dict[str, Spied] = field(default_factory=dict)
    dirs: dict[str, Path] = field(default_factory=dict)

    def calls(self, name: str) -> list[Call]:
        return self.spied[name].calls()

    def differences(self) -> list[str]:
        """Every way a command's run under p11spy differs from its direct run."""
        found = []
        for name, d in self.direct.items():
            s = self.spied[name].result
            if d.returncode != s.returncode:
                found.append(f"{name}: exit status {d.returncode} directly, {s.returncode} "
                             "under p11spy run")
            for stream in ("stdout", "stderr"):
                dt = getattr(d, stream).replace(str(self.dirs["a"]), "<dir>")
                st = getattr(s, stream).replace(str(self.dirs["b"]), "<dir>")
                if dt != st:
                    found.append(f"{name} {stream}:\n--- direct\n{dt}--- under p11spy run\n{st}")
        return found


Setup = Callable[[Token, Path], None]


def run_pair(prepared: Token, root: Path, commands: dict[str, Command],
             env_for: Callable[[str, Path], dict[str, str]] | None = None,
             opts: tuple[str, ...] = (), setup: Setup | None = None) -> Pair:
    """Copies the prepared token to root/a and root/b (setup then prepares each copy's work
    directory as a user would), and runs each command in order on a directly and on b under
    `p11spy run OPTS -o root/traces/NAME-%p.p11`. Commands get the real module's path."""
    pair = Pair()
    copies = {}
    for side in ("a", "b"):
        copies[side] = prepared.copy(root / side)
        pair.dirs[side] = root / side
        if setup:
            setup(copies[side], pair.dirs[side])

    def env(side: str, name: str) -> dict[str, str]:
        d = pair.dirs[side]
        extra = env_for(name, d) if env_for else {}
        base = {k: v for k, v in copies[side].env.items()
                if not k.startswith(("P11SPY_", "PKCS11SPY")) and k != "LD_PRELOAD"}
        return {**base, **no_pcscd(d), **extra}

    for name, cmd in commands.items():
        pair.direct[name] = tc.execute(cmd(SOFTHSM_MODULE, pair.dirs["a"]), env("a", name))
    for name, cmd in commands.items():
        traces = root / "traces" / name
        traces.mkdir(parents=True)
        pair.spied[name] = spy(cmd(SOFTHSM_MODULE, pair.dirs["b"]), env("b", name),
                               traces / f"{name}-%p.p11", *opts)
    return pair


def assert_pins_masked(pair: Pair, *names: str) -> None:
    """Every C_Login of these commands has its PIN masked (length 8), and no PIN, right or
    wrong, is anywhere in the bytes of any trace file of the pair."""
    for name in names:
        logins = [c for c in pair.calls(name) if c.function == "C_Login"]
        assert logins, f"{name}: no C_Login in the trace"
        for c in logins:
            assert c.args["pPin"]["masked"] is True, c.args
            assert c.args["pPin"]["length"] == len(PIN)
    for s in pair.spied.values():
        for p in s.traces:
            data = p.read_bytes()
            for pin in (PIN, WRONG_PIN):
                assert pin.encode() not in data, f"PIN {pin} in clear in {p}"


def assert_only_softhsm(pair: Pair, path: str = SOFTHSM_MODULE) -> None:
    """Each command's trace is one file from one process, which wrapped SoftHSM2 only."""
    for name, s in pair.spied.items():
        assert len(s.traces) == 1, (name, s.message)
        assert s.loaded() == [path], (name, s.loaded())
        header = next(e for e in s.events() if isinstance(e, Process))
        assert header.info["secrets"] is False


def login_rvs(calls: list[Call]) -> list[str | None]:
    return [c.rv_name for c in calls if c.function == "C_Login"]


# --- pkcs11-tool (OpenSC) -------------------------------------------------------------------

PKCS11_TOOL = {k: tc.PKCS11_TOOL[k] for k in ("list-slots", "wrong-pin", "list-objects", "sign")}


def _data_file(tok: Token, d: Path) -> None:
    (d / "data").write_bytes(DATA)


@pytest.fixture(scope="module")
def pkcs11_tool(prepared: Token, tmp_path_factory: pytest.TempPathFactory) -> Pair:
    need("pkcs11-tool", "opensc")
    return run_pair(prepared, tmp_path_factory.mktemp("run-pkcs11-tool"), PKCS11_TOOL,
                    setup=_data_file)


def test_pkcs11_tool_same_under_run(pkcs11_tool: Pair) -> None:
    """-L, a wrong PIN, -O with the right PIN and a signature print the same and exit the
    same under `p11spy run`; the signature files are equal."""
    d = pkcs11_tool.direct
    assert "token label        : p11spy-test" in d["list-slots"].stdout
    assert d["wrong-pin"].returncode != 0 and "CKR_PIN_INCORRECT" in d["wrong-pin"].stderr
    assert d["list-objects"].returncode == 0 and "label:      k1" in d["list-objects"].stdout
    assert d["sign"].returncode == 0, d["sign"].stderr
    assert pkcs11_tool.differences() == []
    sig = (pkcs11_tool.dirs["a"] / "sig").read_bytes()
    assert len(sig) == 256 and (pkcs11_tool.dirs["b"] / "sig").read_bytes() == sig


def test_pkcs11_tool_trace(pkcs11_tool: Pair) -> None:
    """The trace wrapped /usr/lib/softhsm/libsofthsm2.so, the path the client dlopened, and
    has the failed then the good C_Login and the C_Sign of the very signature written."""
    assert_only_softhsm(pkcs11_tool)
    assert ok(pkcs11_tool.calls("list-slots"), "C_GetTokenInfo")
    assert login_rvs(pkcs11_tool.calls("wrong-pin")) == ["CKR_PIN_INCORRECT"]
    assert login_rvs(pkcs11_tool.calls("list-objects")) == ["CKR_OK"]
    assert ok(pkcs11_tool.calls("list-objects"), "C_FindObjects")
    signs = ok(pkcs11_tool.calls("sign"), "C_Sign")
    assert len(signs) == 1 and bytes.fromhex(signs[0].args["pData"]) == DATA
    assert bytes.fromhex(signs[0].args["pSignature"]) == (
        pkcs11_tool.dirs["b"] / "sig").read_bytes()
    assert_pins_masked(pkcs11_tool, "wrong-pin", "list-objects", "sign")


# --- python-pkcs11 --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def python_pkcs11(prepared: Token, tmp_path_factory: pytest.TempPathFactory) -> Pair:
    pytest.importorskip("pkcs11", reason="python-pkcs11 is not in the venv: run `make setup`")
    # tests/clients/pp11_session.py with the venv's python: pkcs11.lib(<real module>).
    return run_pair(prepared, tmp_path_factory.mktemp("run-python-pkcs11"),
                    {"session": tc._python_session})


def test_python_pkcs11_same_under_run(python_pkcs11: Pair) -> None:
    """Library and token information, a wrong PIN, the objects, a signature and an AES round
    trip come out the same under `p11spy run`."""
    d = python_pkcs11.direct["session"]
    assert d.returncode == 0, d.stderr
    assert "wrong PIN: PinIncorrect" in d.stdout and "roundtrip True" in d.stdout
    assert python_pkcs11.differences() == []


def test_python_pkcs11_trace(python_pkcs11: Pair) -> None:
    """The python process's trace wrapped SoftHSM2: C_Login failing then succeeding, and the
    C_Sign of the signature the script printed."""
    assert_only_softhsm(python_pkcs11)
    calls = python_pkcs11.calls("session")
    assert login_rvs(calls) == ["CKR_PIN_INCORRECT", "CKR_OK"]
    printed = next(line for line in python_pkcs11.spied["session"].result.stdout.splitlines()
                   if line.startswith("signature "))
    assert [c.args["pSignature"] for c in ok(calls, "C_Sign")] == [printed.split()[2]]
    assert ok(calls, "C_GenerateKey") and ok(calls, "C_Encrypt") and ok(calls, "C_Decrypt")
    assert_pins_masked(python_pkcs11, "session")


# --- GnuTLS p11tool, modules from p11-kit's registry ----------------------------------------

def _p11tool(*args: str) -> Command:
    return lambda module, d: ["p11tool", *args]  # no --provider: p11-kit's registry


P11TOOL: dict[str, Command] = {
    "list-tokens": _p11tool("--list-tokens"),
    "wrong-pin": _p11tool("--batch", "--login", "--list-all-privkeys", URL),
    "list-privkeys": _p11tool("--batch", "--login", "--list-all-privkeys", URL),
}


def _registered_softhsm() -> str:
    """The module path p11-kit loads SoftHSM2 from (Debian's registry file names it)."""
    for line in P11KIT_SOFTHSM.read_text().splitlines():
        if line.startswith("module:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no module: line in {P11KIT_SOFTHSM}")


def _p11tool_pair(prepared: Token, root: Path, opts: tuple[str, ...]) -> Pair:
    need("p11tool", "gnutls-bin")
    if not P11KIT_SOFTHSM.is_file():
        pytest.skip(f"{P11KIT_SOFTHSM} is missing: the softhsm2 package registers it")
    return run_pair(prepared, root, P11TOOL,
                    lambda name, d: {"GNUTLS_PIN": WRONG_PIN if name == "wrong-pin" else PIN},
                    opts)


@pytest.fixture(scope="module")
def p11tool_all(prepared: Token, tmp_path_factory: pytest.TempPathFactory) -> Pair:
    return _p11tool_pair(prepared, tmp_path_factory.mktemp("run-p11tool"), ())


@pytest.fixture(scope="module")
def p11tool_softhsm(prepared: Token, tmp_path_factory: pytest.TempPathFactory) -> Pair:
    return _p11tool_pair(prepared, tmp_path_factory.mktemp("run-p11tool-module"),
                         ("--module", "libsofthsm2.so"))


@pytest.mark.parametrize("which", ["p11tool_all", "p11tool_softhsm"])
def test_p11tool_same_under_run(which: str, request: pytest.FixtureRequest) -> None:
    """The token list (every registered module's tokens), and the private keys after a wrong
    then a right GNUTLS_PIN, are the same under `p11spy run`, with or without --module."""
    pair: Pair = request.getfixturevalue(which)
    d = pair.direct
    assert d["list-tokens"].returncode == 0 and "token=p11spy-test" in d["list-tokens"].stdout
    assert d["wrong-pin"].returncode != 0
    assert d["list-privkeys"].returncode == 0 and "type=private" in d["list-privkeys"].stdout
    assert pair.differences() == []


def test_p11tool_traces_every_registered_module(p11tool_all: Pair) -> None:
    """Without --module, every module p11-kit loaded is wrapped: SoftHSM2 (by the path in its
    registry file), OpenSC and p11-kit-trust; OpenSC's SCardEstablishContext is recorded."""
    softhsm = _registered_softhsm()
    assert os.path.realpath(softhsm) == os.path.realpath(SOFTHSM_MODULE)
    for name, s in p11tool_all.spied.items():
        assert len(s.traces) == 1, (name, s.message)
        loaded = s.loaded()
        assert len(loaded) >= 3 and len(set(loaded)) == len(loaded), loaded
        assert softhsm in loaded, loaded
        assert {Path(p).name for p in loaded} >= {"libsofthsm2.so", "opensc-pkcs11.so",
                                                  "p11-kit-trust.so"}, loaded
        pcsc = [e for e in s.events() if isinstance(e, PcscCall)]
        assert any(e.function == "SCardEstablishContext" for e in pcsc), pcsc
    assert ok(p11tool_all.calls("list-tokens"), "C_GetTokenInfo")
    wrong = login_rvs(p11tool_all.calls("wrong-pin"))
    assert wrong and set(wrong) == {"CKR_PIN_INCORRECT"}
    good = login_rvs(p11tool_all.calls("list-privkeys"))
    assert good and set(good) == {"CKR_OK"}
    # Each module got its own calls, and the logins and key searches went to SoftHSM2.
    for name in ("wrong-pin", "list-privkeys"):
        calls = p11tool_all.calls(name)
        assert {c.module for c in calls if c.function == "C_Initialize"} == \
            set(p11tool_all.spied[name].loaded())
        for c in calls:
            if c.function in ("C_Login", "C_FindObjects"):
                assert c.module == softhsm, c
        decoded = subprocess.run([P11SPY, "decode", "--json", "--function", "C_Login",
                                  *map(str, p11tool_all.spied[name].traces)],
                                 capture_output=True, text=True, check=True).stdout
        assert {json.loads(line)["module"] for line in decoded.splitlines()} == {softhsm}
    assert_pins_masked(p11tool_all, "wrong-pin", "list-privkeys")


def test_p11tool_module_option_traces_softhsm_only(p11tool_softhsm: Pair) -> None:
    """With `--module libsofthsm2.so` (a file name), exactly one module is wrapped: SoftHSM2,
    loaded by p11-kit from its registry path; the logins are in its trace. OpenSC, which
    p11-kit loads too, is not traced, and neither are its PC/SC calls."""
    assert_only_softhsm(p11tool_softhsm, _registered_softhsm())
    for s in p11tool_softhsm.spied.values():
        assert not [e for e in s.events() if isinstance(e, PcscCall)]
    wrong = login_rvs(p11tool_softhsm.calls("wrong-pin"))
    assert wrong and set(wrong) == {"CKR_PIN_INCORRECT"}
    good = login_rvs(p11tool_softhsm.calls("list-privkeys"))
    assert good and set(good) == {"CKR_OK"}
    assert ok(p11tool_softhsm.calls("list-privkeys"), "C_FindObjects")
    assert_pins_masked(p11tool_softhsm, "wrong-pin", "list-privkeys")


# --- NSS certutil, the module in its database -----------------------------------------------

def _nss_db(tok: Token, d: Path) -> None:
    """An NSS database with SoftHSM2 added to it, as a user sets one up; and the PIN files
    certutil's -f reads."""
    need("certutil", "libnss3-tools")
    need("modutil", "libnss3-tools")
    db = d / "nssdb"
    db.mkdir()
    tc.check(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], tok.env)
    tc.check(["modutil", "-dbdir", f"sql:{db}", "-add", "softhsm", "-libfile", SOFTHSM_MODULE,
              "-force"], tok.env)
    (d / "pin.txt").write_text(PIN + "\n")
    (d / "wrong.txt").write_text(WRONG_PIN + "\n")


def _certutil(*args: str, pin: str | None = None) -> Command:
    def cmd(module: str, d: Path) -> list[str]:
        return ["certutil", "-d", f"sql:{d / 'nssdb'}", *args,
                *(["-f", str(d / pin)] if pin else [])]

    return cmd


CERTUTIL: dict[str, Command] = {
    "list-tokens": _certutil("-U"),
    "list-certs": _certutil("-L", "-h", "all"),
    "wrong-pin": _certutil("-K", "-h", "p11spy-test", pin="wrong.txt"),
    "list-keys": _certutil("-K", "-h", "p11spy-test", pin="pin.txt"),
}


@pytest.fixture(scope="module")
def certutil(prepared: Token, tmp_path_factory: pytest.TempPathFactory) -> Pair:
    return run_pair(prepared, tmp_path_factory.mktemp("run-certutil"), CERTUTIL,
                    setup=_nss_db)


def test_certutil_same_under_run(certutil: Pair) -> None:
    """The token list, the certificates of all tokens, and the keys after a wrong then a
    right PIN are the same under `p11spy run`."""
    d = certutil.direct
    assert d["list-tokens"].returncode == 0 and "token: p11spy-test" in d["list-tokens"].stdout
    assert d["list-certs"].returncode == 0 and "p11spy-test:k1" in d["list-certs"].stdout
    assert d["wrong-pin"].returncode != 0
    assert d["list-keys"].returncode == 0 and "k1" in d["list-keys"].stdout
    assert certutil.differences() == []


def test_certutil_trace(certutil: Pair) -> None:
    """Only SoftHSM2 is traced. NSS's own softoken (libsoftokn3: the internal "NSS Certificate
    DB" and "NSS Generic Crypto Services" tokens) is internal to NSS, which finds it by its
    NSC_ (FC_ in FIPS mode) entry points, not C_GetFunctionList / C_GetInterface: the spy does
    not wrap it, by design. SoftHSM2's trace has its token information, the certificate search
    and the logins."""
    assert_only_softhsm(certutil)
    assert ok(certutil.calls("list-tokens"), "C_GetTokenInfo")
    assert ok(certutil.calls("list-certs"), "C_FindObjects")
    wrong = login_rvs(certutil.calls("wrong-pin"))
    assert wrong and set(wrong) == {"CKR_PIN_INCORRECT"}
    assert login_rvs(certutil.calls("list-keys")) == ["CKR_OK"]
    assert_pins_masked(certutil, "wrong-pin", "list-keys")


# --- Java keytool (SunPKCS11) ---------------------------------------------------------------

def _keytool(pin: str) -> Command:
    return lambda module, d: tc.keytool_list(module, pin, d, "P11Run")


@pytest.fixture(scope="module")
def keytool(prepared: Token, tmp_path_factory: pytest.TempPathFactory) -> Pair:
    need("keytool", "openjdk-17-jdk-headless")
    return run_pair(prepared, tmp_path_factory.mktemp("run-keytool"),
                    {"wrong-pin": _keytool(WRONG_PIN), "list": _keytool(PIN)})


def test_keytool_same_under_run(keytool: Pair) -> None:
    """keytool -list on the token, and its failure with a wrong PIN, are the same under
    `p11spy run`."""
    d = keytool.direct
    assert d["list"].returncode == 0, d["list"].stdout + d["list"].stderr
    assert "k1, PrivateKeyEntry" in d["list"].stdout
    assert d["wrong-pin"].returncode != 0
    assert keytool.differences() == []


def test_keytool_trace(keytool: Pair) -> None:
    """The JVM's trace wrapped SoftHSM2 and has C_Login failing, then succeeding, and the
    object searches that found the key and the certificate."""
    assert_only_softhsm(keytool)
    wrong = login_rvs(keytool.calls("wrong-pin"))
    assert wrong and set(wrong) == {"CKR_PIN_INCORRECT"}
    calls = keytool.calls("list")
    assert login_rvs(calls) == ["CKR_OK"]
    assert any(c.args["phObject"] for c in ok(calls, "C_FindObjects"))
    assert_pins_masked(keytool, "wrong-pin", "list")


# The JDK's loader (libj2pkcs11, p11_md.c) does what POSIX recommends: dlerror(), then
# dlsym(C_GetFunctionList), then dlerror() must be NULL. This is that sequence on its own.
DLERROR_PROBE = """
import ctypes, os, sys
libc = ctypes.CDLL(None)
dlopen, dlsym, dlerror = libc.dlopen, libc.dlsym, libc.dlerror
dlopen.restype = dlsym.restype = ctypes.c_void_p
dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
dlsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
dlerror.restype = ctypes.c_char_p
h = dlopen(sys.argv[1].encode(), os.RTLD_NOW)
dlerror()
f = dlsym(h, b"C_GetFunctionList")
e = dlerror()
print("found" if f else "NULL", e.decode() if e else "no error")
"""


def test_dlerror_clear_after_a_successful_dlsym(token: Token, tmp_path: Path) -> None:
    """The cause of keytool's failure, on its own: under the spy, a successful dlsym leaves
    dlerror() as it leaves it without the spy (no error)."""
    cmd = [sys.executable, "-c", DLERROR_PROBE, SOFTHSM_MODULE]
    direct = tc.execute(cmd, token.env)
    assert direct.stdout == "found no error\n", direct.stdout + direct.stderr
    s = spy(cmd, token.env, tmp_path / "t-%p.p11")
    assert s.loaded() == [SOFTHSM_MODULE]
    assert s.result.stdout == direct.stdout


# --- the run itself: status, errors, where the traces go ------------------------------------

def plain_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("P11SPY_", "PKCS11SPY")) and k != "LD_PRELOAD"}


@pytest.mark.parametrize(("script", "direct", "status", "said"), [
    ("exit 0", 0, 0, ""), ("exit 3", 3, 3, ""), ("exit 255", 255, 255, ""),
    ("kill -TERM $$", -15, 128 + 15, "p11spy run: client killed by SIGTERM\n"),
    ("kill -KILL $$", -9, 128 + 9, "p11spy run: client killed by SIGKILL\n"),
    ("kill -SEGV $$", -11, 128 + 11, "p11spy run: client killed by SIGSEGV\n"),
    ("kill -INT $$", -2, 128 + 2, ""),  # as a shell, which says nothing for SIGINT either
])
def test_exit_status_is_the_commands(script: str, direct: int, status: int, said: str,
                                     tmp_path: Path) -> None:
    """The run exits with the command's status, 128+N for a command killed by signal N, and
    names the signal in one line as a shell does; a shell loads no PKCS#11 module, so no
    trace is left and the last line says so."""
    assert subprocess.run(["sh", "-c", script], timeout=TIMEOUT).returncode == direct
    res = p11spy_run(["sh", "-c", script], plain_env(), "-o", str(tmp_path / "t-%p.p11"))
    assert res.returncode == status
    assert res.stderr == said + NO_TRACE and res.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_output_and_input_pass_through(tmp_path: Path) -> None:
    """The command's stdout and stderr are its own, byte for byte, with the run's line last."""
    script = "printf 'out\\n'; printf 'err\\n' >&2; printf 'more'"
    res = p11spy_run(["sh", "-c", script], plain_env(), "-o", str(tmp_path / "t-%p.p11"))
    assert res.returncode == 0
    assert res.stdout == "out\nmore" and res.stderr == "err\n" + NO_TRACE


def test_a_program_that_loads_other_libraries_leaves_no_trace(tmp_path: Path) -> None:
    """Python loading extension modules and a shared library by dlopen/dlsym (no PKCS#11 entry
    point among them) leaves no trace file, and the line says so."""
    code = "import ctypes, ssl, zlib; ctypes.CDLL('libz.so.1').zlibVersion; print('ok')"
    res = p11spy_run([sys.executable, "-c", code], plain_env(), "-o",
                     str(tmp_path / "t-%p.p11"))
    assert (res.returncode, res.stdout, res.stderr) == (0, "ok\n", NO_TRACE)
    assert list(tmp_path.iterdir()) == []


def test_module_option_no_matching_module_leaves_no_trace(token: Token, tmp_path: Path) -> None:
    """With --module naming a module the client does not load, nothing is traced: no file,
    and the line says so, naming the module the client did load."""
    need("pkcs11-tool", "opensc")
    cmd = ["pkcs11-tool", "--module", SOFTHSM_MODULE, "-L"]
    out = tmp_path / "traces"
    out.mkdir()
    res = p11spy_run(cmd, token.env, "--module", "libnothing.so", "-o", str(out / "t-%p.p11"))
    assert res.returncode == 0 and "p11spy-test" in res.stdout
    assert res.stderr == ("p11spy: no trace: --module libnothing.so matched none of the "
                          f"modules loaded: {SOFTHSM_MODULE}\n")
    assert list(out.iterdir()) == []


def test_command_not_found_is_one_line_and_127(tmp_path: Path) -> None:
    for cmd in ("p11spy-no-such-command", str(tmp_path / "missing")):
        res = p11spy_run([cmd, "-L"], plain_env(), "-o", str(tmp_path / "t-%p.p11"))
        assert res.returncode == 127, res.stderr
        assert res.stderr.count("\n") == 1 and res.stdout == ""
        assert f"cannot run {cmd}: No such file or directory" in res.stderr
        assert "Traceback" not in res.stderr


@pytest.mark.parametrize("argv", [["run"], ["run", "--"], ["run", "-o", "/tmp/x-%p", "--"]])
def test_no_command_is_a_one_line_usage_error(argv: list[str]) -> None:
    res = subprocess.run([P11SPY, *argv], capture_output=True, text=True, timeout=TIMEOUT,
                         env=plain_env())
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "no command given" in res.stderr
    assert "p11spy run [-o OUTPUT] [--module PATH] -- COMMAND..." in res.stderr


@pytest.mark.parametrize("argv", [["run", "--"], ["run", "--", "p11spy-no-such-command"]])
def test_run_errors_name_the_subcommand(argv: list[str], tmp_path: Path) -> None:
    argv = [*argv[:1], "-o", str(tmp_path / "t-%p.p11"), *argv[1:]]
    res = subprocess.run([P11SPY, *argv], capture_output=True, text=True, timeout=TIMEOUT,
                         env=plain_env())
    assert res.stderr.startswith("p11spy run: "), res.stderr


@pytest.mark.parametrize("cmd", [["sh", "-c", "exit 0"], ["p11spy-no-such-command"]])
def test_default_output_no_trace_leaves_no_folder(cmd: list[str]) -> None:
    top = Path(f"/tmp/p11spy-{os.getuid()}")
    before = set(top.iterdir()) if top.is_dir() else set()
    try:
        res = p11spy_run(cmd, plain_env())
        assert res.returncode in (0, 127), res.stderr
        assert (set(top.iterdir()) if top.is_dir() else set()) == before
    finally:
        for new in (set(top.iterdir()) if top.is_dir() else set()) - before:
            try:
                new.rmdir()  # only an empty one: never a folder someone is writing to
            except OSError:
                pass


def test_log_secrets_records_the_pin(prepared: Token, tmp_path: Path) -> None:
    """--log-secrets: the PIN is in the trace in clear, and the header says secrets true."""
    need("pkcs11-tool", "opensc")
    tok = prepared.copy(tmp_path / "copy")
    cmd = ["pkcs11-tool", "--module", SOFTHSM_MODULE, "--login", "--pin", PIN, "-O"]
    s = spy(cmd, {**tok.env, **no_pcscd(tmp_path)}, tmp_path / "t-%p.p11", "--log-secrets")
    assert s.result.returncode == 0, s.result.stderr
    header = next(e for e in s.events() if isinstance(e, Process))
    assert header.info["secrets"] is True
    logins = [c for c in s.calls() if c.function == "C_Login"]
    assert [c.args["pPin"] for c in logins] == [PIN.encode().hex()]
    assert PIN.encode() in s.traces[0].read_bytes()


def test_default_output_is_a_new_folder(token: Token) -> None:
    """Without -o the traces go to a new folder /tmp/p11spy-<uid>/run-<time>[-n]/, named
    <program>-<pid>.p11, which the line names; folder 0700, file 0600. Two runs in the same
    second get two folders."""
    need("pkcs11-tool", "opensc")
    top = Path(f"/tmp/p11spy-{os.getuid()}")
    top_existed = top.exists()
    made: list[Path] = []
    try:
        for _ in range(2):
            res = p11spy_run(["pkcs11-tool", "--module", SOFTHSM_MODULE, "-L"], token.env)
            _, message, paths = split_message(res.stderr)
            assert res.returncode == 0 and "p11spy-test" in res.stdout
            assert len(paths) == 1, message
            path = paths[0]
            made.append(path.parent)
            assert path.parent.parent == top
            assert re.fullmatch(r"run-\d{8}-\d{6}(-\d+)?", path.parent.name), path
            assert re.fullmatch(r"pkcs11-tool-\d+\.p11", path.name), path
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert list(path.parent.iterdir()) == [path]
            assert [e.info["loaded"] for e in read_trace(path)
                    if isinstance(e, ModuleInfo) and e.info.get("loaded")] == [SOFTHSM_MODULE]
        assert made[0] != made[1]
    finally:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)
        if not top_existed:
            try:
                top.rmdir()
            except OSError:
                pass  # something else put a trace there meanwhile: not ours to remove


def test_output_in_missing_folder_is_refused_before_the_client_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    res = p11spy_run(["touch", str(marker)], plain_env(), "-o",
                     str(tmp_path / "no-such-dir" / "t-%p.p11"))
    assert res.returncode == 2 and not marker.exists()
    assert res.stderr == (f"p11spy run: -o {tmp_path}/no-such-dir/t-%p.p11: folder "
                          f"{tmp_path}/no-such-dir does not exist\n")
