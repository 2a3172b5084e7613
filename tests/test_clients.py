"""Real clients through the shim: pkcs11-tool, python-pkcs11, GnuTLS p11tool and Java keytool.

Each client runs the same operations twice, once straight against SoftHSM2 and once through the
shim, each time on its own copy of one prepared token, and must print the same thing and exit
the same way. The trace of the shim run must then show what a user looks for in it: the calls
the client made, with their return values, and no PIN.

The shim a client is given is the one `p11spy lib` hands out for the real module (fixture
`shim_for`): SoftHSM2 is a PKCS#11 2.40 module without C_GetInterface, so that is the 2.x build,
which exports exactly the entry points SoftHSM2 has.

What is normalised between the two runs, and only that:
- the module path and the copy's directory: the only inputs that differ. None of these clients
  prints either for these operations, so nothing needed rewriting; `_normalise_path` is there so
  that a client that does print them would still compare.
- timestamps: none of the outputs carries one (p11tool's "Expires:" line is the date in the
  certificate stored on the token, the same in both copies).
- the order of pkcs11-tool's object listing after `--keypairgen`: SoftHSM2 keeps each object in a
  file with a random name chosen when the object is created, and lists objects in an order that
  follows those names. The two runs generate their key pairs separately, so the new objects have
  different names and can be listed in a different order; that listing is compared as a sorted
  list of object blocks. Every listing taken before a key is generated compares verbatim.
- key material of the generated key pair is not printed by pkcs11-tool, so nothing else of that
  output needed normalising.
"""

from __future__ import annotations

import difflib
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from p11spy.decoder.events import Call
from tests.conftest import REPO, SO_PIN, SOFTHSM_MODULE, Token, make_token, read_trace

CLIENTS = REPO / "tests" / "clients"
# A distinctive PIN: its ASCII bytes must not occur anywhere in a trace. "1234" could occur in
# binary data (a signature, a modulus) by chance; eight chosen digits will not.
PIN = "48151623"
WRONG_PIN = "27182818"
KEY_ID = "01"
KEY_LABEL = "k1"
DATA = b"p11spy client test data\n"
TIMEOUT = 60  # seconds, for any one client command (a 2048-bit key pair takes well under 5)


def need(tool: str, package: str) -> str:
    """The path of a client program, or a skip that names the Debian package to install."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed: install the Debian package {package} "
                    "(`make setup` does)")
    return path


def execute(cmd: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    """Runs a client with no terminal to prompt on: a missing PIN fails instead of hanging."""
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL, **kw)


def check(cmd: list[str], env: dict[str, str]) -> None:
    res = execute(cmd, env)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout}{res.stderr}"


def shim_env(tok: Token, output: Path, **extra: str) -> dict[str, str]:
    """The environment that sends a client through the shim to tok (as conftest's spy_env)."""
    env = {k: v for k, v in tok.env.items() if not k.startswith(("P11SPY_", "PKCS11SPY"))}
    env.update(P11SPY_MODULE=tok.module, P11SPY_OUTPUT=str(output), **extra)
    return env


# --- the prepared token ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Token:
    """A token with PIN 48151623 holding an RSA-2048 key pair and its self-signed certificate
    (ID 01, label k1). Everything random (the key) is made here, before any copy is taken."""
    need("pkcs11-tool", "opensc")
    need("openssl", "openssl")
    root = tmp_path_factory.mktemp("prepared")
    tok = make_token(root / "hsm")
    env = tok.env
    check(["softhsm2-util", "--init-token", "--token", tok.label, "--label", tok.label,
           "--so-pin", SO_PIN, "--pin", PIN], env)
    k = root / "key"
    k.mkdir()
    check(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
           str(k / "k.pem"), "-out", str(k / "c.pem"), "-subj", "/CN=p11spy-test",
           "-days", "10"], env)
    check(["openssl", "x509", "-in", str(k / "c.pem"), "-outform", "DER",
           "-out", str(k / "c.der")], env)
    check(["openssl", "pkey", "-in", str(k / "k.pem"), "-outform", "DER",
           "-out", str(k / "k.der")], env)
    check(["openssl", "pkey", "-in", str(k / "k.pem"), "-pubout", "-outform", "DER",
           "-out", str(k / "p.der")], env)
    for name, kind in (("k.der", "privkey"), ("p.der", "pubkey"), ("c.der", "cert")):
        check(["pkcs11-tool", "--module", tok.module, "--login", "--pin", PIN,
               "--write-object", str(k / name), "--type", kind, "--id", KEY_ID,
               "--label", KEY_LABEL], env)
    return tok


# --- running a client twice ------------------------------------------------------------------

@dataclass
class Runs:
    """One client's commands, run directly on copy a and through the shim on copy b."""

    direct: dict[str, subprocess.CompletedProcess] = field(default_factory=dict)
    spied: dict[str, subprocess.CompletedProcess] = field(default_factory=dict)
    traces: dict[str, list[Path]] = field(default_factory=dict)
    dirs: dict[str, Path] = field(default_factory=dict)  # "a", "b": each copy's work directory

    def calls(self, name: str) -> list[Call]:
        """The decoded calls of the shim run of one command (all its processes)."""
        return [e for p in self.traces[name] for e in read_trace(p) if isinstance(e, Call)]

    def raw(self) -> Iterator[tuple[Path, bytes]]:
        for paths in self.traces.values():
            for p in paths:
                yield p, p.read_bytes()


# A command: from the module path a client is given and the copy's work directory, its argv.
Command = Callable[[str, Path], list[str]]


def run_twice(prepared: Token, root: Path, shim: Path, commands: dict[str, Command],
              env_for: Callable[[str, Path], dict[str, str]] | None = None) -> Runs:
    """Copies the prepared token to root/a and root/b, then runs each command in order on a
    against SoftHSM2 and on b through the shim (one trace per command, %p = pid)."""
    runs = Runs()
    a, b = prepared.copy(root / "a"), prepared.copy(root / "b")
    runs.dirs = {"a": root / "a", "b": root / "b"}
    traces = root / "traces"
    traces.mkdir()
    for name, cmd in commands.items():
        extra = env_for(name, runs.dirs["a"]) if env_for else {}
        runs.direct[name] = execute(cmd(a.module, runs.dirs["a"]), {**a.env, **extra})
    for name, cmd in commands.items():
        extra = env_for(name, runs.dirs["b"]) if env_for else {}
        env = shim_env(b, traces / f"{name}-%p.p11", **extra)
        runs.spied[name] = execute(cmd(str(shim), runs.dirs["b"]), env)
        runs.traces[name] = sorted(traces.glob(f"{name}-*.p11"))
    return runs


def _normalise_path(text: str, module: str, copy_dir: Path) -> str:
    """The module path and the copy's directory are the only inputs that differ between runs."""
    return text.replace(module, "<module>").replace(str(copy_dir), "<dir>")


def differences(runs: Runs, shim: Path,
                normalise: dict[str, Callable[[str], str]] | None = None) -> list[str]:
    """Every way the shim run of a command differs from the direct one, as readable diffs."""
    normalise = normalise or {}
    found = []
    for name, d in runs.direct.items():
        s = runs.spied[name]
        extra = normalise.get(name, lambda t: t)
        if d.returncode != s.returncode:
            found.append(f"{name}: exit status {d.returncode} directly, {s.returncode} "
                         "through the shim")
        for stream in ("stdout", "stderr"):
            dt = extra(_normalise_path(getattr(d, stream), SOFTHSM_MODULE, runs.dirs["a"]))
            st = extra(_normalise_path(getattr(s, stream), str(shim), runs.dirs["b"]))
            if dt != st:
                diff = difflib.unified_diff(dt.splitlines(), st.splitlines(), "direct",
                                            "through the shim", lineterm="")
                found.append(f"{name} {stream}:\n" + "\n".join(diff))
    return found


def assert_no_pin_in_traces(runs: Runs, *pins: str) -> None:
    """What a user checks before attaching a trace to a bug report: no PIN in it, anywhere."""
    assert any(True for _ in runs.raw()), "no trace was written"
    for path, data in runs.raw():
        for pin in pins:
            assert pin.encode() not in data, f"PIN {pin} in clear in {path}"


def assert_logins_masked(calls: list[Call]) -> None:
    logins = [c for c in calls if c.function == "C_Login"]
    assert logins
    for c in logins:
        assert c.args["pPin"]["masked"] is True, c.args
        assert c.args["pPin"]["length"] == len(PIN)


def names(calls: list[Call]) -> set[str]:
    return {c.function for c in calls}


def ok(calls: list[Call], function: str) -> list[Call]:
    """The calls of one function that returned CKR_OK (and were not length queries)."""
    return [c for c in calls if c.function == function and c.rv_name == "CKR_OK"
            and not c.length_query]


# --- pkcs11-tool (OpenSC) ----------------------------------------------------------------------

def _object_blocks(text: str) -> str:
    """pkcs11-tool's object listing with its blocks (a heading line and its indented lines)
    sorted: only for the listing taken after --keypairgen (see the module docstring)."""
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if not blocks or (line and not line[0].isspace()):
            blocks.append([])
        blocks[-1].append(line)
    return "\n".join(sorted("\n".join(b) for b in blocks))


def _tool(*args: str) -> Command:
    return lambda module, d: ["pkcs11-tool", "--module", module, *args]


LOGIN = ("--login", "--pin", PIN)
# In this order on each copy. --test runs before --keypairgen, so that it meets one key only
# and tests it in an order that does not depend on a random object file name.
PKCS11_TOOL: dict[str, Command] = {
    "list-slots": _tool("-L"),
    "wrong-pin": _tool("--login", "--pin", WRONG_PIN, "-O"),
    "list-objects": _tool(*LOGIN, "-O"),
    "sign": lambda m, d: ["pkcs11-tool", "--module", m, *LOGIN, "--sign", "-m",
                          "SHA256-RSA-PKCS", "--id", KEY_ID, "-i", str(d / "data"),
                          "-o", str(d / "sig")],
    "test": _tool("--test", *LOGIN),
    "keypairgen": _tool(*LOGIN, "--keypairgen", "--key-type", "rsa:2048", "--id", "02",
                        "--label", "k2"),
    "list-after-keypairgen": _tool(*LOGIN, "-O"),
}


@pytest.fixture(scope="module")
def pkcs11_tool_runs(prepared: Token, tmp_path_factory: pytest.TempPathFactory,
                     shim_for: Callable[[str], Path]) -> Runs:
    need("pkcs11-tool", "opensc")
    root = tmp_path_factory.mktemp("pkcs11-tool")
    for copy in ("a", "b"):
        (root / copy).mkdir()
        (root / copy / "data").write_bytes(DATA)
    return run_twice(prepared, root, shim_for(prepared.module), PKCS11_TOOL)


def test_pkcs11_tool_same_output_through_the_shim(pkcs11_tool_runs: Runs,
                                                  shim_for: Callable[[str], Path]) -> None:
    """Listing slots and objects, a wrong then a right PIN, signing, --test and generating a
    key pair print the same and exit the same through the shim; the signatures are equal."""
    runs = pkcs11_tool_runs
    assert runs.direct["list-objects"].returncode == 0, runs.direct["list-objects"].stderr
    assert "label:      k1" in runs.direct["list-objects"].stdout  # the listing really ran
    assert runs.direct["wrong-pin"].returncode != 0
    assert "CKR_PIN_INCORRECT" in runs.direct["wrong-pin"].stderr
    assert runs.direct["sign"].returncode == 0, runs.direct["sign"].stderr
    assert runs.direct["keypairgen"].returncode == 0, runs.direct["keypairgen"].stderr
    assert "label:      k2" in runs.direct["list-after-keypairgen"].stdout
    # --test exits 1 on SoftHSM2 either way (its C_DecryptInit refuses an OAEP label with
    # CKR_ARGUMENTS_BAD); what counts is that both runs get as far and say the same.
    assert "Digests:" in runs.direct["test"].stdout and "testing key 0 (k1)" in runs.direct[
        "test"].stdout
    assert differences(runs, shim_for(SOFTHSM_MODULE),
                       {"list-after-keypairgen": _object_blocks}) == []
    # RSA PKCS#1 v1.5 signatures are deterministic: the same key and data, the same bytes.
    direct_sig = (runs.dirs["a"] / "sig").read_bytes()
    assert len(direct_sig) == 256
    assert (runs.dirs["b"] / "sig").read_bytes() == direct_sig


def test_pkcs11_tool_trace_shows_the_calls_and_no_pin(pkcs11_tool_runs: Runs) -> None:
    """The trace has the failed then the good C_Login, C_FindObjects, C_Sign with the very
    signature the client wrote, C_GenerateKeyPair; PINs are masked and not in the files."""
    runs = pkcs11_tool_runs
    assert all(len(paths) == 1 for paths in runs.traces.values()), runs.traces
    wrong = [c for c in runs.calls("wrong-pin") if c.function == "C_Login"]
    assert [c.rv_name for c in wrong] == ["CKR_PIN_INCORRECT"]
    good = [c for c in runs.calls("list-objects") if c.function == "C_Login"]
    assert [c.rv_name for c in good] == ["CKR_OK"]
    assert {"C_FindObjectsInit", "C_FindObjects", "C_GetAttributeValue"} <= names(
        runs.calls("list-objects"))
    assert ok(runs.calls("list-objects"), "C_FindObjects")

    sign = runs.calls("sign")
    assert ok(sign, "C_SignInit")
    signs = ok(sign, "C_Sign")
    assert len(signs) == 1
    assert bytes.fromhex(signs[0].args["pData"]) == DATA
    assert bytes.fromhex(signs[0].args["pSignature"]) == (runs.dirs["b"] / "sig").read_bytes()

    assert ok(runs.calls("keypairgen"), "C_GenerateKeyPair")
    assert {"C_GenerateRandom", "C_Sign", "C_Verify"} & names(runs.calls("test"))
    for name in PKCS11_TOOL:
        if name != "list-slots":
            assert_logins_masked(runs.calls(name))
    assert_no_pin_in_traces(runs, PIN, WRONG_PIN)


# --- python-pkcs11 -----------------------------------------------------------------------------

def _python_session(module: str, d: Path) -> list[str]:
    # Its own process each time: python-pkcs11 caches a loaded library per process.
    return [sys.executable, str(CLIENTS / "pp11_session.py"), module, "p11spy-test", PIN,
            WRONG_PIN]


@pytest.fixture(scope="module")
def python_pkcs11_runs(prepared: Token, tmp_path_factory: pytest.TempPathFactory,
                       shim_for: Callable[[str], Path]) -> Runs:
    pytest.importorskip("pkcs11", reason="python-pkcs11 is not in the venv: run `make setup`")
    root = tmp_path_factory.mktemp("python-pkcs11")
    return run_twice(prepared, root, shim_for(prepared.module), {"session": _python_session})


def test_python_pkcs11_same_output_through_the_shim(python_pkcs11_runs: Runs,
                                                    shim_for: Callable[[str], Path]) -> None:
    """Library, slot and token information, a wrong PIN, the object list, a signature and an
    AES round trip come out the same through the shim."""
    d = python_pkcs11_runs.direct["session"]
    assert d.returncode == 0, d.stderr
    assert "wrong PIN: PinIncorrect" in d.stdout
    assert "object PRIVATE_KEY k1 01" in d.stdout
    assert "roundtrip True" in d.stdout
    assert differences(python_pkcs11_runs, shim_for(SOFTHSM_MODULE)) == []


def test_python_pkcs11_trace_shows_the_calls_and_no_pin(python_pkcs11_runs: Runs) -> None:
    """The trace has C_Login failing then succeeding, the object search, the signature the
    script printed, the AES key generation and both directions of the round trip."""
    calls = python_pkcs11_runs.calls("session")
    logins = [c.rv_name for c in calls if c.function == "C_Login"]
    assert logins == ["CKR_PIN_INCORRECT", "CKR_OK"]
    assert ok(calls, "C_FindObjects") and ok(calls, "C_GetTokenInfo") and ok(calls, "C_GetInfo")
    printed = next(line for line in python_pkcs11_runs.spied["session"].stdout.splitlines()
                   if line.startswith("signature "))
    assert [c.args["pSignature"] for c in ok(calls, "C_Sign")] == [printed.split()[2]]
    assert ok(calls, "C_Verify")
    assert ok(calls, "C_GenerateKey")
    assert ok(calls, "C_Encrypt") and ok(calls, "C_Decrypt")
    assert_logins_masked(calls)
    assert_no_pin_in_traces(python_pkcs11_runs, PIN, WRONG_PIN)


# --- GnuTLS p11tool ----------------------------------------------------------------------------

def _p11tool(*args: str) -> Command:
    return lambda module, d: ["p11tool", "--batch", "--provider", module, *args]


P11TOOL: dict[str, Command] = {
    "list-tokens": _p11tool("--list-tokens"),
    "list-all": _p11tool("--list-all"),
    "wrong-pin": _p11tool("--login", "--list-all-privkeys"),
    "list-privkeys": _p11tool("--login", "--list-all-privkeys"),
}


def _gnutls_pin(name: str, d: Path) -> dict[str, str]:
    """p11tool reads the PIN from GNUTLS_PIN (p11tool(1)); --batch keeps it from prompting."""
    return {"GNUTLS_PIN": WRONG_PIN if name == "wrong-pin" else PIN}


@pytest.fixture(scope="module")
def p11tool_runs(prepared: Token, tmp_path_factory: pytest.TempPathFactory,
                 shim_for: Callable[[str], Path]) -> Runs:
    need("p11tool", "gnutls-bin")
    root = tmp_path_factory.mktemp("p11tool")
    return run_twice(prepared, root, shim_for(prepared.module), P11TOOL, _gnutls_pin)


def test_p11tool_same_output_through_the_shim(p11tool_runs: Runs,
                                              shim_for: Callable[[str], Path]) -> None:
    """Token list (URLs built from C_GetInfo and C_GetTokenInfo), object list, and the private
    keys after a wrong then a right PIN, are the same through the shim."""
    d = p11tool_runs.direct
    assert d["list-tokens"].returncode == 0 and "token=p11spy-test" in d["list-tokens"].stdout
    assert "type=cert" in d["list-all"].stdout
    assert d["wrong-pin"].returncode != 0
    assert d["list-privkeys"].returncode == 0 and "type=private" in d["list-privkeys"].stdout
    assert differences(p11tool_runs, shim_for(SOFTHSM_MODULE)) == []


def test_p11tool_trace_shows_the_calls_and_no_pin(p11tool_runs: Runs) -> None:
    """The trace has C_GetInfo, the object searches, C_Login failing then succeeding, and no
    PIN."""
    assert ok(p11tool_runs.calls("list-tokens"), "C_GetInfo")
    assert ok(p11tool_runs.calls("list-tokens"), "C_GetTokenInfo")
    assert ok(p11tool_runs.calls("list-all"), "C_FindObjects")
    wrong = [c.rv_name for c in p11tool_runs.calls("wrong-pin") if c.function == "C_Login"]
    assert wrong and set(wrong) == {"CKR_PIN_INCORRECT"}
    good = [c.rv_name for c in p11tool_runs.calls("list-privkeys") if c.function == "C_Login"]
    assert good and set(good) == {"CKR_OK"}  # GnuTLS may log in more than once
    assert ok(p11tool_runs.calls("list-privkeys"), "C_FindObjects")
    for name in ("wrong-pin", "list-privkeys"):
        assert_logins_masked(p11tool_runs.calls(name))
    assert_no_pin_in_traces(p11tool_runs, PIN, WRONG_PIN)


# --- Java keytool (SunPKCS11) ------------------------------------------------------------------

def keytool_list(module: str, pin: str, d: Path, name: str = "P11Test") -> list[str]:
    """JDK 9 and later: SunPKCS11 is configured with -addprovider and a config file naming the
    library (written to d); keytool then lists the keys that have certificates."""
    cfg = d / f"sunpkcs11-{name}.cfg"
    cfg.write_text(f"name = {name}\nlibrary = {module}\nslotListIndex = 0\n")
    return ["keytool", "-list", "-keystore", "NONE", "-storetype", "PKCS11",
            "-providername", f"SunPKCS11-{name}", "-addprovider", "SunPKCS11",
            "-providerArg", str(cfg), "-storepass", pin]


def _keytool(pin: str) -> Command:
    return lambda module, d: keytool_list(module, pin, d)


KEYTOOL: dict[str, Command] = {"wrong-pin": _keytool(WRONG_PIN), "list": _keytool(PIN)}


@pytest.fixture(scope="module")
def keytool_runs(prepared: Token, tmp_path_factory: pytest.TempPathFactory,
                 shim_for: Callable[[str], Path]) -> Runs:
    need("keytool", "openjdk-17-jdk-headless")
    root = tmp_path_factory.mktemp("keytool")
    return run_twice(prepared, root, shim_for(prepared.module), KEYTOOL)


def test_keytool_same_output_through_the_shim(keytool_runs: Runs,
                                              shim_for: Callable[[str], Path]) -> None:
    """keytool -list on the token (a PrivateKeyEntry with its certificate fingerprint), and the
    failure with a wrong PIN, are the same through the shim."""
    d = keytool_runs.direct
    assert d["list"].returncode == 0, d["list"].stdout + d["list"].stderr
    assert "k1, PrivateKeyEntry" in d["list"].stdout
    assert "Certificate fingerprint (SHA-256)" in d["list"].stdout
    assert d["wrong-pin"].returncode != 0
    assert differences(keytool_runs, shim_for(SOFTHSM_MODULE)) == []


def test_keytool_trace_shows_the_calls_and_no_pin(keytool_runs: Runs) -> None:
    """The JVM's trace has C_Login (failing with the wrong PIN, then succeeding), the object
    searches that find the key and the certificate, and no PIN."""
    wrong = [c.rv_name for c in keytool_runs.calls("wrong-pin") if c.function == "C_Login"]
    assert wrong and set(wrong) == {"CKR_PIN_INCORRECT"}
    calls = keytool_runs.calls("list")
    assert [c.rv_name for c in calls if c.function == "C_Login"] == ["CKR_OK"]
    assert ok(calls, "C_FindObjectsInit") and ok(calls, "C_FindObjects")
    assert any(c.args["phObject"] for c in ok(calls, "C_FindObjects"))  # it found objects
    for name in KEYTOOL:
        assert_logins_masked(keytool_runs.calls(name))
    assert_no_pin_in_traces(keytool_runs, PIN, WRONG_PIN)
