"""`p11spy replay`: real clients recorded over SoftHSM2 through the shim, then answered by the
replay module alone (SoftHSM's token folder removed), with the same output and exit status;
clients that depart from the recording are told so at the call where they do."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from p11spy.decoder.events import Call
from p11spy.facts.logformat import RecordType
from tests.conftest import USER_PIN, Token, make_token, read_trace, run
from tests.test_shim_entry import records

PY = sys.executable
P11SPY = [PY, "-m", "p11spy.cli.main"]

# A python-pkcs11 client: finds a key by label, signs, prints what a user would see.
PY_CLIENT = """
import sys, pkcs11
from pkcs11 import Mechanism, ObjectClass
lib = pkcs11.lib(sys.argv[1])
token = lib.get_token(token_label=sys.argv[2])
print("token", token.label, token.manufacturer_id)
with token.open(user_pin=sys.argv[3]) as s:
    key = s.get_key(object_class=ObjectClass.PRIVATE_KEY, label=sys.argv[4])
    print("key", key.label, key.key_type)
    sig = key.sign(b"data to sign", mechanism=Mechanism.ECDSA)
    print("signature", len(sig), sig.hex())
"""


def read_calls(path: Path) -> list[Call]:
    return [e for e in read_trace(path) if isinstance(e, Call)]


def need(tool: str) -> None:
    if not shutil.which(tool):
        pytest.fail(f"{tool} is missing: run `make setup`")


@pytest.fixture
def keys_token(tmp_path: Path) -> Token:
    """A SoftHSM2 token with two EC key pairs, k1 (id 01) and k2 (id 02)."""
    return make_keys_token(tmp_path / "hsm")


def make_keys_token(root: Path) -> Token:
    need("pkcs11-tool")
    tok = make_token(root)
    for label, kid in (("k1", "01"), ("k2", "02")):
        subprocess.run(["pkcs11-tool", "--module", tok.module, "--login", "--pin", USER_PIN,
                        "--keypairgen", "--key-type", "EC:prime256v1", "--label", label,
                        "--id", kid], env=tok.env, check=True, capture_output=True)
    return tok


def record(cmd: list[str], tok: Token, trace: Path, spy_env,
           shim_for) -> subprocess.CompletedProcess:
    """Runs cmd (MODULE in it stands for the module) through the shim over the token."""
    shim = str(shim_for(tok.module))
    return run([shim if a == "MODULE" else a for a in cmd], spy_env(tok, trace))


def replay_module(trace: Path, folder: Path) -> str:
    res = run([*P11SPY, "replay", "--lib", str(trace), "-o", str(folder)], {})
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def without_token(tok: Token) -> dict[str, str]:
    """The environment of a replayed run: SoftHSM's tokens gone, no spy settings."""
    shutil.rmtree(tok.conf.parent / "tokens", ignore_errors=True)
    return {k: v for k, v in tok.env.items()
            if not k.startswith(("P11SPY_", "PKCS11SPY", "SOFTHSM2_CONF"))}


def replayed(cmd: list[str], module: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run([module if a == "MODULE" else a for a in cmd], env)


def matches(folder: Path) -> list[list[dict]]:
    """The .match lines of each replayed run in the folder, oldest first."""
    files = sorted(folder.glob("*.match"), key=lambda p: p.stat().st_mtime_ns)
    return [[json.loads(line) for line in f.read_text().splitlines()] for f in files]


SIGN = ["pkcs11-tool", "--module", "MODULE", "--login", "--pin", USER_PIN, "--sign", "-m",
        "ECDSA", "--id", "01", "-i", "DATA", "-o", "SIG"]


def sign_cmd(tmp_path: Path) -> list[str]:
    """SIGN with a data file of its own, writing the signature to tmp_path/sig."""
    data = tmp_path / "data"
    data.write_bytes(b"to be signed\n")
    return [str(data) if a == "DATA" else str(tmp_path / "sig") if a == "SIG" else a
            for a in SIGN]


@pytest.mark.parametrize("args", [
    ["-L"],
    ["-O"],
    ["--login", "--pin", USER_PIN, "-O"],
    ["--login", "--pin", "9999", "-O"],  # a wrong PIN: the recorded failure happens again
], ids=["list-slots", "list-objects", "login-list-objects", "wrong-pin"])
def test_pkcs11_tool_replayed_without_the_token(args, keys_token, tmp_path, spy_env, shim_for):
    cmd = ["pkcs11-tool", "--module", "MODULE", *args]
    trace = tmp_path / "rec.p11"
    rec = record(cmd, keys_token, trace, spy_env, shim_for)
    module = replay_module(trace, tmp_path / "replay")
    got = replayed(cmd, module, without_token(keys_token))
    assert got.stdout == rec.stdout
    assert got.returncode == rec.returncode
    if "9999" in args:
        assert rec.returncode != 0 and "CKR_PIN_INCORRECT" in rec.stderr
        assert "CKR_PIN_INCORRECT" in got.stderr
    else:
        assert rec.returncode == 0, rec.stderr
    (run_matches,) = matches(tmp_path / "replay")
    assert {m["match"] for m in run_matches} == {"exact"}
    # the replay wrote its own trace, which decodes like a recorded one: the same calls with
    # the same return values, so a comparison of the two runs lines them up
    (own,) = (tmp_path / "replay").glob("pkcs11-tool-*.p11")
    decoded = run([*P11SPY, "decode", str(own)], {})
    assert decoded.returncode == 0 and "p11spy replay of" in decoded.stdout
    assert [(c.function, c.rv) for c in read_calls(own)] == \
        [(c.function, c.rv) for c in read_calls(trace)]


def test_sign_replayed_gives_the_recorded_signature(keys_token, tmp_path, spy_env, shim_for):
    data = tmp_path / "data"
    data.write_bytes(b"to be signed\n")
    cmd = [str(data) if a == "DATA" else a for a in SIGN]
    rec = record([str(tmp_path / "sig1") if a == "SIG" else a for a in cmd], keys_token,
                 tmp_path / "rec.p11", spy_env, shim_for)
    assert rec.returncode == 0, rec.stderr
    module = replay_module(tmp_path / "rec.p11", tmp_path / "replay")
    env = without_token(keys_token)
    # another PIN of the same length and class is taken: the recorded one was masked
    other_pin = [("4321" if a == USER_PIN else str(tmp_path / "sig2") if a == "SIG" else a)
                 for a in cmd]
    got = replayed(other_pin, module, env)
    assert (got.stdout, got.returncode) == (rec.stdout, rec.returncode)
    assert (tmp_path / "sig2").read_bytes() == (tmp_path / "sig1").read_bytes()
    login = [m for m in matches(tmp_path / "replay")[0] if m["function"] == "C_Login"]
    assert login[0]["match"] == "exact"
    assert "PIN matched by length (and class)" in login[0]["notes"]

    # other data to sign: tolerated (it may hold a time), the recorded signature comes back
    data.write_bytes(b"other data, signed at 12:00\n")
    got = replayed([str(tmp_path / "sig3") if a == "SIG" else a for a in cmd], module, env)
    assert got.returncode == 0, got.stderr
    sign = [m for m in matches(tmp_path / "replay")[1] if m["function"] == "C_Sign"]
    assert sign[0]["match"] == "tolerated" and sign[0]["notes"] == ["data differs"]


@pytest.mark.parametrize("change,function,param", [
    (("--id", "02"), "C_FindObjectsInit", "pTemplate"),  # another key
    (("-m", "ECDSA-SHA256"), "C_SignInit", "pMechanism"),  # another mechanism
    (("--pin", "12345"), "C_Login", "pPin"),  # a PIN of another length
], ids=["other-key", "other-mechanism", "other-pin-length"])
def test_a_client_that_departs_is_told_at_that_call(change, function, param, keys_token,
                                                    tmp_path, spy_env, shim_for):
    cmd = sign_cmd(tmp_path)
    rec = record(cmd, keys_token, tmp_path / "rec.p11", spy_env, shim_for)
    assert rec.returncode == 0, rec.stderr
    module = replay_module(tmp_path / "rec.p11", tmp_path / "replay")
    flag, value = change
    other = [*cmd]
    other[other.index(flag) + 1] = value
    got = replayed(other, module, without_token(keys_token))
    assert got.returncode != 0
    assert f"departs from the recording at {function}" in got.stderr
    assert "CKR_FUNCTION_FAILED" in got.stderr  # the client names the failure
    (run_matches,) = matches(tmp_path / "replay")
    diverged = [m for m in run_matches if m["match"] == "diverged"]
    assert diverged[0]["function"] == function
    assert diverged[0]["why"].startswith(f"{param} differs")
    # every call before it matched
    before = run_matches[:run_matches.index(diverged[0])]
    assert before and all(m["match"] == "exact" for m in before)
    report = run([*P11SPY, "replay", "--report", str(tmp_path / "replay")], {})
    assert report.returncode == 1
    # numbered as decode numbers the calls: the replay's in its trace, the recorded in theirs
    (own,) = (tmp_path / "replay").glob("*.p11")
    mine = [c.seq for c in read_calls(own) if c.function == function][0]
    theirs = [c.seq for c in read_calls(tmp_path / "rec.p11") if c.function == function][0]
    assert f"#{mine} {function}: diverged (recorded #{theirs})" in report.stdout
    assert f"recorded call #{theirs}" in got.stderr


@pytest.mark.parametrize("change,function,param", [
    (None, None, None),
    (("--id", "02"), "C_FindObjectsInit", "pTemplate"),  # another key
    (("-m", "ECDSA-SHA256"), "C_SignInit", "pMechanism"),  # another mechanism
], ids=["faithful", "other-key", "other-mechanism"])
def test_diff_of_the_recording_and_the_replays_own_trace(change, function, param, keys_token,
                                                         tmp_path, spy_env, shim_for):
    """The replay's own trace (with an entry record before each call, as the shim writes)
    decodes each call once, and `p11spy diff RECORDED REPLAYED` finds the run alike when the
    client asked what was recorded, and parting at the call where it did not."""
    cmd = sign_cmd(tmp_path)
    trace = tmp_path / "rec.p11"
    rec = record(cmd, keys_token, trace, spy_env, shim_for)
    assert rec.returncode == 0, rec.stderr
    module = replay_module(trace, tmp_path / "replay")
    client = [*cmd]
    if change is not None:
        client[client.index(change[0]) + 1] = change[1]
    got = replayed(client, module, without_token(keys_token))
    assert (got.returncode == 0) == (change is None), got.stderr
    (own,) = (tmp_path / "replay").glob("pkcs11-tool-*.p11")

    kinds = records(own)
    calls = read_calls(own)
    assert kinds[RecordType.ENTRY] == kinds[RecordType.CALL] == len(calls)
    assert len({c.call_number for c in calls}) == len(calls)
    assert not any(c.never_returned for c in calls)
    decoded = run([*P11SPY, "decode", str(own)], {})
    assert decoded.returncode == 0 and "never returned" not in decoded.stdout

    diff = run([*P11SPY, "diff", str(trace), str(own)], {})
    as_json = run([*P11SPY, "diff", "--json", str(trace), str(own)], {})
    if change is None:
        assert diff.returncode == 0, diff.stdout
        assert "No difference." in diff.stdout
        return
    assert diff.returncode == 1
    first = json.loads(as_json.stdout)["first"]
    # the right call: the recorded one the client departed from, and the replay's own call
    assert first["good"]["seq"] == next(c.seq for c in read_calls(trace)
                                        if c.function == function)
    assert first["bad"]["seq"] == next(c.seq for c in calls if c.function == function)
    assert first["bad"]["rv"] == "CKR_FUNCTION_FAILED"
    assert first["arguments"] and all(a["path"].startswith(param) for a in first["arguments"])
    text_first = diff.stdout.split("First divergence:\n")[1].splitlines()[0]
    assert text_first.startswith(f"  {function}: GOOD call {first['good']['index']} ")


def test_python_pkcs11_replayed_and_diverging(keys_token, tmp_path, spy_env, shim_for):
    script = tmp_path / "client.py"
    script.write_text(PY_CLIENT)
    cmd = [PY, str(script), "MODULE", keys_token.label, USER_PIN, "k2"]
    rec = record(cmd, keys_token, tmp_path / "rec.p11", spy_env, shim_for)
    assert rec.returncode == 0, rec.stderr
    assert "signature 64" in rec.stdout
    module = replay_module(tmp_path / "rec.p11", tmp_path / "replay")
    env = without_token(keys_token)
    got = replayed(cmd, module, env)
    assert (got.stdout, got.returncode) == (rec.stdout, rec.returncode), got.stderr
    other = replayed([*cmd[:-1], "k1"], module, env)
    assert other.returncode != 0
    diverged = [m for m in matches(tmp_path / "replay")[1] if m["match"] == "diverged"]
    assert diverged[0]["function"] == "C_FindObjectsInit"


def test_replay_refuses_what_it_cannot_play(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a trace\n")
    res = run([*P11SPY, "replay", "--lib", str(text)], {})
    assert res.returncode != 0
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    res = run([*P11SPY, "replay", "--lib", str(tmp_path / "missing.p11")], {})
    assert res.returncode != 0 and "no such file" in res.stderr


def set_sign(tok: Token, label: str, value: bool) -> None:
    """Sets CKA_SIGN of a private key (python-pkcs11, straight to SoftHSM2)."""
    code = ("import sys, pkcs11\nfrom pkcs11 import Attribute, ObjectClass\n"
            "tok = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])\n"
            "with tok.open(user_pin=sys.argv[3], rw=True) as s:\n"
            "    k = s.get_key(object_class=ObjectClass.PRIVATE_KEY, label=sys.argv[4])\n"
            "    k[Attribute.SIGN] = sys.argv[5] == '1'\n")
    subprocess.run([PY, "-c", code, tok.module, tok.label, USER_PIN, label,
                    "1" if value else "0"], env=tok.env, check=True, capture_output=True)


def rv_changes(report: dict) -> list[tuple]:
    """The calls of a diff --json object (or --against's) whose return value differs: call
    number, function and return value on each side."""
    return [(d["good"]["index"], d["good"]["function"], d["good"]["rv"], d["bad"]["index"],
             d["bad"]["rv"]) for d in report["divergences"]
            if any(r["path"] == "rv" for r in d["results"])]


def test_against_a_token_where_the_key_may_not_sign(keys_token, tmp_path, spy_env, shim_for):
    """Recorded on one token, re-issued against a copy where k1 lacks CKA_SIGN: exactly the
    C_SignInit fails, and the C_Sign after it is not made (it would fail for that reason).
    Reported in `p11spy diff`'s presentation: the recording is GOOD, the module BAD."""
    cmd = sign_cmd(tmp_path)
    lab = keys_token.copy(tmp_path / "lab")
    rec = record(cmd, keys_token, tmp_path / "rec.p11", spy_env, shim_for)
    assert rec.returncode == 0, rec.stderr
    against = [*P11SPY, "replay", "--against", lab.module, str(tmp_path / "rec.p11"), "--pin",
               USER_PIN]
    same = run(against, lab.env)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "No difference." in same.stdout and " 0 differ, 0 only in GOOD" in same.stdout

    set_sign(lab, "k1", False)
    res = run(against, lab.env)
    assert res.returncode == 1, res.stderr
    first = res.stdout.split("First divergence:\n")[1].splitlines()
    assert first[0].startswith("  C_SignInit: GOOD call ")
    assert first[1] == "    got back rv: GOOD CKR_OK | BAD CKR_KEY_FUNCTION_NOT_PERMITTED"
    signinit = first[0].split("GOOD call ")[1].split()[0].rstrip(",")
    assert f"C_Sign: not made: follows from call {signinit} C_SignInit" in res.stdout

    as_json = run([*against, "--json"], lab.env)
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    # exactly one call answers otherwise, and it is the first divergence
    assert rv_changes(report) == [(int(signinit), "C_SignInit", "CKR_OK", int(signinit),
                                   "CKR_KEY_FUNCTION_NOT_PERMITTED")]
    assert report["first"]["good"]["function"] == "C_SignInit"
    (not_made,) = [d for d in report["divergences"] if d["kind"] == "only good"]
    assert not_made["good"]["function"] == "C_Sign" and "follows from" in not_made["note"]

    # the re-issued calls recorded by the shim: diff of the recording with them says the same
    res = run([*against, "-o", str(tmp_path / "against.p11")], lab.env)
    assert res.returncode == 1
    again = run([*against, "-o", str(tmp_path / "against.p11")], lab.env)  # appended to it
    offsets = re.compile(r"\(offset \d+\)")  # its calls are further on in the file
    assert offsets.sub("", again.stdout) == offsets.sub("", res.stdout)
    (tmp_path / "against.p11").unlink()
    res = run([*against, "-o", str(tmp_path / "against.p11")], lab.env)
    signinit_calls = [c for c in read_calls(tmp_path / "against.p11")
                      if c.function == "C_SignInit"]
    assert [c.rv_name for c in signinit_calls] == ["CKR_KEY_FUNCTION_NOT_PERMITTED"]
    diff = run([*P11SPY, "diff", "--json", str(tmp_path / "rec.p11"),
                str(tmp_path / "against.p11")], {})
    assert diff.returncode == 1
    assert rv_changes(json.loads(diff.stdout)) == rv_changes(report)

    from_stdin = subprocess.run([*against[:-1], "-", "--json"], input=USER_PIN + "\n",
                                env=lab.env, capture_output=True, text=True, timeout=120)
    assert rv_changes(json.loads(from_stdin.stdout)) == rv_changes(report)

    no_pin = run(against[:-2], lab.env)
    assert no_pin.returncode == 1
    assert "C_Login: not made: the recorded USER PIN is masked: give --pin" in no_pin.stdout


def test_against_another_token_takes_its_slot_for_the_recorded_one(keys_token, tmp_path,
                                                                     spy_env, shim_for):
    """Another token made the same way (its label, key labels and IDs; other key material, a
    slot of another ID): the calls made on its slot are no finding for the slot's sake; what
    differs is what a user would see differ (its serial number and slot description)."""
    cmd = sign_cmd(tmp_path)
    rec = record(cmd, keys_token, tmp_path / "rec.p11", spy_env, shim_for)
    assert rec.returncode == 0, rec.stderr
    other = make_keys_token(tmp_path / "other")
    res = run([*P11SPY, "replay", "--against", other.module, str(tmp_path / "rec.p11"), "--pin",
               USER_PIN, "--json", "-o", str(tmp_path / "other.p11")], other.env)
    assert res.returncode == 1, res.stderr
    slot = {t: next(c.args["slotID"] for c in read_calls(t) if c.function == "C_GetSlotInfo")
            for t in (tmp_path / "rec.p11", tmp_path / "other.p11")}
    assert len(set(slot.values())) == 2  # the slot IDs do differ
    report = json.loads(res.stdout)
    assert rv_changes(report) == [] and {d["kind"] for d in report["divergences"]} == {"changed"}
    paths = {d["path"] for s in report["divergences"] for d in [*s["arguments"], *s["results"]]}
    assert "pInfo.serialNumber" in paths
    assert not any(p.startswith(("slotID", "pSlotList")) for p in paths), paths


def test_against_refuses_what_is_no_module(keys_token, tmp_path, spy_env, shim_for):
    record(["pkcs11-tool", "--module", "MODULE", "-L"], keys_token, tmp_path / "rec.p11",
           spy_env, shim_for)
    res = run([*P11SPY, "replay", "--against", str(tmp_path / "nothing.so"),
               str(tmp_path / "rec.p11")], {})
    assert res.returncode != 0
    assert res.stderr.count("\n") == 1 and "cannot load" in res.stderr


SECRET_CLIENT = """
import sys, pkcs11
from pkcs11 import Attribute, KeyType, ObjectClass
tok = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
with tok.open(user_pin=sys.argv[3], rw=True) as s:
    if sys.argv[4] == "make":
        s.generate_key(KeyType.AES, 128, label="aes", store=True,
                       template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
    else:
        value = s.get_key(object_class=ObjectClass.SECRET_KEY, label="aes")[Attribute.VALUE]
        print("value", len(value), value.hex())
"""


def test_masked_key_values_come_back_as_zeros_marked_unavailable(keys_token, tmp_path, spy_env,
                                                                 shim_for):
    script = tmp_path / "secret.py"
    script.write_text(SECRET_CLIENT)
    base = [PY, str(script), keys_token.module, keys_token.label, USER_PIN]
    subprocess.run([*base, "make"], env=keys_token.env, check=True, capture_output=True)
    cmd = [PY, str(script), "MODULE", keys_token.label, USER_PIN, "read"]
    rec = record(cmd, keys_token, tmp_path / "rec.p11", spy_env, shim_for)
    assert rec.returncode == 0 and rec.stdout.startswith("value 16 "), rec.stderr
    lib = run([*P11SPY, "replay", "--lib", str(tmp_path / "rec.p11"), "-o",
               str(tmp_path / "replay")], {})
    assert "secrets unavailable" in lib.stderr
    got = replayed(cmd, lib.stdout.strip(), without_token(keys_token))
    assert got.stdout == "value 16 " + "00" * 16 + "\n"
    notes = [m for ms in matches(tmp_path / "replay") for m in ms if m["notes"]]
    assert any("secrets unavailable" in m["notes"] for m in notes)
    (own,) = (tmp_path / "replay").glob("*.p11")
    decoded = run([*P11SPY, "decode", str(own)], {})
    assert "(secrets unavailable)" in decoded.stdout


def test_a_damaged_script_fails_every_call_with_one_line(keys_token, tmp_path, spy_env,
                                                         shim_for):
    cmd = ["pkcs11-tool", "--module", "MODULE", "-L"]
    record(cmd, keys_token, tmp_path / "rec.p11", spy_env, shim_for)
    module = replay_module(tmp_path / "rec.p11", tmp_path / "replay")
    script = tmp_path / "replay" / "replay.p11r"
    script.write_bytes(script.read_bytes()[:100])
    got = replayed(cmd, module, without_token(keys_token))
    assert got.returncode != 0
    assert "p11spy: replay: the replay script" in got.stderr and "damaged" in got.stderr
    assert "Segmentation" not in got.stderr


def nss_db(d: Path, module: str, env: dict[str, str]) -> str:
    """A new NSS database with module added by modutil; its sql: name."""
    d.mkdir()
    db = f"sql:{d}"
    subprocess.run(["certutil", "-N", "-d", db, "--empty-password"], check=True,
                   capture_output=True)
    subprocess.run(["modutil", "-dbdir", db, "-add", "p11", "-libfile", module, "-force"],
                   input="\n", text=True, env=env, check=True, capture_output=True)
    return db


def test_nss_certutil_replayed_through_modutil(keys_token, tmp_path, spy_env, shim_for):
    """The printed path works as NSS's module, added with modutil and no environment: certutil
    lists the token's keys from the replay as it did from SoftHSM (NSS seeds the token's
    random generator with data of its own: tolerated)."""
    need("certutil")
    need("modutil")
    env = spy_env(keys_token, tmp_path / "modutil.p11")
    db = nss_db(tmp_path / "nss", str(shim_for(keys_token.module)), env)
    cmd = ["certutil", "-K", "-d", "DB", "-h", keys_token.label, "-f", "PWFILE"]
    pw = tmp_path / "pw"
    pw.write_text(USER_PIN + "\n")
    rec = run([db if a == "DB" else str(pw) if a == "PWFILE" else a for a in cmd],
              spy_env(keys_token, tmp_path / "rec.p11"))
    assert rec.returncode == 0 and "k1" in rec.stdout and "k2" in rec.stdout, rec.stderr
    module = replay_module(tmp_path / "rec.p11", tmp_path / "replay")
    clean = without_token(keys_token)
    db2 = nss_db(tmp_path / "nss2", module, clean)
    pw.write_text("4321\n")  # another PIN of the same length and class
    got = run([db2 if a == "DB" else str(pw) if a == "PWFILE" else a for a in cmd], clean)
    assert (got.stdout, got.returncode) == (rec.stdout, rec.returncode), got.stderr
    certutil_run = [ms for f, ms in zip(sorted((tmp_path / "replay").glob("*.match"),
                                               key=lambda p: p.stat().st_mtime_ns),
                                        matches(tmp_path / "replay"), strict=True)
                    if f.name.startswith("certutil")]
    assert certutil_run and "diverged" not in {m["match"] for m in certutil_run[0]}


@pytest.mark.parametrize("how", ["secrets-logged", "redacted"])
def test_a_pin_recorded_in_clear_or_redacted_matches_by_length(how, keys_token, tmp_path,
                                                               spy_env, shim_for):
    cmd = sign_cmd(tmp_path)
    extra = {"P11SPY_LOG_SECRETS": "1"} if how == "secrets-logged" else {}
    shim = str(shim_for(keys_token.module))
    trace = tmp_path / "rec.p11"
    rec = run([shim if a == "MODULE" else a for a in cmd], spy_env(keys_token, trace, **extra))
    assert rec.returncode == 0, rec.stderr
    if how == "redacted":
        red = tmp_path / "red.p11"
        assert run([*P11SPY, "redact", str(trace), "-o", str(red)], {}).returncode == 0
        trace = red
    lab = keys_token.copy(tmp_path / "lab")
    against = run([*P11SPY, "replay", "--against", lab.module, str(trace), "--pin", USER_PIN],
                  lab.env)
    assert against.returncode == 0, against.stdout + against.stderr
    module = replay_module(trace, tmp_path / "replay")
    got = replayed([("4321" if a == USER_PIN else a) for a in cmd], module,
                   without_token(keys_token))
    assert (got.stdout, got.returncode) == (rec.stdout, rec.returncode), got.stderr
    login = [m for m in matches(tmp_path / "replay")[0] if m["function"] == "C_Login"]
    assert login[0]["match"] == "exact"


def test_a_cut_trace_replays_what_it_holds_and_says_so(keys_token, tmp_path, spy_env,
                                                       shim_for):
    cmd = ["pkcs11-tool", "--module", "MODULE", "-L"]
    record(cmd, keys_token, tmp_path / "rec.p11", spy_env, shim_for)
    cut = tmp_path / "cut.p11"
    whole = (tmp_path / "rec.p11").read_bytes()
    cut.write_bytes(whole[:len(whole) - 40])
    res = run([*P11SPY, "replay", "--lib", str(cut), "-o", str(tmp_path / "replay")], {})
    assert res.returncode == 0 and res.stdout.strip().endswith(".so")
    assert "ends inside a record" in res.stderr


DATED_CLIENT = """
import datetime, sys, pkcs11
from pkcs11 import Attribute, KeyType
tok = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
with tok.open(user_pin=sys.argv[3], rw=True) as s:
    key = s.generate_key(KeyType.AES, 128, label=sys.argv[5], store=False,
                         template={Attribute.START_DATE: datetime.date.fromisoformat(sys.argv[4])})
    print("made", key.label)
"""


@pytest.mark.parametrize("date,label,match", [
    ("2026-12-24", "aes", "tolerated"),  # another date in the template: tolerated
    ("2026-12-06", "other", "diverged"),  # another label: a departure
])
def test_a_template_date_may_differ_a_label_may_not(date, label, match, keys_token, tmp_path,
                                                    spy_env, shim_for):
    script = tmp_path / "dated.py"
    script.write_text(DATED_CLIENT)
    cmd = [PY, str(script), "MODULE", keys_token.label, USER_PIN, "2026-12-06", "aes"]
    rec = record(cmd, keys_token, tmp_path / "rec.p11", spy_env, shim_for)
    assert rec.returncode == 0, rec.stderr
    module = replay_module(tmp_path / "rec.p11", tmp_path / "replay")
    replayed([*cmd[:-2], date, label], module, without_token(keys_token))
    (run_matches,) = matches(tmp_path / "replay")
    gen = [m for m in run_matches if m["function"] == "C_GenerateKey"]
    assert gen[0]["match"] == match
    if match == "tolerated":
        assert gen[0]["notes"] == ["data differs"]
    else:
        assert gen[0]["why"].startswith("pTemplate differs")


def test_a_mangled_script_never_crashes_the_client(keys_token, tmp_path, spy_env, shim_for):
    """Scripts cut anywhere or with bytes changed: the client gets answers or errors, never a
    crash (the module checks every length it reads)."""
    import random

    cmd = ["pkcs11-tool", "--module", "MODULE", "--login", "--pin", USER_PIN, "-O"]
    record(cmd, keys_token, tmp_path / "rec.p11", spy_env, shim_for)
    module = replay_module(tmp_path / "rec.p11", tmp_path / "replay")
    script = tmp_path / "replay" / "replay.p11r"
    good = script.read_bytes()
    env = without_token(keys_token)
    rng = random.Random(18)
    variants = [good[:n] for n in range(0, len(good), max(1, len(good) // 12))]
    for _ in range(24):
        b = bytearray(good)
        for _ in range(4):
            b[rng.randrange(len(b))] = rng.randrange(256)
        variants.append(bytes(b))
    for v in variants:
        script.write_bytes(v)
        got = replayed(cmd, module, env)
        assert got.returncode >= 0, (got.returncode, got.stderr)  # not killed by a signal


def test_a_client_that_reloads_the_module_goes_on_in_the_recording(keys_token, tmp_path,
                                                                     spy_env, shim_for):
    """A plug-in host: three rounds of dlopen, C_Initialize, C_GetInfo, C_Finalize, dlclose.
    The replay answers each round from its own part of the recording, in one trace."""
    from tests.cprogs import build

    prog = str(build("reload", tmp_path))
    shim = str(shim_for(keys_token.module))
    rec = run([prog, shim, keys_token.module, "3"], spy_env(keys_token, tmp_path / "rec.p11"))
    assert "failures 0" in rec.stdout, rec.stdout + rec.stderr
    module = replay_module(tmp_path / "rec.p11", tmp_path / "replay")
    got = run([prog, module, keys_token.module, "3"], without_token(keys_token))
    assert "failures 0" in got.stdout, got.stdout + got.stderr
    (run_matches,) = matches(tmp_path / "replay")
    assert [m["at"] for m in run_matches] == list(range(1, 13))
    # numbered as decode numbers the recorded calls (the shim's own count restarted)
    assert [m["recorded"] for m in run_matches] == \
        [c.seq for c in read_calls(tmp_path / "rec.p11")]
    assert {m["match"] for m in run_matches} == {"exact"}


POLL_CLIENT = """
import sys, pkcs11
lib = pkcs11.lib(sys.argv[1])
for _ in range(int(sys.argv[2])):  # a poll: is the token still there?
    slots = lib.get_slots(token_present=True)
token = slots[0].get_token()
with token.open(user_pin=sys.argv[3]) as s:
    print("token", token.label, len(list(s.get_objects())), "objects")
"""


@pytest.mark.parametrize("recorded,replayed_polls", [(1, 3), (3, 1)])
def test_a_client_that_polls_more_or_less_than_recorded(recorded, replayed_polls, keys_token,
                                                        tmp_path, spy_env, shim_for):
    """A poll on a timer (SunPKCS11 asks whether the token is present) runs as often as the
    clock says: an extra query gets the latest recorded answer again, a missing one is passed
    over, and the calls after it still match in order."""
    script = tmp_path / "poll.py"
    script.write_text(POLL_CLIENT)
    cmd = [PY, str(script), "MODULE", str(recorded), USER_PIN]
    rec = record(cmd, keys_token, tmp_path / "rec.p11", spy_env, shim_for)
    assert rec.returncode == 0, rec.stderr
    module = replay_module(tmp_path / "rec.p11", tmp_path / "replay")
    got = replayed([*cmd[:3], str(replayed_polls), USER_PIN], module, without_token(keys_token))
    assert (got.stdout, got.returncode) == (rec.stdout, 0), got.stderr
    (run_matches,) = matches(tmp_path / "replay")
    assert {m["match"] for m in run_matches} <= {"exact", "answered"}
    repeated = [m for m in run_matches if "repeats an earlier answer" in m["notes"]]
    assert bool(repeated) == (replayed_polls > recorded)
    assert all(m["function"] in ("C_GetSlotList", "C_GetSlotInfo") for m in repeated)
    assert not [m for m in run_matches if "out of order" in m["notes"]]
