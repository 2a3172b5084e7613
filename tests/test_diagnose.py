"""`p11spy diagnose` on real traces: each rule on a trace that shows its situation, made here
through the shim (SoftHSM2), OpenSC's pkcs11-spy or `p11spy run`, and no false finding on the
healthy fixtures. The card-station situations (63Cx, 6983, a card pulled, a card no driver
takes) are in test_diagnose_card.py.

Clients: tests/clients/diagnose_client.py gets a real module into each situation with raw calls
(an EBCDIC PIN, a second C_Initialize, signing with a key whose CKA_SIGN is false, ...), and
python-pkcs11 looks for a token label that is not there. Each test also checks what the module
really answered, so a trace cannot silently stop showing the situation.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from p11spy.decoder import codes
from p11spy.decoder.diagnose import RULES, Finding, diagnose
from p11spy.decoder.events import Apdu, Call, Event
from p11spy.decoder.formats.registry import open_events
from p11spy.decoder.knowledge.findings import FINDINGS
from tests.conftest import LABEL, SO_PIN, USER_PIN, run, with_rsa_key

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "tests" / "clients" / "diagnose_client.py"
PKCS11_SPY = "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so"
OPENSC_MODULE = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
P11SPY = str(Path(sys.executable).parent / "p11spy")
FIXTURES = REPO / "fixtures"


def above_info(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity != "info"]


def rules_of(findings: list[Finding]) -> set[str]:
    return {f.rule for f in above_info(findings)}


def one(findings: list[Finding], rule: str) -> Finding:
    [f] = [f for f in findings if f.rule == rule]
    return f


def check_evidence(findings: list[Finding], events: list[Event]) -> None:
    """Every seq a finding cites is an event of the trace."""
    by_seq = {e.seq: e for e in events}
    for f in findings:
        for ev in f.evidence:
            assert ev.seq in by_seq, (f.rule, ev)


def diagnosed(path: Path, **options: object) -> tuple[list[Finding], list[Event]]:
    events = list(open_events(path))
    findings = diagnose(events, options=options)
    check_evidence(findings, events)
    return findings, events


def cited_calls(f: Finding, events: list[Event]) -> list[Call]:
    by_seq = {e.seq: e for e in events}
    return [by_seq[s] for s in f.seqs if isinstance(by_seq[s], Call)]


# --- SoftHSM2 through the shim ------------------------------------------------------------------

def client_trace(mode: str, token, spy_env, shim_for, tmp_path: Path, *extra: str
                 ) -> tuple[list[Finding], list[Event], str]:
    out = tmp_path / f"{mode}.p11"
    env = spy_env(token, out)
    r = run([sys.executable, str(CLIENT), str(shim_for(token.module)), mode, token.label,
             USER_PIN, *extra], env)
    assert r.returncode == 0, r.stdout + r.stderr
    findings, events = diagnosed(out)
    return findings, events, r.stdout


# mode -> (the module's answer the client must print, rules above info, rule, title words)
SHIM_CASES = {
    "ebcdic": ("C_Login CKR_PIN_INCORRECT", {"pin-encoding"},
               "pin-encoding", "EBCDIC digits"),
    "utf16": ("C_Login CKR_PIN_INCORRECT", {"pin-encoding"},
              "pin-encoding", "UTF-16 text"),
    "newline": ("C_Login CKR_PIN_INCORRECT", {"pin-encoding"},
                "pin-encoding", "followed by a newline"),
    "nul": ("C_Login CKR_PIN_INCORRECT", {"pin-encoding"},
            "pin-encoding", "NUL byte"),
    "short-pin": ("C_Login CKR_PIN_INCORRECT", {"pin-length"},
                  "pin-length", "PIN of 2 bytes, outside the token's 4-255"),
    "before-init": ("C_GetSlotList CKR_CRYPTOKI_NOT_INITIALIZED", {"not-initialized"},
                    "not-initialized", "before C_Initialize"),
    "after-finalize": ("C_GetInfo CKR_CRYPTOKI_NOT_INITIALIZED", {"not-initialized"},
                       "not-initialized", "after C_Finalize"),
    "double-init": ("C_Initialize CKR_CRYPTOKI_ALREADY_INITIALIZED", {"already-initialized"},
                    "already-initialized", "C_Initialize called again"),
    "many-sessions": ("C_OpenSession CKR_OK", {"sessions-left-open"},
                      "sessions-left-open", "40 sessions open at once"),
    "not-logged-in": ("C_GenerateKey CKR_USER_NOT_LOGGED_IN", {"not-logged-in"},
                      "not-logged-in", "no C_Login before it"),
    "after-failed-login": ("C_GenerateKey CKR_USER_NOT_LOGGED_IN",
                           {"pin-incorrect", "not-logged-in"}, "not-logged-in",
                           "the login failed"),
    "after-logout": ("C_GenerateKey CKR_USER_NOT_LOGGED_IN", {"not-logged-in"},
                     "not-logged-in", "the login ended at"),
    "closed-last-session": ("C_GenerateKey CKR_USER_NOT_LOGGED_IN", {"not-logged-in"},
                            "not-logged-in", "the login ended at"),
    "sign-not-permitted": ("C_SignInit CKR_KEY_FUNCTION_NOT_PERMITTED", {"key-usage"},
                           "key-usage", "does not allow signing: CKA_SIGN is false"),
    "bad-mechanism": ("C_SignInit CKR_MECHANISM_INVALID", {"mechanism-not-supported"},
                      "mechanism-not-supported", "CKM_RSA_9796 not supported"),
    "find-missing": ("C_FindObjects CKR_OK", {"object-not-found"},
                     "object-not-found", "label 'my_key3', class CKO_PRIVATE_KEY"),
    "buffer-loop": ("C_Sign CKR_BUFFER_TOO_SMALL", {"buffer-too-small-loop"},
                    "buffer-too-small-loop", "C_Sign returned CKR_BUFFER_TOO_SMALL 5 times"),
}


@pytest.mark.parametrize("mode", sorted(SHIM_CASES))
def test_rule_on_a_real_shim_trace(mode: str, token, spy_env, shim_for, tmp_path) -> None:
    answer, rules, rule, words = SHIM_CASES[mode]
    findings, events, out = client_trace(mode, token, spy_env, shim_for, tmp_path)
    assert answer in out.splitlines()
    assert rules_of(findings) == rules, [f.title for f in findings]
    f = one(findings, rule)
    assert words in f.title, f.title
    assert f.seqs and f.explanation and f.action
    # the call that shows it is cited
    failing = answer.split()[0]
    if not answer.endswith("CKR_OK"):
        assert any(c.function == failing and c.rv_name == answer.split()[1]
                   for c in cited_calls(f, events)), f.evidence


def test_pin_length_cites_the_token_info(token, spy_env, shim_for, tmp_path) -> None:
    findings, events, _ = client_trace("short-pin", token, spy_env, shim_for, tmp_path)
    f = one(findings, "pin-length")
    assert [c.function for c in cited_calls(f, events)] == ["C_GetTokenInfo", "C_Login"]
    assert f.data["length"] == 2 and f.data["min"] == 4 and f.data["max"] == 255
    # the length explains the wrong PIN: its facts are inside, no "Wrong PIN" apart
    assert f.data["failed_logins"] == 1 and "refused this PIN 1 time(s)" in f.explanation
    assert not [x for x in findings if x.rule == "pin-incorrect"]


def test_not_logged_in_after_logout_cites_login_and_logout(token, spy_env, shim_for,
                                                            tmp_path) -> None:
    findings, events, _ = client_trace("after-logout", token, spy_env, shim_for, tmp_path)
    f = one(findings, "not-logged-in")
    assert [c.function for c in cited_calls(f, events)] == ["C_Login", "C_Logout",
                                                            "C_GenerateKey"]
    assert "(C_Logout)" in f.explanation
    (tmp_path / "b").mkdir()
    findings, _, _ = client_trace("closed-last-session", token, spy_env, shim_for,
                                  tmp_path / "b")
    assert "its last session was closed" in one(findings, "not-logged-in").explanation


def test_the_failed_login_leads_the_refusal_it_caused(token, spy_env, shim_for,
                                                      tmp_path) -> None:
    """A wrong PIN, and the program goes on to C_GenerateKey, refused as not logged in, and
    stops there. The refusal is the call it stopped on, and its cause, the failed login it
    cites, comes before it."""
    findings, events, _ = client_trace("after-failed-login", token, spy_env, shim_for, tmp_path)
    assert [f.rule for f in above_info(findings)] == ["pin-incorrect", "not-logged-in"]
    refused = one(findings, "not-logged-in")
    [stop] = [c for c in cited_calls(refused, events) if c.function == "C_GenerateKey"]
    assert refused.data["stopped_at"] == stop.seq
    assert not [f for f in findings if f.rule == "client-stopped"]


def test_login_on_another_token(token, spy_env, shim_for, tmp_path) -> None:
    r = subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "second",
                        "--pin", USER_PIN, "--so-pin", "5678"], env=token.env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    findings, events, out = client_trace("other-slot", token, spy_env, shim_for, tmp_path,
                                         "second")
    assert "C_GenerateKey CKR_USER_NOT_LOGGED_IN" in out
    assert rules_of(findings) == {"not-logged-in"}
    f = one(findings, "not-logged-in")
    assert "the login was on another token" in f.title
    assert f"token '{LABEL}'" in f.explanation and "token 'second'" in f.explanation
    assert [c.function for c in cited_calls(f, events)] == ["C_Login", "C_GenerateKey"]


def test_never_finalized_is_information(token, spy_env, shim_for, tmp_path) -> None:
    findings, _, _ = client_trace("no-finalize", token, spy_env, shim_for, tmp_path)
    assert rules_of(findings) == set()
    f = one(findings, "never-finalized")
    assert f.severity == "info" and f.data == {"open_sessions": 2}
    assert "2 sessions still open" in f.explanation


def test_key_usage_shows_where_the_attribute_was_read(token, spy_env, shim_for,
                                                      tmp_path) -> None:
    findings, events, _ = client_trace("sign-not-permitted", token, spy_env, shim_for,
                                       tmp_path)
    f = one(findings, "key-usage")
    assert [c.function for c in cited_calls(f, events)] == ["C_GetAttributeValue",
                                                            "C_SignInit"]


def test_mechanism_absent_from_the_list(token, spy_env, shim_for, tmp_path) -> None:
    findings, events, _ = client_trace("bad-mechanism", token, spy_env, shim_for, tmp_path)
    f = one(findings, "mechanism-not-supported")
    assert f.data["listed"] is False
    assert "not in the token's mechanism list" in f.explanation
    assert cited_calls(f, events)[0].function == "C_GetMechanismList"


def forked_trace(mode: str, token, spy_env, shim_for, tmp_path: Path
                 ) -> tuple[list[Finding], list[Event], dict[str, int], list[str]]:
    """The client forks after C_Initialize; both processes append to one trace file (no %p in
    P11SPY_OUTPUT). Returns the findings, the events, {"parent": pid, "child": pid} and the
    child's printed answers."""
    findings, events, out = client_trace(mode, token, spy_env, shim_for, tmp_path)
    [child_pid] = [int(line.split()[-1]) for line in out.splitlines()
                   if line.startswith("child pid ")]
    pids = {e.pid for e in events if isinstance(e, Call)}
    assert child_pid in pids and len(pids) == 2, pids  # one file, both processes
    [parent_pid] = pids - {child_pid}
    child = [line.removeprefix("child ") for line in out.splitlines()
             if line.startswith("child C_")]
    return findings, events, {"parent": parent_pid, "child": child_pid}, child


def test_calls_in_a_forked_child_without_c_initialize(token, spy_env, shim_for,
                                                      tmp_path) -> None:
    """SoftHSM2 does not notice the fork: the child's calls, even on the parent's session,
    get CKR_OK. PKCS#11 says the child must call C_Initialize first; a warning for the child
    (with its pid), nothing for the parent."""
    findings, events, pid, child = forked_trace("forked-child", token, spy_env, shim_for,
                                                tmp_path)
    assert child == ["C_GetSlotList CKR_OK", "C_GetSlotList CKR_OK", "C_OpenSession CKR_OK",
                     "C_GetSessionInfo CKR_OK"]
    assert rules_of(findings) == {"not-initialized"}, [f.title for f in findings]
    f = one(findings, "not-initialized")
    assert f.severity == "warning" and f.pid == pid["child"]
    assert f.title == (f"4 call(s) in forked child process {pid['child']} without its own "
                       "C_Initialize")
    assert f"forked from process {pid['parent']}" in f.explanation
    assert "6.7.6" in f.explanation
    cited = [(c.pid, c.function) for c in cited_calls(f, events)]
    assert cited == [(pid["parent"], "C_Initialize")] + [
        (pid["child"], fn) for fn in ("C_GetSlotList", "C_GetSlotList", "C_OpenSession",
                                      "C_GetSessionInfo")]
    # the session the child used is the one its parent opened
    [opened] = [c for c in events if isinstance(c, Call) and c.function == "C_OpenSession"
                and c.pid == pid["parent"]]
    assert f.data["parent_sessions_used"] == [opened.args["phSession"]]
    assert "a session of the parent process" in f.evidence[-1].what


def test_forked_child_that_calls_c_initialize(token, spy_env, shim_for, tmp_path) -> None:
    """The child does call C_Initialize; SoftHSM2 answers CKR_CRYPTOKI_ALREADY_INITIALIZED (it
    kept the parent's state): no call-without-initialise finding, and the already-initialised
    finding says it was a fork, not two parts of one program."""
    findings, events, pid, child = forked_trace("forked-child-init", token, spy_env, shim_for,
                                                tmp_path)
    assert child[0] == "C_Initialize CKR_CRYPTOKI_ALREADY_INITIALIZED"
    assert set(child[1:]) == {"C_GetSlotList CKR_OK", "C_OpenSession CKR_OK",
                              "C_GetSessionInfo CKR_OK"}
    assert rules_of(findings) == {"already-initialized"}, [f.title for f in findings]
    f = one(findings, "already-initialized")
    assert f.pid == pid["child"]
    assert f"in forked child process {pid['child']}" in f.title
    assert f"inherited from process {pid['parent']}" in f.explanation
    assert "two parts of one program" not in f.explanation
    assert [(c.pid, c.function) for c in cited_calls(f, events)] == [
        (pid["parent"], "C_Initialize"), (pid["child"], "C_Initialize")]


def test_healthy_shim_trace_has_no_finding(token, spy_env, shim_for, tmp_path) -> None:
    findings, _, out = client_trace("healthy", token, spy_env, shim_for, tmp_path)
    assert "C_Sign CKR_OK" in out
    assert above_info(findings) == []


def test_wrong_then_right_pin_is_a_warning(token, tmp_path) -> None:
    """pkcs11-tool with a wrong PIN, then the right one, under `p11spy run` into one file."""
    out = tmp_path / "pins.p11"
    env = {k: v for k, v in token.env.items() if not k.startswith("P11SPY_")}
    for pin in ("0000", USER_PIN):
        r = subprocess.run([P11SPY, "run", "-o", str(out), "--", "pkcs11-tool", "--module",
                            token.module, "--login", "--pin", pin, "-O"], env=env,
                           capture_output=True, text=True, timeout=60)
        assert ("CKR_PIN_INCORRECT" in r.stderr) == (pin == "0000"), r.stderr
    findings, events = diagnosed(out)
    f = one(findings, "pin-incorrect")
    assert f.severity == "warning" and f.data["recovered"] is True
    assert [(c.function, c.rv_name) for c in cited_calls(f, events)] == [
        ("C_Login", "CKR_PIN_INCORRECT"), ("C_Login", "CKR_OK")]
    assert rules_of(findings) == {"pin-incorrect"}


def test_a_later_so_login_is_not_the_users(token, tmp_path) -> None:
    """pkcs11-tool with a wrong user PIN, then the security officer logs in (with the right SO
    PIN) to set the user PIN again: the SO's login shows nothing of the user's PIN, so the
    wrong PIN stays an error and no evidence calls the SO's login "a later login worked"."""
    out = tmp_path / "so.p11"
    env = {k: v for k, v in token.env.items() if not k.startswith("P11SPY_")}
    runs = (["--login", "--pin", "0000", "-O"],
            ["--login", "--login-type", "so", "--so-pin", SO_PIN, "--init-pin", "--new-pin",
             USER_PIN])
    for args in runs:
        r = subprocess.run([P11SPY, "run", "-o", str(out), "--", "pkcs11-tool", "--module",
                            token.module, *args], env=env, capture_output=True, text=True,
                           timeout=60)
    assert "User PIN successfully initialized" in r.stdout + r.stderr, r.stderr
    findings, events = diagnosed(out)
    logins = [(c.args["userType"], c.rv_name) for c in events
              if isinstance(c, Call) and c.function == "C_Login"]
    assert logins == [("CKU_USER", "CKR_PIN_INCORRECT"), ("CKU_SO", "CKR_OK")]
    f = one(findings, "pin-incorrect")
    assert f.severity == "error" and f.data["recovered"] is False
    assert [(c.function, c.rv_name) for c in cited_calls(f, events)] == [
        ("C_Login", "CKR_PIN_INCORRECT")]
    assert "later login worked" not in f.explanation + " ".join(e.what for e in f.evidence)


def test_token_label_not_found_python_pkcs11(token, spy_env, shim_for, tmp_path) -> None:
    """python-pkcs11 looks for a token by label, as MQ/GSKit do, and does not find it."""
    pytest.importorskip("pkcs11")
    out = tmp_path / "label.p11"
    code = ("import sys, pkcs11\nlib = pkcs11.lib(sys.argv[1])\n"
            "try:\n    lib.get_token(token_label=sys.argv[2])\n"
            "except pkcs11.NoSuchToken:\n    print('NoSuchToken')\n")
    wanted = f"UserPIN ({LABEL})"
    r = run([sys.executable, "-c", code, str(shim_for(token.module)), wanted],
            spy_env(token, out))
    assert r.stdout.strip() == "NoSuchToken", r.stderr
    findings, events = diagnosed(out, token_label=wanted)
    f = one(findings, "token-label-not-found")
    assert f.severity == "error"
    assert f.title == f"No token labelled '{wanted}' (did you mean '{LABEL}'?)"
    assert {c.function for c in cited_calls(f, events)} == {"C_GetTokenInfo"}
    # what MQ would say is related, not seen: this trace has no MQ in it
    assert "AMQ9669E" in f.related_codes and "AMQ9669E" not in f.codes
    # without the label: only an informational note
    findings, _ = diagnosed(out)
    assert above_info(findings) == []
    assert f"'{LABEL}'" in one(findings, "tokens-without-session").title
    # the label it was configured with is there: nothing to say
    findings, _ = diagnosed(out, token_label=LABEL)
    assert not [f for f in findings if f.rule == "token-label-not-found"]


# --- OpenSC's pkcs11-spy: the PIN's bytes in clear ------------------------------------------------

@pytest.mark.parametrize("mode,words", [("utf16", "UTF-16 text"), ("ebcdic", "EBCDIC digits"),
                                        ("newline", "followed by a newline")])
def test_pin_encoding_in_a_pkcs11_spy_trace(mode: str, words: str, token, tmp_path) -> None:
    if not Path(PKCS11_SPY).exists():
        pytest.fail(f"{PKCS11_SPY} is missing: run `make setup` (opensc)")
    out = tmp_path / f"{mode}.log"
    env = {**token.env, "PKCS11SPY": token.module, "PKCS11SPY_OUTPUT": str(out)}
    r = run([sys.executable, str(CLIENT), PKCS11_SPY, mode, token.label, USER_PIN], env)
    assert "C_Login CKR_PIN_INCORRECT" in r.stdout, r.stdout + r.stderr
    findings, events = diagnosed(out)
    assert rules_of(findings) == {"pin-encoding"}
    f = one(findings, "pin-encoding")
    assert words in f.title and f.severity == "error"
    assert [c.function for c in cited_calls(f, events)] == ["C_Login"]
    # the bytes are in this trace: no advice to record them, a reminder to redact
    assert "P11SPY_LOG_SECRETS" not in f.explanation + f.action
    assert "shows the PIN's bytes in clear" in f.explanation
    if mode == "ebcdic":
        # redacted, the bytes are gone: the wrong PIN leads, without pointing at a finding that
        # is not there, and says the trace cannot tell the encoding
        red = tmp_path / "redacted.log"
        r = run([P11SPY, "redact", str(out), "-o", str(red)], env)
        assert r.returncode == 0, r.stderr
        findings, _ = diagnosed(red)
        assert [x.rule for x in above_info(findings)] == ["pin-incorrect"]
        wrong = one(findings, "pin-incorrect")
        assert "PIN-encoding finding" not in wrong.explanation + wrong.action
        assert "this trace does not show the PIN's bytes" in wrong.action


def test_the_pin_encoding_leads_with_the_wrong_pin_inside(token, spy_env, shim_for,
                                                          tmp_path) -> None:
    """The right digits in EBCDIC through the shim (PIN masked at capture): the encoding is the
    cause of CKR_PIN_INCORRECT, so it is the first finding, with the failed login's facts in
    it, and a masked trace says how to see the bytes."""
    findings, events, _ = client_trace("ebcdic", token, spy_env, shim_for, tmp_path)
    first = above_info(findings)[0]
    assert first.rule == "pin-encoding" and first.severity == "error"
    assert first.title.endswith("(1 failed login(s))")
    assert first.data["failed_logins"] == 1 and first.data["login_failed"] is True
    assert "refused this PIN 1 time(s)" in first.explanation
    assert "P11SPY_LOG_SECRETS=1" in first.explanation
    assert [(c.function, c.rv_name) for c in cited_calls(first, events)] == [
        ("C_Login", "CKR_PIN_INCORRECT")]
    # a plain wrong PIN in ASCII: the encoding is ruled out, in so many words
    (tmp_path / "b").mkdir()
    findings, _, _ = client_trace("wrong-pin", token, spy_env, shim_for, tmp_path / "b")
    assert "The PIN's encoding is not the cause: the trace shows 4 bytes of ASCII digits" in \
        one(findings, "pin-incorrect").action


# --- how the program uses the library: setup per operation, threads ------------------------

@pytest.mark.parametrize("mode,what,inits", [
    ("login-per-sign", "a session and a login", 1),
    ("init-per-sign", "the library (C_Initialize), a session and a login", 20)])
def test_setup_per_operation(mode: str, what: str, inits: int, token, spy_env, shim_for,
                             tmp_path) -> None:
    """20 HMAC signatures on SoftHSM2, each in a session of its own with its own C_Login (and
    C_Initialize): counts, and the share of the module's time the setup took."""
    findings, events, out = client_trace(mode, token, spy_env, shim_for, tmp_path)
    assert out.splitlines().count("C_Sign CKR_OK") == 20
    assert rules_of(findings) == {"setup-per-operation"}, [f.title for f in findings]
    f = one(findings, "setup-per-operation")
    assert f.severity == "warning"
    assert f.title == f"Setup per operation: {what} for each of 20 signatures"
    calls = [e for e in events if isinstance(e, Call)]
    logins = [c for c in calls if c.function == "C_Login"]
    assert f.data["operations"] == 20
    assert f.data["setups"] == {"C_Initialize": inits, "C_OpenSession": 21, "C_Login": 21}
    setup_us = sum(c.duration_us for c in calls if c.function in (
        "C_Initialize", "C_OpenSession", "C_Login", "C_Logout", "C_CloseSession", "C_Finalize"))
    assert f.data["setup_us"] == pytest.approx(setup_us)
    assert f.data["total_us"] == pytest.approx(sum(c.duration_us for c in calls))
    assert f"{100 * setup_us / f.data['total_us']:.0f}%" in f.explanation
    assert sum(c.duration_us for c in logins) > 0 and "C_Login" in f.explanation
    cited = {c.function for c in cited_calls(f, events)}
    assert cited == {"C_Initialize" if inits > 1 else "C_Login", "C_Sign"}


PYTHON_PKCS11_SIGNER = """
import sys, pkcs11
from pkcs11 import KeyType, Mechanism, ObjectClass
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
pin, per_signature = sys.argv[3], sys.argv[4] == "per-signature"
with token.open(rw=True, user_pin=pin) as s:
    s.generate_keypair(KeyType.RSA, 2048, store=True, label="k1")
def sign(s):
    key = s.get_key(object_class=ObjectClass.PRIVATE_KEY, label="k1")
    key.sign(b"data", mechanism=Mechanism.SHA256_RSA_PKCS)
if per_signature:
    for _ in range(10):
        with token.open(user_pin=pin) as s:
            sign(s)
else:
    with token.open(user_pin=pin) as s:
        for _ in range(10):
            sign(s)
print("signed")
"""


@pytest.mark.parametrize("how", ["per-signature", "one-session"])
def test_setup_per_operation_python_pkcs11(how: str, token, tmp_path) -> None:
    """python-pkcs11 signing 10 times under `p11spy run`: `with token.open(user_pin=...)`
    around each signature is a session and a login per signature (a warning); one session
    around the loop is nothing to report."""
    out = tmp_path / f"{how}.p11"
    env = {k: v for k, v in token.env.items() if not k.startswith("P11SPY_")}
    r = subprocess.run([P11SPY, "run", "-o", str(out), "--", sys.executable, "-c",
                        PYTHON_PKCS11_SIGNER, token.module, token.label, USER_PIN, how],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "signed", r.stderr
    findings, events = diagnosed(out)
    signs = [c for c in events if isinstance(c, Call) and c.function == "C_Sign" and c.rv == 0
             and not c.length_query]
    assert len(signs) == 10
    if how == "one-session":
        assert above_info(findings) == [], [f.title for f in findings]
        return
    assert rules_of(findings) == {"setup-per-operation"}, [f.title for f in findings]
    f = one(findings, "setup-per-operation")
    assert f.title == "Setup per operation: a session and a login for each of 10 signatures"
    assert f.data["setups"]["C_Login"] == 11  # the key generation's session, and one each


def test_setup_per_operation_from_counts_alone(token, tmp_path) -> None:
    """The same client through OpenSC's pkcs11-spy, whose log has no durations: the finding
    stands on the counts and claims no share of time."""
    out = tmp_path / "per-sign.log"
    env = {**token.env, "PKCS11SPY": token.module, "PKCS11SPY_OUTPUT": str(out)}
    r = run([sys.executable, str(CLIENT), PKCS11_SPY, "login-per-sign", token.label, USER_PIN],
            env)
    assert r.stdout.splitlines().count("C_Sign CKR_OK") == 20, r.stderr
    findings, events = diagnosed(out)
    assert all(e.duration_us is None for e in events if isinstance(e, Call))
    f = one(findings, "setup-per-operation")
    assert f.severity == "warning" and f.data["operations"] == 20
    assert f.data["setups"]["C_Login"] == 21 and f.data["setup_us"] is None
    assert "took" not in f.explanation and " ms" not in f.explanation


def _overlapping(events: list[Event]) -> int:
    """Pairs of calls of different threads that overlap in time, counted the plain way."""
    calls = [c for c in events if isinstance(c, Call) and c.duration_us is not None]
    spans = [(c.time, c.time + c.duration_us / 1e6, c.tid) for c in calls]
    return sum(1 for i, a in enumerate(spans) for b in spans[i + 1:]
               if a[2] != b[2] and a[0] < b[1] and b[0] < a[1])


def test_threads_without_locking(token, spy_env, shim_for, tmp_path) -> None:
    """C_Initialize(NULL), then three threads generating RSA key pairs at once: a warning.
    The same threads after C_Initialize with CKF_OS_LOCKING_OK: nothing to say."""
    findings, events, _ = client_trace("threads-no-locking", token, spy_env, shim_for, tmp_path)
    assert _overlapping(events) > 0
    assert rules_of(findings) == {"threads-without-locking"}, [f.title for f in findings]
    f = one(findings, "threads-without-locking")
    assert f.severity == "warning" and f.data["init_args"] == "NULL"
    tids = {c.tid for c in events if isinstance(c, Call) and c.function == "C_GenerateKeyPair"}
    assert 2 <= f.data["threads"] <= len(tids)  # the threads whose calls overlapped
    cited = cited_calls(f, events)
    assert cited[0].function == "C_Initialize" and cited[0].args["pInitArgs"] is None
    assert len({c.tid for c in cited[1:]}) >= 2
    (tmp_path / "b").mkdir()
    findings, events, _ = client_trace("threads-os-locking", token, spy_env, shim_for,
                                       tmp_path / "b")
    assert _overlapping(events) > 0
    init = next(c for c in events if isinstance(c, Call) and c.function == "C_Initialize")
    assert init.args["pInitArgs"]["flags"] == "CKF_OS_LOCKING_OK"
    assert above_info(findings) == [], [f.title for f in findings]


# --- the failure the client stopped on -----------------------------------------------------

def test_pkcs11_tool_test_run_names_the_call_that_ended_it(token, tmp_path: Path) -> None:
    """`pkcs11-tool --test --login` over SoftHSM2 with an RSA key: it probes digests and
    signature mechanisms the token lacks (CKR_MECHANISM_INVALID, and it goes on), then stops
    on the call that ends the run (here C_DecryptInit with OAEP parameters SoftHSM2 refuses).
    That call leads, as an error; the probes it went on after are information."""
    tool, env = with_rsa_key(token)
    out = tmp_path / "test.p11"
    r = subprocess.run([P11SPY, "run", "-o", str(out), "--", *tool, "--test"], env=env,
                       capture_output=True, text=True, timeout=120)
    [(function, rv)] = re.findall(r"PKCS11 function (C_\w+) failed: rv = (CKR_\w+)", r.stderr)
    assert r.returncode != 0 and "Aborting." in r.stderr, r.stderr
    findings, events = diagnosed(out)
    [first, *rest] = above_info(findings)
    assert first.rule == "client-stopped" and first.severity == "error"
    assert first.title == f"The program gave up after {function} -> {rv} (#{first.seqs[0]})"
    [stop] = cited_calls(first, events)
    assert (stop.function, stop.rv_name) == (function, rv)
    # nothing but clean-up after it
    assert {e.function for e in events if isinstance(e, Call) and e.seq > stop.seq} <= \
        {"C_Finalize", "C_CloseSession", "C_CloseAllSessions", "C_Logout"}
    assert rest == [], [f.title for f in rest]
    probes = [f for f in findings if f.rule == "mechanism-not-supported"]
    assert probes, "pkcs11-tool --test no longer probes a mechanism SoftHSM2 lacks"
    for f in probes:
        assert f.severity == "info" and f.data["handled"] is True
        assert "went on working after it" in f.explanation


# --- OpenSC without a PC/SC service, under p11spy run ------------------------------------------

def test_no_pcscd_under_p11spy_run(tmp_path: Path) -> None:
    """opensc-pkcs11 with PCSCLITE_CSOCK_NAME at a socket that does not exist: the same as no
    pcscd running, whatever runs on this machine."""
    out = tmp_path / "nopcscd.p11"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P11SPY_", "OPENSC"))}
    env["PCSCLITE_CSOCK_NAME"] = str(tmp_path / "no-such-socket")
    r = subprocess.run([P11SPY, "run", "-o", str(out), "--", "pkcs11-tool", "--module",
                        OPENSC_MODULE, "-L"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert "No slots." in r.stdout + r.stderr, r.stdout + r.stderr
    findings, events = diagnosed(out)
    assert rules_of(findings) == {"no-pcsc-service", "no-token"}
    f = one(findings, "no-pcsc-service")
    by_seq = {e.seq: e for e in events}
    assert all(getattr(by_seq[s], "function", "") == "SCardEstablishContext" for s in f.seqs)
    assert "pcscd" in f.title and f.severity == "error"
    assert "PC/SC service was not reachable" in one(findings, "no-token").explanation
    # the cause first
    assert [x.rule for x in above_info(findings)] == ["no-pcsc-service", "no-token"]


P11KIT_PROXY = "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so"


def test_no_pcscd_is_information_when_p11_kit_used_another_module(token, tmp_path) -> None:
    """pkcs11-tool through p11-kit's proxy, which loads every module configured on this machine
    (SoftHSM2 and OpenSC among them), with no PC/SC service: OpenSC cannot reach pcscd, SoftHSM2
    does the work and the listing succeeds. Information, not an error; OpenSC alone with no
    pcscd stays an error (test_no_pcscd_under_p11spy_run)."""
    out = tmp_path / "p11kit.p11"
    env = {k: v for k, v in token.env.items() if not k.startswith(("P11SPY_", "OPENSC"))}
    env["PCSCLITE_CSOCK_NAME"] = str(tmp_path / "no-such-socket")
    r = subprocess.run([P11SPY, "run", "-o", str(out), "--", "pkcs11-tool", "--module",
                        P11KIT_PROXY, "--token-label", LABEL, "--login", "--pin", USER_PIN, "-O"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    findings, events = diagnosed(out)
    modules = {Path(e.module).name for e in events if isinstance(e, Call) and e.module}
    assert {"libsofthsm2.so", "opensc-pkcs11.so"} <= modules, modules
    assert any(getattr(e, "rv_name", None) == "SCARD_E_NO_SERVICE" for e in events)
    assert above_info(findings) == [], [f.title for f in findings]
    f = one(findings, "no-pcsc-service")
    assert f.severity == "info"
    assert f.title == ("No PC/SC service for opensc-pkcs11.so, which the program did not need "
                       "(it used libsofthsm2.so)")
    assert Path(f.data["used"]).name == "libsofthsm2.so" and f.data["needed"] is False
    [session] = [c for c in cited_calls(f, events) if c.function == "C_OpenSession"]
    assert session.rv_name == "CKR_OK" and Path(session.module).name == "libsofthsm2.so"


# --- the fixtures: real traces of both kinds ---------------------------------------------------

HEALTHY = [
    "pkcs11-spy/real-0.23-info-mechanisms.log", "pkcs11-spy/real-0.23-init-pin.log",
    "pkcs11-spy/real-0.23-keypair-sign.log", "pkcs11-spy/real-0.23-login-list-objects.log",
    "pkcs11-spy/real-0.23-secret-key-read.log", "pkcs11-spy/real-0.23-set-pin.log",
    "pkcs11-spy/real-0.23-two-processes.log", "pkcs11-spy/written-0.24-linux-pt.log",
    "opensc-debug/real-0.23-card-list-debug3.log", "opensc-debug/real-0.23-card-sign-debug9.log",
    "opensc-debug/written-0.20-linux-two-threads.log",
    "opensc-debug/written-0.21-linux-truncated-4k.log",
    "opensc-debug/written-0.15-linux-old-apdu-dumps.log",
    "opensc-debug/fieldnotes-0.18-linux-login-verify.log",
    "opensc-debug/ref-0.18-linux-opensc-tool.log", "opensc-debug/ref-0.19-windows-pkcs15-tool.log",
    "opensc-debug/ref-0.23-windows-cardmod.log",
]


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_fixture_has_no_finding(name: str) -> None:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"{name} is not in this checkout")
    findings, _ = diagnosed(path)
    assert above_info(findings) == [], [f.title for f in findings]


# fixture -> rules above info it must give
BROKEN = {
    "pkcs11-spy/real-0.23-login-wrong-pin.log": {"pin-incorrect"},
    "opensc-debug/real-0.23-L-debug3-stderr.log": {"no-pcsc-service", "no-token"},
    "opensc-debug/real-0.23-I-debug9-stderr.log": {"no-pcsc-service", "no-token"},
    "opensc-debug/real-0.23-card-wrong-pin-debug9.log": {"pin-incorrect"},
    "pkcs11-spy/written-0.24-windows-pt-crlf.log": {"pin-encoding", "not-logged-in"},
    "opensc-debug/written-0.26-linux-two-processes.log": {"card-not-recognised"},
    # a C_Login refused (CKR_FUNCTION_REJECTED, CKR_PIN_TOO_WEAK), then only clean-up
    "pkcs11-spy/written-0.26-linux-null-names.log": {"client-stopped"},
    "pkcs11-spy/written-0.27-linux-interleaved-threads.log": {"client-stopped"},
    "opensc-debug/ref-0.20-macos-login-failure.log": {"client-stopped"},
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_fixture_findings(name: str) -> None:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"{name} is not in this checkout")
    findings, _ = diagnosed(path)
    assert rules_of(findings) == BROKEN[name], [f.title for f in findings]


# The acceptance table of issue 16: every fixture -> the rule of its first finding of severity
# warning or above, the root cause (None: a healthy trace, nothing above info). A fixture added
# to fixtures/ must be placed here.
ROOT_CAUSE: dict[str, str | None] = {
    # OpenSC with no pcscd: the service, not the empty slot list that follows from it
    "opensc-debug/real-0.23-I-debug3-stderr.log": "no-pcsc-service",
    "opensc-debug/real-0.23-I-debug9-stderr.log": "no-pcsc-service",
    "opensc-debug/real-0.23-L-debug3-stderr.log": "no-pcsc-service",
    "opensc-debug/real-0.23-L-debug9-conffile.log": "no-pcsc-service",
    "opensc-debug/real-0.23-L-debug9-stderr.log": "no-pcsc-service",
    # a wrong PIN, with or without the card's counter, recovered or not
    "opensc-debug/real-0.23-card-wrong-pin-debug9.log": "pin-incorrect",
    "opensc-debug/written-0.22-linux-ansi-colours.log": "pin-incorrect",
    "opensc-debug/written-0.23-windows-crlf.log": "pin-incorrect",
    "opensc-debug/written-0.24-linux-wrong-pin.log": "pin-incorrect",
    "p11spy/real-card-wrong-pin.p11": "pin-incorrect",
    "pcsc-spy/real-1.9.9-card-wrong-pin-decoded-colour-t.txt": "pin-incorrect",
    "pcsc-spy/real-1.9.9-card-wrong-pin-decoded-n.txt": "pin-incorrect",
    "pcsc-spy/real-1.9.9-card-wrong-pin.raw": "pin-incorrect",
    "pkcs11-spy/real-0.23-card-wrong-pin.log": "pin-incorrect",
    "pkcs11-spy/real-0.23-login-wrong-pin.log": "pin-incorrect",
    "pkcs11-spy/written-0.13-linux-old-style.log": "pin-incorrect",
    "pkcs11-spy/written-0.22-windows-crlf.log": "pin-incorrect",
    "pkcs11-spy/written-0.25-linux-two-processes.log": "pin-incorrect",
    # binary PIN bytes explain the wrong PIN, which explains the CKR_USER_NOT_LOGGED_IN after it
    "pkcs11-spy/written-0.24-windows-pt-crlf.log": "pin-encoding",
    # C_Login -> CKR_GENERAL_ERROR (OpenSC: card command failed), then only clean-up
    "opensc-debug/ref-0.20-macos-login-failure.log": "client-stopped",
    # a C_Login refused (CKR_FUNCTION_REJECTED, CKR_PIN_TOO_WEAK), then only clean-up
    "pkcs11-spy/written-0.26-linux-null-names.log": "client-stopped",
    "pkcs11-spy/written-0.27-linux-interleaved-threads.log": "client-stopped",
    "opensc-debug/written-0.26-linux-two-processes.log": "card-not-recognised",
    # the card pulled: after a wrong PIN too, the removal is what stopped the program
    "pcsc-spy/real-1.9.9-card-pulled-at-verify-decoded-n.txt": "card-removed",
    "pcsc-spy/real-1.9.9-card-pulled-at-verify.raw": "card-removed",
    "pcsc-spy/written-2.x-decoded-short-rv.txt": "card-removed",
    "pcsc-spy/written-old-raw-no-pci.raw": "card-removed",
    # the cross client (tests/clients/cross_client.c) calls C_Initialize twice on purpose; its
    # wrong PIN is followed by the right one; the same from s390x (big-endian) and x86_64
    "p11spy/cross-s390x.p11": "already-initialized",
    "p11spy/cross-x86_64.p11": "already-initialized",
    # a thread of the client died of SIGSEGV inside SoftHSM2's C_GenerateRandom
    "p11spy/real-thread-crashed-in-module.p11": "call-never-returned",
    # the client died inside SCardTransmit (libpcscspy 1.9.9 and a NULL pioRecvPci)
    "pcsc-spy/real-1.9.9-null-recv-pci-crash-decoded-n.txt": "call-never-returned",
    "pcsc-spy/real-1.9.9-null-recv-pci-crash.raw": "call-never-returned",
    **dict.fromkeys(HEALTHY),
    "opensc-debug/written-0.15-windows-date-only.log": None,
    "p11spy/real-card-list.p11": None,
    "p11spy/real-card-sign.p11": None,
    "pcsc-spy/real-1.9.9-opensc-tool-name-decoded-n-d.txt": None,
    "pcsc-spy/real-1.9.9-opensc-tool-name-decoded-n.txt": None,
    "pcsc-spy/real-1.9.9-opensc-tool-name.raw": None,
    "pcsc-spy/real-1.9.9-two-threads-decoded-n-t.txt": None,
    "pcsc-spy/real-1.9.9-two-threads-decoded-n.txt": None,
    "pcsc-spy/real-1.9.9-two-threads.raw": None,
}


def fixture_names() -> list[str]:
    return sorted(str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*")
                  if p.is_file() and p.name != "README.md" and p.suffix != ".sh")


def test_every_fixture_has_its_root_cause_in_the_table() -> None:
    assert fixture_names() == sorted(ROOT_CAUSE)


@pytest.mark.parametrize("name", fixture_names())
def test_the_first_finding_is_the_root_cause(name: str) -> None:
    findings, _ = diagnosed(FIXTURES / name)
    first = next((f.rule for f in above_info(findings)), None)
    assert first == ROOT_CAUSE[name], [(f.rule, f.severity) for f in findings]


@pytest.mark.parametrize("name", ["real-1.9.9-null-recv-pci-crash.raw",
                                  "real-1.9.9-null-recv-pci-crash-decoded-n.txt"])
def test_a_call_that_never_returned(name: str) -> None:
    """Real libpcscspy 1.9.9 output of a client that died of SIGSEGV inside SCardTransmit
    (fixtures/pcsc-spy/regenerate.sh): the call, its thread and what was sent last."""
    findings, events = diagnosed(FIXTURES / "pcsc-spy" / name)
    [f] = above_info(findings)
    assert f.rule == "call-never-returned" and f.severity == "error"
    assert f.title.startswith("SCardTransmit in thread ")
    assert "crashed, was killed or hung" in f.title
    by_seq = {e.seq: e for e in events}
    [select] = [by_seq[s] for s in f.seqs if isinstance(by_seq[s], Apdu)]
    assert select.command[1] == 0xA4 and select.response is None


def test_a_call_the_program_gave_up_on_in_a_pkcs11_spy_log(token, tmp_path) -> None:
    """A program whose C_GenerateKeyPair (RSA 8192 on SoftHSM2) takes longer than it waits: it
    exits with the call still running. OpenSC's pkcs11-spy wrote the call's arguments and never
    its "Returned:" line; the call is named, not a finding about what came before it."""
    out = tmp_path / "gave-up.log"
    env = {**token.env, "PKCS11SPY": token.module, "PKCS11SPY_OUTPUT": str(out)}
    r = run([sys.executable, str(CLIENT), PKCS11_SPY, "gives-up-waiting", token.label,
             USER_PIN], env)
    assert r.returncode == 3 and r.stdout.splitlines()[-1] == "gave up", r.stdout + r.stderr
    assert "C_GenerateKeyPair" not in r.stdout  # it never returned to the program
    findings, events = diagnosed(out)
    [first, *_] = above_info(findings)
    assert first.rule == "call-never-returned" and first.severity == "error"
    assert first.title == ("C_GenerateKeyPair never returned: the program crashed, was killed "
                           "or hung inside it")
    [call] = cited_calls(first, events)
    assert call.function == "C_GenerateKeyPair" and call.rv is None
    assert call is [e for e in events if isinstance(e, Call)][-1]


def test_opensc_debug_wrong_pin_shows_the_counter() -> None:
    """A real OPENSC_DEBUG=9 log of a wrong PIN on the card station: the VERIFY status check
    (63C3) and the failed VERIFY (63C2) are read from the log's APDU dumps."""
    path = FIXTURES / "opensc-debug" / "real-0.23-card-wrong-pin-debug9.log"
    if not path.exists():
        pytest.skip("fixture not in this checkout")
    findings, events = diagnosed(path)
    f = one(findings, "pin-incorrect")
    assert f.data["tries_left"] == [3, 2]
    assert "2 tries left" in f.title
    assert any(isinstance(e, Apdu) for e in events if e.seq in f.seqs)


def test_field_notes_pin_reads_as_binary() -> None:
    """The field notes' pkcs11-spy block (PIN 5B C7 E7 BB E5 FC 6A BE): not ASCII at all."""
    findings, _ = diagnosed(FIXTURES / "pkcs11-spy" / "written-0.24-windows-pt-crlf.log")
    assert "binary bytes, not ASCII text" in one(findings, "pin-encoding").title


# --- the knowledge base, shared with explain -------------------------------------------------

def test_every_finding_text_is_in_the_knowledge_base() -> None:
    for name in RULES:
        assert name in FINDINGS
    for name, advice in FINDINGS.items():
        assert advice.severity in ("error", "warning", "info"), name
        for code in advice.codes:
            assert codes.lookup(code), f"{name} names {code}, which explain does not know"


def test_findings_quote_explain_for_their_codes(token, spy_env, shim_for, tmp_path) -> None:
    findings, _, _ = client_trace("wrong-pin", token, spy_env, shim_for, tmp_path)
    data = one(findings, "pin-incorrect").to_json()
    assert data["code_meanings"]["CKR_PIN_INCORRECT"] == \
        codes.lookup("CKR_PIN_INCORRECT")[0].code.meaning


def test_codes_the_trace_never_showed_are_only_related(token, spy_env, shim_for,
                                                       tmp_path) -> None:
    """SoftHSM2 has no card: a wrong PIN shows CKR_PIN_INCORRECT and no status word, so 63Cx
    and OpenSC's SC_ERROR_PIN_CODE_INCORRECT are related codes, labelled so, not seen ones."""
    findings, events, out = client_trace("wrong-pin", token, spy_env, shim_for, tmp_path)
    assert "C_Login CKR_PIN_INCORRECT" in out.splitlines()
    assert not any(isinstance(e, Apdu) for e in events)
    f = one(findings, "pin-incorrect")
    assert f.codes == ("CKR_PIN_INCORRECT",)
    assert set(f.related_codes) == {"63Cx", "SC_ERROR_PIN_CODE_INCORRECT"}
    row = f.to_json()
    assert row["codes"] == ["CKR_PIN_INCORRECT"]
    assert row["related_codes"] == list(f.related_codes)
    assert set(row["code_meanings"]) == {"CKR_PIN_INCORRECT", *f.related_codes}
    text = subprocess.run([P11SPY, "diagnose", str(tmp_path / "wrong-pin.p11")],
                          capture_output=True, text=True).stdout
    code_lines = [line for line in text.splitlines() if line.startswith("  code:")]
    assert [line.split()[1] for line in code_lines] == ["CKR_PIN_INCORRECT:"]
    related = text[text.index("  related:"):]
    assert "does not show" in related and "63Cx:" in related


def test_codes_an_opensc_log_shows_by_number() -> None:
    """OpenSC's debug log writes its errors as numbers ("returning with: -1101") and PC/SC's
    in hex: those count as seen; the MQ and GSKit messages of no-token do not."""
    findings, _ = diagnosed(FIXTURES / "opensc-debug" / "real-0.23-L-debug3-stderr.log")
    f = one(findings, "no-pcsc-service")
    assert f.codes == ("SCARD_E_NO_SERVICE", "SC_ERROR_NO_READERS_FOUND")
    assert one(findings, "no-token").codes == ()
    assert set(one(findings, "no-token").related_codes) == {"AMQ9669E", "CTGSK2137W"}


# --- the command ----------------------------------------------------------------------------

def p11spy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([P11SPY, *args], capture_output=True, text=True, timeout=60)


def test_cli_text_and_exit_status() -> None:
    bad = p11spy("diagnose", str(FIXTURES / "pkcs11-spy" / "real-0.23-login-wrong-pin.log"))
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[0].endswith("real-0.23-login-wrong-pin.log: 1 error")
    assert "[error] Wrong PIN: 1 failed login(s)  (pin-incorrect)" in bad.stdout
    assert "what to do:" in bad.stdout and "evidence:" in bad.stdout
    good = p11spy("diagnose", str(FIXTURES / "pkcs11-spy" / "real-0.23-keypair-sign.log"))
    assert good.returncode == 0 and "no findings" in good.stdout


def test_cli_json_lines() -> None:
    path = FIXTURES / "pkcs11-spy" / "written-0.24-windows-pt-crlf.log"
    r = p11spy("diagnose", "--json", str(path))
    assert r.returncode == 1
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["rule"] for x in rows] == ["pin-encoding", "not-logged-in"]
    for x in rows:
        assert x["type"] == "finding" and x["file"] == str(path)
        assert set(x) >= {"rule", "severity", "title", "explanation", "action", "evidence",
                          "seqs", "codes", "code_meanings", "pid", "data"}
        assert x["seqs"] == [e["seq"] for e in x["evidence"]]


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    r = p11spy("diagnose", str(tmp_path / "missing.p11"))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == f"p11spy diagnose: {tmp_path / 'missing.p11'}: no such file"
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    r = p11spy("diagnose", str(empty))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_cli_min_severity_and_token_label() -> None:
    path = FIXTURES / "opensc-debug" / "real-0.23-card-list-debug3.log"
    if not path.exists():
        pytest.skip("fixture not in this checkout")
    r = p11spy("diagnose", "--min-severity", "warning", str(path))
    assert r.returncode == 0 and r.stdout.strip().endswith("no findings")
    spy = FIXTURES / "pkcs11-spy" / "real-0.23-login-list-objects.log"
    r = p11spy("diagnose", "--token-label", "mytoken", "--json", str(spy))
    assert r.returncode == 1
    [row] = [json.loads(x) for x in r.stdout.splitlines()]
    assert row["rule"] == "token-label-not-found"
    assert row["data"] == {"wanted": "mytoken", "seen": ["fixture"], "near": None}
    assert p11spy("diagnose", "--token-label", "fixture", str(spy)).returncode == 0


# --- healthy real clients: no false finding ------------------------------------------------

def test_healthy_real_clients_have_no_finding(token, tmp_path: Path) -> None:
    """pkcs11-tool (key pair, signature), GnuTLS's p11tool and NSS's certutil, each under
    `p11spy run` on a SoftHSM2 token. NSS opens a session on SoftHSM's uninitialised slot
    (CKR_TOKEN_NOT_RECOGNIZED there is no unknown card) and looks for a certificate to go
    with each key (a miss there is no missing object)."""
    env = {k: v for k, v in token.env.items() if not k.startswith("P11SPY_")}
    m = token.module
    data = tmp_path / "data"
    data.write_bytes(b"healthy")
    nss = tmp_path / "nss"
    nss.mkdir()
    pw = tmp_path / "pw"
    pw.write_text(USER_PIN + "\n")
    steps = [
        ("pkcs11-tool", ["pkcs11-tool", "--module", m, "--token-label", LABEL, "--login",
                         "--pin", USER_PIN, "--keypairgen", "--key-type", "rsa:2048", "--id",
                         "01", "--label", "k1"], {}),
        ("pkcs11-tool", ["pkcs11-tool", "--module", m, "--token-label", LABEL, "--login",
                         "--pin", USER_PIN, "--sign", "--id", "01", "-m", "SHA256-RSA-PKCS",
                         "-i", str(data), "-o", str(tmp_path / "sig")], {}),
        ("p11tool", ["p11tool", "--provider", m, "--login", "--list-all",
                     f"pkcs11:token={LABEL}"], {"GNUTLS_PIN": USER_PIN}),
        ("certutil", ["certutil", "-K", "-d", f"sql:{nss}", "-h", "all", "-f", str(pw)], {}),
    ]
    subprocess.run(["certutil", "-N", "-d", f"sql:{nss}", "--empty-password"], env=env,
                   check=True, capture_output=True)
    subprocess.run(["modutil", "-dbdir", f"sql:{nss}", "-add", "softhsm", "-libfile", m,
                    "-force"], env=env, check=True, capture_output=True)
    for name, cmd, extra in steps:
        out = tmp_path / f"{name}.p11"
        r = subprocess.run([P11SPY, "run", "-o", str(out), "--", *cmd], env={**env, **extra},
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (name, r.stdout, r.stderr)
    for name in ("pkcs11-tool", "p11tool", "certutil"):
        findings, _ = diagnosed(tmp_path / f"{name}.p11")
        assert above_info(findings) == [], (name, [f.title for f in findings])
    findings, events = diagnosed(tmp_path / "certutil.p11")
    assert any(isinstance(e, Call) and e.rv_name == "CKR_TOKEN_NOT_RECOGNIZED" for e in events)


@pytest.mark.parametrize("name", fixture_names())
def test_codes_a_finding_calls_seen_are_in_the_trace(name: str) -> None:
    """A finding's `codes` are what the trace shows: each by its name, or its number as the
    trace writes it (OpenSC's "returning with: -1214", PC/SC's 0x8010001D), or a status word
    of its pattern (63C2 for 63Cx). What it does not show is a related code."""
    path = FIXTURES / name
    findings, events = diagnosed(path)
    raw = path.read_bytes().decode("latin-1").upper()
    shown = raw + "\n".join(json.dumps(e.to_json(), default=str) for e in events).upper()
    sws = {e.sw for e in events if isinstance(e, Apdu) and e.sw}
    for f in findings:
        for c in f.codes:
            code = codes.lookup(c)[0].code
            numbers = () if code.value is None else (str(code.value), f"{code.value:X}")
            assert c.upper() in shown or any(n in shown for n in numbers) or \
                (c.endswith("x") and any(sw.startswith(c[:-1].upper()) for sw in sws)), \
                (f.rule, c)


def test_the_step_after_a_failed_step_points_back_to_it(token, tmp_path: Path) -> None:
    """pkcs11-tool signs with CKM_ECDSA using an RSA key on SoftHSM2: C_SignInit accepts it,
    C_Sign fails (CKR_GENERAL_ERROR), pkcs11-tool tries the multi-part way and stops on
    C_SignUpdate -> CKR_OPERATION_NOT_INITIALIZED. The finding names the call it stopped on
    and cites the earlier failure of the same operation as where to look first."""
    env = {k: v for k, v in token.env.items() if not k.startswith("P11SPY_")}
    tool = ["pkcs11-tool", "--module", token.module, "--login", "--pin", USER_PIN]
    r = subprocess.run([*tool, "--keypairgen", "--key-type", "rsa:2048", "--id", "01"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    data = tmp_path / "data"
    data.write_bytes(b"to sign")
    out = tmp_path / "ecdsa.p11"
    r = subprocess.run([P11SPY, "run", "-o", str(out), "--", *tool, "--sign", "--id", "01",
                        "-m", "ECDSA", "-i", str(data), "-o", str(tmp_path / "sig")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, r.stderr
    findings, events = diagnosed(out)
    [first, *rest] = above_info(findings)
    assert first.rule == "client-stopped" and rest == [], [f.title for f in findings]
    calls = [c for c in events if isinstance(c, Call) and c.rv]
    stop, origin = calls[-1], calls[-2]
    assert stop.rv_name == "CKR_OPERATION_NOT_INITIALIZED" and origin.function == "C_Sign"
    assert first.data["stopped_at"] == stop.seq and first.data["origin"] == origin.seq
    assert first.seqs == [origin.seq, stop.seq]
    assert f"C_Sign -> {origin.rv_name} (#{origin.seq}), an earlier failure of the same " \
           "operation" in first.explanation


def test_a_new_pin_too_short_to_set(token, tmp_path: Path) -> None:
    """pkcs11-tool --change-pin with a new PIN of 2 digits on SoftHSM2 (PINs of 4-255 bytes):
    C_SetPIN -> CKR_PIN_LEN_RANGE. The new PIN's length against the token's range leads, not
    a bare "gave up after"."""
    env = {k: v for k, v in token.env.items() if not k.startswith("P11SPY_")}
    out = tmp_path / "setpin.p11"
    r = subprocess.run([P11SPY, "run", "-o", str(out), "--", "pkcs11-tool", "--module",
                        token.module, "--login", "--pin", USER_PIN, "--change-pin", "--new-pin",
                        "12"], env=env, capture_output=True, text=True, timeout=60)
    assert "CKR_PIN_LEN_RANGE" in r.stderr, r.stderr
    findings, events = diagnosed(out)
    [first, *rest] = above_info(findings)
    assert first.rule == "pin-length" and rest == [], [f.title for f in findings]
    assert first.title == "New PIN of 2 bytes, outside the token's 4-255"
    assert [(c.function, c.rv_name) for c in cited_calls(first, events)] == [
        ("C_GetTokenInfo", "CKR_OK"), ("C_SetPIN", "CKR_PIN_LEN_RANGE")]
    assert first.data["stopped_at"] == cited_calls(first, events)[-1].seq
