"""`p11spy diff GOOD BAD` on pairs of real runs: two clients doing the same signature, the right
PIN against the same digits in EBCDIC, a read/write session against a read-only one, OpenSC with
and without a card driver setting, and a pkcs11-spy log against a p11spy trace.

Every run starts from its own copy of one SoftHSM2 token (a wrong PIN changes a token's flags),
so what the diff finds is what the clients did differently, and nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed import card_station as station
from tests.conftest import SOFTHSM_MODULE, USER_PIN, Token, make_token

P11SPY = str(Path(sys.executable).parent / "p11spy")
PKCS11_SPY = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so"
CLIENTS = Path(__file__).parent / "clients"
DIFF_CLIENT = CLIENTS / "diff_client.py"
PP11_SIGN = CLIENTS / "pp11_sign.py"


def _check(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    return r


def spied(tok: Token, out: Path, cmd: list[str]) -> Path:
    """cmd under `p11spy run`, into out."""
    _check([P11SPY, "run", "-o", str(out), "--", *cmd], tok.env)
    return out


def pkcs11_spied(tok: Token, out: Path, cmd: list[str]) -> Path:
    """cmd through OpenSC's pkcs11-spy.so (cmd's "MODULE" is replaced by the spy)."""
    if not Path(PKCS11_SPY).exists():
        pytest.fail(f"{PKCS11_SPY} is missing: run `make setup` (opensc)")
    env = {**tok.env, "PKCS11SPY": tok.module, "PKCS11SPY_OUTPUT": str(out)}
    _check([PKCS11_SPY if a == "MODULE" else a for a in cmd], env)
    return out


@dataclass
class Pairs:
    root: Path
    tool: Path  # pkcs11-tool signs (p11spy)
    tool_spy: Path  # the same through pkcs11-spy
    python: Path  # python-pkcs11 signs the same data with the same key (p11spy)
    right: Path  # diff_client.py with the right PIN (p11spy)
    right_spy: Path  # the same through pkcs11-spy
    ebcdic: Path  # the right digits in EBCDIC (p11spy)
    read_only: Path  # a read-only session (p11spy)
    pss: tuple[Path, Path]  # pkcs11-tool signs twice with RSA-PSS: other signature bytes


def diff(good: Path, bad: Path, *opts: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([P11SPY, "diff", str(good), str(bad), *opts], capture_output=True,
                          text=True, timeout=120)


def diff_json(good: Path, bad: Path) -> dict:
    r = diff(good, bad, "--json")
    assert r.returncode in (0, 1), r.stderr
    d = json.loads(r.stdout)
    assert (r.returncode == 1) == bool(d["divergences"])
    return d


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Pairs:
    pytest.importorskip("pkcs11", reason="python-pkcs11 is not in the venv: run `make setup`")
    root = tmp_path_factory.mktemp("diff")
    base = make_token(root / "base")
    _check(["pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", base.label, "--login",
            "--pin", USER_PIN, "--keypairgen", "--key-type", "rsa:2048", "--id", "01",
            "--label", "signer"], base.env)
    data = root / "data"
    data.write_bytes(b"the same data, signed by two clients\n")
    runs: dict[str, Path] = {}

    def fresh(name: str) -> Token:
        return base.copy(root / name)

    def sign_tool(sig: str) -> list[str]:
        return ["pkcs11-tool", "--module", "MODULE", "--token-label", base.label, "--login",
                "--pin", USER_PIN, "--sign", "--id", "01", "-m", "SHA256-RSA-PKCS",
                "-i", str(data), "-o", str(root / sig)]

    def client(*opts: str) -> list[str]:
        return [sys.executable, str(DIFF_CLIENT), "MODULE", base.label, USER_PIN, *opts]

    def real(cmd: list[str]) -> list[str]:
        return [SOFTHSM_MODULE if a == "MODULE" else a for a in cmd]

    runs["tool"] = spied(fresh("tool"), root / "tool.p11", real(sign_tool("sig-tool")))
    runs["tool_spy"] = pkcs11_spied(fresh("tool-spy"), root / "tool-spy.log",
                                    sign_tool("sig-tool-spy"))
    runs["python"] = spied(fresh("python"), root / "python.p11",
                           [sys.executable, str(PP11_SIGN), SOFTHSM_MODULE, base.label,
                            USER_PIN, str(data), str(root / "sig-python")])
    # the clients really made the same signature (RSA PKCS#1 v1.5 is deterministic)
    assert (root / "sig-tool").read_bytes() == (root / "sig-python").read_bytes()
    runs["right"] = spied(fresh("right"), root / "right.p11", real(client()))
    runs["right_spy"] = pkcs11_spied(fresh("right-spy"), root / "right-spy.log", client())
    runs["ebcdic"] = spied(fresh("ebcdic"), root / "ebcdic.p11", real(client("--ebcdic")))
    runs["read_only"] = spied(fresh("ro"), root / "ro.p11", real(client("--read-only")))
    pss = []
    for i in (1, 2):
        cmd = real(sign_tool(f"sig-pss{i}"))
        cmd[cmd.index("SHA256-RSA-PKCS")] = "SHA256-RSA-PKCS-PSS"
        pss.append(spied(fresh(f"pss{i}"), root / f"pss{i}.p11", cmd))
    assert (root / "sig-pss1").read_bytes() != (root / "sig-pss2").read_bytes()  # salted
    return Pairs(root, **runs, pss=(pss[0], pss[1]))


def steps_of(d: dict, function: str) -> list[dict]:
    """The divergences that involve a call of function, on either side."""
    return [s for s in d["divergences"]
            if function in ((s["good"] or {}).get("function"), (s["bad"] or {}).get("function"))]


def paths(step: dict, part: str) -> dict[str, tuple]:
    return {x["path"]: (x["good"], x["bad"]) for x in step[part]}


def test_same_signature_by_pkcs11_tool_and_python_pkcs11(pairs: Pairs) -> None:
    """The two clients find the key differently, but sign alike: the signature calls line up
    with nothing that differs (the signature bytes are not compared, the mechanism is the same),
    and the one extra C_Sign is python-pkcs11's length query."""
    d = diff_json(pairs.tool, pairs.python)
    assert d["good"]["format"] == d["bad"]["format"] == "p11spy"
    assert not steps_of(d, "C_SignInit")
    signs = steps_of(d, "C_Sign")
    assert [s["kind"] for s in signs] == ["only bad"], signs
    extra = signs[0]["bad"]
    events = subprocess.run([P11SPY, "decode", "--json", str(pairs.python)],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    call = next(json.loads(x) for x in events if json.loads(x)["seq"] == extra["seq"])
    assert call["function"] == "C_Sign" and call.get("length_query") is True
    # the lookups differ: python-pkcs11 asks about every slot and mechanism first
    assert d["counts"]["only bad"] > 0 and d["counts"]["same"] >= 5
    assert "C_GetMechanismList" in {s["bad"]["function"] for s in d["divergences"] if s["bad"]}


def test_signatures_and_handles_are_not_compared(pairs: Pairs) -> None:
    """RSA-PSS signatures are salted: two runs sign the same data into other bytes, and are
    still alike call for call."""
    r = diff(*pairs.pss)
    assert r.returncode == 0, r.stdout
    assert " 0 differ, 0 only in GOOD, 0 only in BAD" in r.stdout


def test_right_pin_against_ebcdic_pin(pairs: Pairs) -> None:
    """The first divergence is the login: same length, other character class, and the
    return codes; the PIN's digits show nowhere."""
    r = diff(pairs.right, pairs.ebcdic)
    assert r.returncode == 1, r.stderr
    d = diff_json(pairs.right, pairs.ebcdic)
    first = d["first"]
    assert first["good"]["function"] == first["bad"]["function"] == "C_Login"
    args = paths(first, "arguments")
    assert args["pPin.class"] == ("ASCII digits", "EBCDIC digits")
    assert "pPin.length" not in args
    assert paths(first, "results")["rv"] == ("CKR_OK", "CKR_PIN_INCORRECT")
    assert d["counts"]["changed"] == 1 and d["counts"]["only good"] == d["counts"]["only bad"] == 0
    text = r.stdout
    first_block = text.split("First divergence:\n")[1]
    assert first_block.startswith("  C_Login:"), text
    assert "pPin.class: GOOD ASCII digits | BAD EBCDIC digits" in text
    assert "rv: GOOD CKR_OK | BAD CKR_PIN_INCORRECT" in text
    pin_forms = [USER_PIN, USER_PIN.encode().hex(), USER_PIN.encode("cp037").hex()]
    for out in (r.stdout, json.dumps(d)):
        assert not [p for p in pin_forms if p in out.lower()]


def test_pkcs11_spy_log_of_the_working_client_against_a_p11spy_trace(pairs: Pairs) -> None:
    """Formats mixed: pkcs11-spy shows the PIN's bytes, p11spy its length and class; the
    diff reads both in the same terms, so only the login differs."""
    d = diff_json(pairs.right_spy, pairs.ebcdic)
    assert (d["good"]["format"], d["bad"]["format"]) == ("pkcs11-spy", "p11spy")
    assert d["first"]["good"]["function"] == "C_Login"
    assert paths(d["first"], "arguments")["pPin.class"] == ("ASCII digits", "EBCDIC digits")
    assert [s["good"]["function"] for s in d["divergences"]] == ["C_Login"]
    # and the same run seen by both tracers does not differ at all
    r = diff(pairs.tool_spy, pairs.tool)
    assert r.returncode == 0, r.stdout
    assert "No difference." in r.stdout


def test_read_write_session_against_read_only(pairs: Pairs) -> None:
    r = diff(pairs.right, pairs.read_only)
    assert r.returncode == 1
    d = diff_json(pairs.right, pairs.read_only)
    first = d["first"]
    assert first["good"]["function"] == "C_OpenSession"
    assert paths(first, "arguments")["flags"] == ("CKF_RW_SESSION|CKF_SERIAL_SESSION",
                                                  "CKF_SERIAL_SESSION")
    assert not first["results"]  # both sessions opened
    later = [s for s in d["divergences"] if s is not d["divergences"][0]]
    assert [(s["good"]["function"], paths(s, "results")["rv"]) for s in later] == \
        [("C_CreateObject", ("CKR_OK", "CKR_SESSION_READ_ONLY"))]
    assert "  C_OpenSession: GOOD call 5" in r.stdout
    assert "argument flags: GOOD only CKF_RW_SESSION\n" in r.stdout


def test_opensc_with_and_without_a_card_driver_setting(tmp_path: Path) -> None:
    """OpenSC limited to a driver that does not take the PIV card: the slot is the same, the
    token is gone; the diff says where, what came back, and what the card was asked."""
    with station.card_station(tmp_path / "station") as b:
        conf = station.write_opensc_conf(tmp_path / "openpgp-only.conf",
                                         {"card_drivers": "openpgp"})
        label = b.token_label
        for name, env in (("default", {}), ("openpgp", {"OPENSC_CONF": str(conf)})):
            r = b.run([P11SPY, "run", "-o", str(tmp_path / f"{name}.p11"), "--", "pkcs11-tool",
                       "--module", b.module, "-L"], **env)
            assert r.returncode == 0, r.stderr
    good, bad = tmp_path / "default.p11", tmp_path / "openpgp.p11"
    d = diff_json(good, bad)
    # the same slots and readers, the same calls: only what came back differs
    assert d["counts"]["only good"] == d["counts"]["only bad"] == 0
    tokens = steps_of(d, "C_GetTokenInfo")
    assert len(tokens) == 1, tokens
    got = paths(tokens[0], "results")
    assert got["rv"] == ("CKR_OK", "CKR_TOKEN_NOT_RECOGNIZED")
    assert got["pInfo"][0]["label"] == label and got["pInfo"][1] is None
    # the card was read while OpenSC started: the PIV applet answered only with its driver
    first = d["first"]
    assert first["good"]["function"] == "C_Initialize"
    apdus = paths(first, "results")["APDUs"]
    assert "SELECT 9000" in apdus[0] and "SELECT 9000" not in apdus[1]
    r = diff(good, bad)
    assert "got back rv: GOOD CKR_OK | BAD CKR_TOKEN_NOT_RECOGNIZED" in r.stdout


@pytest.mark.parametrize("case,words", [("missing", "no such file"),
                                        ("empty", "the file is empty"),
                                        ("folder", "is a directory")])
def test_bad_input_is_one_line(case: str, words: str, tmp_path: Path) -> None:
    good = Path(__file__).parents[1] / "fixtures" / "p11spy" / "real-card-sign.p11"
    bad = {"missing": tmp_path / "nope.p11", "empty": tmp_path / "empty.p11",
           "folder": tmp_path}[case]
    if case == "empty":
        bad.write_bytes(b"")
    r = diff(good, bad)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and words in r.stderr and "Traceback" not in r.stderr


def test_too_many_calls_is_one_line() -> None:
    """Both runs are held in memory: past --max-calls, one line instead of the machine's memory."""
    good = Path(__file__).parents[1] / "fixtures" / "p11spy" / "real-card-sign.p11"
    r = diff(good, good, "--max-calls", "5")
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert "more than 5 calls" in r.stderr


def test_a_trace_against_itself_does_not_differ() -> None:
    """Every format, a fixture against itself: alike call for call, exit status 0."""
    fixtures = Path(__file__).parents[1] / "fixtures"
    for f in ("p11spy/real-card-sign.p11", "pkcs11-spy/real-0.23-keypair-sign.log",
              "opensc-debug/real-0.23-card-sign-debug9.log"):
        r = diff(fixtures / f, fixtures / f)
        assert r.returncode == 0, (f, r.stdout, r.stderr)
        assert " 0 differ, 0 only in GOOD, 0 only in BAD" in r.stdout
        assert os.path.basename(f) in r.stdout


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from("ABCDEFG"), max_size=2500),
       st.lists(st.tuples(st.integers(0, 2500), st.sampled_from("ABCDEFGZ"), st.booleans()),
                max_size=30))
def test_alignment_of_long_runs_covers_both_in_order(a: list[str], edits) -> None:
    """Long runs are aligned window by window: the steps must still cover both runs in order
    and match only equal calls; identical runs are one equal block."""
    from p11spy.decoder.compare.align import WINDOW, opcodes

    b = list(a)
    for at, item, insert in edits:
        k = min(at, len(b))
        if insert or not b:
            b.insert(k, item)
        else:
            del b[min(k, len(b) - 1)]
    i = j = 0
    for tag, i1, i2, j1, j2 in opcodes(a, b):
        assert (i1, j1) == (i, j)
        if tag == "equal":
            assert a[i1:i2] == b[j1:j2]
        i, j = i2, j2
    assert (i, j) == (len(a), len(b))
    if a == b:
        assert opcodes(a, b) == ([("equal", 0, len(a), 0, len(a))] if a else [])
    assert WINDOW < 2500  # the examples reach the windowed path
