"""OpenSC pkcs11-spy text logs read into the same events as p11spy's own traces.

Counts are computed here from the raw text of each fixture (call headers, "Returned:" lines,
banners, P/T lines) and compared with what the reader makes of it; then specific calls and
argument values are checked, and the decoding is compared, call by call, with p11spy's own
trace of the same client run (the shim in front of pkcs11-spy in front of SoftHSM2).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import difflib
import json
import random
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p11spy.decoder.events import Call, Event, Process, TraceWarning
from p11spy.decoder.formats import registry as commands
from p11spy.decoder.formats.p11spy import reader as p11log
from p11spy.decoder.formats.pkcs11_spy import reader as pkcs11spy_text
from p11spy.decoder.values import rv_name
from p11spy.facts import logformat
from tests import readers
from tests.conftest import REPO, Token
from tests.readers import of

FIXTURES = REPO / "fixtures" / "pkcs11-spy"
P11SPY = str(Path(sys.executable).parent / "p11spy")
SPY_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so"

HEADER = re.compile(r"^(\d+): (\S+)$", re.M)
RETURNED = re.compile(r"Returned:  (-?\d+) (\S+)")
PT_LINE = re.compile(r"^P:(\d+); T:(?:0x)?(\d+) ", re.M)
LOADED = re.compile(r'^Loaded: "(.*)"$', re.M)
STAMP = re.compile(r"^(?:P:\S+ T:\S+ )?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})$", re.M)

ALL = sorted(p.name for p in FIXTURES.glob("*.log"))
REAL = [n for n in ALL if n.startswith("real-")]
INTERLEAVED = "written-0.27-linux-interleaved-threads.log"
# Warnings each fixture must produce (substrings), and no others.
EXPECTED_WARNINGS = {INTERLEAVED: ["concurrent threads"]}


def decode(path: Path) -> list[Event]:
    return readers.decode(pkcs11spy_text.read, path)


def decode_bytes(data: bytes, tmp_path: Path, name: str = "spy.log") -> list[Event]:
    """Through a file, which the tests then give to `p11spy decode` too."""
    p = tmp_path / name
    p.write_bytes(data)
    return decode(p)


def text_of(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "replace").replace("\r\n", "\n")


def unsigned(rv: int) -> int:
    return rv + (1 << 32) if rv < 0 else rv


def calls_named(events: list[Event], name: str) -> list[Call]:
    return [c for c in of(events, Call) if c.function == name]


def dumps_after(text: str, marker: str) -> list[bytes]:
    """The bytes of every print_generic dump that follows a line containing marker,
    read here independently of the reader."""
    out = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if marker in line:
            data = b""
            for row in lines[i + 1:]:
                m = re.match(r"^    [0-9A-F]{8}  ((?:[0-9A-F]{2} )+)", row)
                if not m:
                    break
                data += bytes.fromhex(m.group(1))
            out.append(data)
    return out


# --- every fixture --------------------------------------------------------------------------


def test_fixtures_are_all_described():
    readers.assert_fixtures_described(FIXTURES, ALL, r"real output of pkcs11-spy 0\.23 made by "
                                      r"`(regenerate\.sh|testbed/record_fixtures\.py)`")


@pytest.mark.parametrize("name", ALL)
def test_fixture_decodes_with_exact_counts(name):
    path = FIXTURES / name
    text = text_of(path)
    events = decode(path)
    assert [e.seq for e in events] == list(range(len(events)))
    calls = of(events, Call)
    headers = HEADER.findall(text)
    returned = RETURNED.findall(text)
    # one call per header, one return value per "Returned:" line, in the order of headers
    assert len(calls) == len(headers) == len(returned)
    assert [c.call_number for c in calls] == [int(n) for n, _ in headers]
    assert [c.function for c in calls] == [
        "C_SetOperationState" if f == "SetOperationState" else f for _, f in headers]
    assert collections.Counter(c.rv for c in calls) == \
        collections.Counter(unsigned(int(rv)) for rv, _ in returned)
    # errors by return value, named from the project's table whatever the file says
    errors = collections.Counter(c.rv for c in calls if c.rv)
    assert errors == collections.Counter(unsigned(int(rv)) for rv, _ in returned if rv != "0")
    for c in calls:
        assert c.rv_name == rv_name(c.rv) and c.rv_name != "(null)"
    named = collections.Counter(n for _, n in returned if n != "(null)")
    assert named == collections.Counter(c.rv_name for c in calls if c.rv_name in named)
    # a Process per banner, with its module
    procs = of(events, Process)
    assert len(procs) == text.count("OpenSC PKCS#11 spy")
    assert [p.info["module"] for p in procs] == LOADED.findall(text)
    assert all(p.info["format"] == "pkcs11-spy" and p.info["secrets"] for p in procs)
    # pid and tid where the log prints them (0.24+), times everywhere
    pts = PT_LINE.findall(text)
    assert len([c for c in calls if c.pid is not None]) == len(pts)
    assert {(c.pid, c.tid) for c in calls if c.pid is not None} == \
        {(int(p), int(t)) for p, t in pts}
    assert all(c.time is not None and c.duration_us is None for c in calls)
    header_lines = [i + 1 for i, ln in enumerate(text.split("\n")) if HEADER.match(ln)]
    assert [c.source for c in calls] == [f"line {n}" for n in header_lines]
    warnings = [w.message for w in of(events, TraceWarning)]
    expected = EXPECTED_WARNINGS.get(name, [])
    assert len(warnings) == len(expected), warnings
    for part in expected:
        assert any(part in w for w in warnings), (part, warnings)
    problems = [c.args["decode_problems"] for c in calls if "decode_problems" in c.args]
    assert (problems != []) == (name == INTERLEAVED), problems
    for e in events:
        json.dumps(e.to_json())


@pytest.mark.parametrize("name", ALL)
def test_fixture_is_recognised(name):
    head = (FIXTURES / name).read_bytes()[:4096]
    assert pkcs11spy_text.sniff(head)
    assert commands.detect(FIXTURES / name) == "pkcs11-spy"


def test_other_formats_are_not_claimed(tmp_path):
    for path in (REPO / "fixtures" / "opensc-debug").glob("*.log"):
        assert not pkcs11spy_text.sniff(path.read_bytes()[:4096]), path.name
    assert not pkcs11spy_text.sniff(logformat.MAGIC + bytes(100))
    # a log cut from its banner is still recognised by its first call
    text = (FIXTURES / "real-0.23-login-wrong-pin.log").read_bytes()
    assert pkcs11spy_text.sniff(text[text.index(b"\n3: C_GetSlotList") + 1:][:4096])


def test_times_are_local_wall_clock():
    path = FIXTURES / "real-0.23-set-pin.log"
    stamps = STAMP.findall(text_of(path))
    calls = of(decode(path), Call)
    assert len(stamps) == len(calls)
    for c, s in zip(calls, stamps, strict=True):
        assert c.time == pytest.approx(
            dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S.%f").timestamp(), abs=1e-6)


# --- real fixtures: specific calls -----------------------------------------------------------


def test_wrong_pin_login():
    events = decode(FIXTURES / "real-0.23-login-wrong-pin.log")
    (login,) = calls_named(events, "C_Login")
    assert (login.rv, login.rv_name) == (160, "CKR_PIN_INCORRECT")
    assert login.args == {"hSession": 1, "userType": "CKU_USER", "pPin": "303030303030",
                          "ulPinLen": 6}
    token = calls_named(events, "C_GetTokenInfo")[0].args["pInfo"]
    assert token["label"] == "fixture" and token["model"] == "SoftHSM v2"
    assert token["ulSessionCount"] == "CK_UNAVAILABLE_INFORMATION"
    assert "CKF_USER_PIN_INITIALIZED" in token["flags"].split("|")
    first, second = calls_named(events, "C_GetSlotList")
    assert first.length_query and first.args["pSlotList"] is None
    assert first.args["pulCount"] == {"out": len(second.args["pSlotList"])}
    assert not second.length_query
    opened = calls_named(events, "C_OpenSession")[0]
    assert opened.args["flags"] == "CKF_SERIAL_SESSION" and opened.args["phSession"] == 1


def test_key_pair_generation_and_signatures():
    path = FIXTURES / "real-0.23-keypair-sign.log"
    text = text_of(path)
    events = decode(path)
    (gen,) = calls_named(events, "C_GenerateKeyPair")
    assert gen.rv == 0
    assert gen.args["pMechanism"] == {"mechanism": "CKM_RSA_PKCS_KEY_PAIR_GEN", "parameter": None}
    pub = {a["type"]: a for a in gen.args["pPublicKeyTemplate"]}
    assert len(gen.args["pPublicKeyTemplate"]) == gen.args["ulPublicKeyAttributeCount"] == \
        int(re.search(r"pPublicKeyTemplate\[(\d+)\]", text).group(1))
    assert pub["CKA_CLASS"] == {"type": "CKA_CLASS", "len": 8, "value": "CKO_PUBLIC_KEY"}
    assert pub["CKA_MODULUS_BITS"] == {"type": "CKA_MODULUS_BITS", "len": 8, "value": 2048}
    assert pub["CKA_PUBLIC_EXPONENT"]["value"] == "010001"
    assert pub["CKA_LABEL"] == {"type": "CKA_LABEL", "len": 2, "value": "k1"}
    assert pub["CKA_ID"]["value"] == "01" and pub["CKA_TOKEN"]["value"] is True
    priv = {a["type"]: a["value"] for a in gen.args["pPrivateKeyTemplate"]}
    assert priv["CKA_SENSITIVE"] is True and priv["CKA_KEY_TYPE"] == "CKK_RSA"
    assert isinstance(gen.args["phPublicKey"], int) and isinstance(gen.args["phPrivateKey"], int)
    pkcs1, pss = calls_named(events, "C_SignInit")
    assert pkcs1.args["pMechanism"] == {"mechanism": "CKM_SHA256_RSA_PKCS", "parameter": None}
    assert pss.args["pMechanism"] == {"mechanism": "CKM_SHA256_RSA_PKCS_PSS", "parameter": {
        "hashAlg": "CKM_SHA256", "mgf": "CKG_MGF1_SHA256", "sLen": 32}}
    signatures = dumps_after(text, "[out] pSignature[*pulSignatureLen]")
    signs = calls_named(events, "C_Sign")
    assert [bytes.fromhex(c.args["pSignature"]) for c in signs] == signatures
    for c in signs:
        assert c.args["pData"] == b"hello\n".hex() and c.args["ulDataLen"] == 6
        assert c.args["pulSignatureLen"] == {"out": 256}
    # three processes, each counting from 0
    procs = of(events, Process)
    assert len(procs) == 3 and all(p.pid is None for p in procs)
    numbers = [c.call_number for c in of(events, Call)]
    assert numbers.count(0) == 3


def test_list_objects():
    path = FIXTURES / "real-0.23-login-list-objects.log"
    text = text_of(path)
    events = decode(path)
    finds = calls_named(events, "C_FindObjects")
    found = [[int(h, 16) for h in re.findall(r"Object 0x([0-9a-f]+) matches", block)]
             for block in text.split("\n\n") if ": C_FindObjects\n" in block]
    assert [c.args["phObject"] for c in finds] == found
    assert [c.args["pulObjectCount"] for c in finds] == [{"out": len(f)} for f in found]
    init = calls_named(events, "C_FindObjectsInit")[0]
    assert init.args["pTemplate"] is None and init.args["ulCount"] == 0  # pTemplate[0]
    invalid = [c for c in calls_named(events, "C_GetAttributeValue") if c.rv]
    assert invalid and all(c.rv_name == "CKR_ATTRIBUTE_TYPE_INVALID" for c in invalid)
    for c in invalid:  # the [out] template is printed even then
        assert c.args["pTemplate"]["out"][0]["len"] == "CK_UNAVAILABLE_INFORMATION"
    gets = calls_named(events, "C_GetAttributeValue")
    query = next(c for c in gets if c.args["pTemplate"]["in"] == [{"type": "CKA_LABEL",
                                                                    "len": 0}])
    assert query.args["pTemplate"]["out"] == [{"type": "CKA_LABEL", "len": 2}]
    label = next(c for c in gets if c.args["pTemplate"]["in"] == [{"type": "CKA_LABEL",
                                                                    "len": 2}])
    assert label.args["pTemplate"]["out"] == [{"type": "CKA_LABEL", "len": 2, "value": "k1"}]


def test_set_pin_and_init_pin():
    events = decode(FIXTURES / "real-0.23-set-pin.log")
    there, back = calls_named(events, "C_SetPIN")
    assert there.args == {"hSession": 1, "pOldPin": b"123456".hex(), "ulOldLen": 6,
                          "pNewPin": b"654321".hex(), "ulNewLen": 6}
    assert (back.args["pOldPin"], back.args["pNewPin"]) == (b"654321".hex(), b"123456".hex())
    events = decode(FIXTURES / "real-0.23-init-pin.log")
    (login,) = calls_named(events, "C_Login")
    assert login.args["userType"] == "CKU_SO" and login.args["pPin"] == b"12345678".hex()
    (init,) = calls_named(events, "C_InitPIN")
    assert init.rv == 0 and init.args == {"hSession": 1, "pPin": b"123456".hex(), "ulPinLen": 6}


def test_secret_key_value_is_read():
    path = FIXTURES / "real-0.23-secret-key-read.log"
    text = text_of(path)
    events = decode(path)
    (gen,) = calls_named(events, "C_GenerateKey")
    assert gen.args["pMechanism"] == {"mechanism": "CKM_AES_KEY_GEN", "parameter": None}
    tpl = {a["type"]: a["value"] for a in gen.args["pTemplate"]}
    assert tpl["CKA_CLASS"] == "CKO_SECRET_KEY" and tpl["CKA_KEY_TYPE"] == "CKK_AES"
    assert tpl["CKA_VALUE_LEN"] == 32 and tpl["CKA_EXTRACTABLE"] is True
    assert tpl["CKA_LABEL"] == "aes1" and isinstance(gen.args["phKey"], int)
    values = [a["value"] for c in calls_named(events, "C_GetAttributeValue")
              for a in c.args["pTemplate"]["out"] if a["type"] == "CKA_VALUE" and "value" in a]
    dumped = [d for d in dumps_after(text, "    CKA_VALUE  ") if d]
    assert len(values) >= 2 and values == [d.hex() for d in dumped]
    assert len(set(values)) == 1 and len(values[0]) == 64  # the same 32-byte key each time
    (enc,) = calls_named(events, "C_EncryptInit")
    assert enc.args["pMechanism"] == {"mechanism": "CKM_AES_CBC_PAD",
                                      "parameter": "00112233445566778899aabbccddeeff"}
    (encrypt,) = calls_named(events, "C_Encrypt")
    assert encrypt.args["pData"] == b"hello\n".hex()
    assert len(encrypt.args["pEncryptedData"]) == 32


def test_info_and_mechanisms():
    path = FIXTURES / "real-0.23-info-mechanisms.log"
    events = decode(path)
    (info,) = calls_named(events, "C_GetInfo")
    assert info.args["pInfo"] == {"cryptokiVersion": "2.40", "manufacturerID": "SoftHSM",
                                  "flags": 0, "libraryDescription": "Implementation of PKCS11",
                                  "libraryVersion": "2.6"}
    query, full = calls_named(events, "C_GetMechanismList")
    assert query.length_query and query.args["pMechanismList"] is None
    names = full.args["pMechanismList"]
    assert full.args["pulCount"] == {"out": len(names)} == query.args["pulCount"]
    assert "CKM_RSA_PKCS" in names and "CKM_AES_KEY_WRAP_PAD" in names  # "Unknown (210a)"
    infos = calls_named(events, "C_GetMechanismInfo")
    assert [c.args["type"] for c in infos] == names  # "[in] type = " glued to "[out] pInfo:"
    cbc = next(c for c in infos if c.args["type"] == "CKM_AES_CBC")
    assert cbc.args["pInfo"] == {"ulMinKeySize": 16, "ulMaxKeySize": 32,
                                 "flags": "CKF_ENCRYPT|CKF_DECRYPT|CKF_WRAP"}
    (rnd,) = calls_named(events, "C_GenerateRandom")
    assert rnd.args["ulRandomLen"] == 16 and len(rnd.args["RandomData"]) == 32


def test_two_processes_appending_at_once():
    events = decode(FIXTURES / "real-0.23-two-processes.log")
    procs = of(events, Process)
    assert len(procs) == 2
    numbers = sorted(c.call_number for c in of(events, Call))
    half = len(numbers) // 2
    assert numbers == sorted(list(range(half)) * 2)  # each process counts 0.. on its own
    assert len(calls_named(events, "C_Login")) == 2


# --- written variants ------------------------------------------------------------------------


def test_old_style_lines():
    events = decode(FIXTURES / "written-0.13-linux-old-style.log")
    (init,) = calls_named(events, "C_Initialize")
    assert init.args["pInitArgs"] == {"flags": "CKF_OS_LOCKING_OK"}
    (opened,) = calls_named(events, "C_OpenSession")
    assert opened.args["pApplication"] == "0x0" and opened.args["Notify"] == "0x0"
    (mech,) = calls_named(events, "C_GetMechanismInfo")
    assert mech.args["type"] == "CKM_RSA_PKCS"
    assert mech.args["pInfo"]["flags"] == "CKF_HW|CKF_DECRYPT|CKF_SIGN|CKF_VERIFY"
    (sign,) = calls_named(events, "C_SignInit")
    assert sign.args["pMechanism"] == {"mechanism": "CKM_SHA1_RSA_PKCS", "parameter": None}
    (find,) = calls_named(events, "C_FindObjectsInit")
    assert find.args["pTemplate"][1] == {"type": "CKA_LABEL", "len": 11, "value": "signing key"}
    (state,) = calls_named(events, "C_SetOperationState")
    assert state.rv_name == "CKR_FUNCTION_NOT_SUPPORTED"
    assert state.args["pOperationState"] == "01020304"
    assert [c.rv for c in calls_named(events, "C_Login")] == [160, 0]


def test_windows_before_0_24():
    events = decode(FIXTURES / "written-0.22-windows-crlf.log")
    calls = of(events, Call)
    assert all(c.pid is None and c.time is not None for c in calls)
    get = calls_named(events, "C_GetAttributeValue")[0]
    assert get.args["pTemplate"]["out"] == [  # a 4-byte CK_ULONG
        {"type": "CKA_CLASS", "len": 4, "value": "CKO_PUBLIC_KEY"},
        {"type": "CKA_MODULUS_BITS", "len": 4, "value": 2048},
        {"type": "CKA_KEY_TYPE", "len": 4, "value": "CKK_RSA"}]
    sensitive = calls_named(events, "C_GetAttributeValue")[1]
    assert sensitive.rv_name == "CKR_ATTRIBUTE_SENSITIVE"
    assert sensitive.args["pTemplate"]["out"] == [
        {"type": "CKA_VALUE", "len": "CK_UNAVAILABLE_INFORMATION"}]
    (logout,) = calls_named(events, "C_Logout")  # "Returned:  -2147483647 (null)"
    assert (logout.rv, logout.rv_name) == (0x80000001, "CKR_VENDOR_DEFINED+0x1")
    (session,) = calls_named(events, "C_GetSessionInfo")
    assert session.args["pInfo"] == {"slotID": 0, "state": "CKS_RO_PUBLIC_SESSION",
                                     "flags": "CKF_SERIAL_SESSION", "ulDeviceError": 0}
    assert calls_named(events, "C_OpenSession")[0].args["pApplication"] == "0x0"


def test_pid_and_thread_lines_and_mechanism_parameters():
    events = decode(FIXTURES / "written-0.24-linux-pt.log")
    calls = of(events, Call)
    assert {(c.pid, c.tid) for c in calls} == {(2440186, 140007141424576)}
    assert of(events, Process)[0].pid == 2440186
    (iface,) = calls_named(events, "C_GetInterface")
    assert iface.args == {"pInterfaceName": "PKCS 11", "pVersion": {"major": 3, "minor": 0},
                          "flags": "0"}
    (lst,) = calls_named(events, "C_GetInterfaceList")
    assert lst.args["pInterfacesList"] == [{"name": "PKCS 11", "flags": "0"}]
    sensitive = calls_named(events, "C_GetAttributeValue")[1]
    assert sensitive.rv_name == "CKR_ATTRIBUTE_SENSITIVE"
    assert sensitive.args["pTemplate"]["out"] == [
        {"type": "CKA_VALUE_LEN", "len": 8, "value": 32},
        {"type": "CKA_VALUE", "len": "CK_UNAVAILABLE_INFORMATION"},
        {"type": "CKA_SENSITIVE", "len": 1, "value": True}]
    small = calls_named(events, "C_GetAttributeValue")[2]
    assert small.rv_name == "CKR_BUFFER_TOO_SMALL"
    assert small.args["pTemplate"] == {"in": [{"type": "CKA_LABEL", "len": 4}],
                                       "out": [{"type": "CKA_LABEL", "len": 8}]}
    (gcm,) = calls_named(events, "C_EncryptInit")
    assert gcm.args["pMechanism"] == {"mechanism": "CKM_AES_GCM", "parameter": {
        "pIv": bytes(range(12)).hex(), "ulIvLen": 12, "ulIvBits": 96,
        "pAAD": b"header".hex(), "ulAADLen": 6, "ulTagBits": 128}}
    query, enc = calls_named(events, "C_Encrypt")
    assert query.length_query and query.args["pEncryptedData"] is None
    assert query.args["pulEncryptedDataLen"] == {"out": 30} and not enc.length_query
    (oaep,) = calls_named(events, "C_DecryptInit")
    assert oaep.args["pMechanism"]["parameter"] == {
        "hashAlg": "CKM_SHA256", "mgf": "CKG_MGF1_SHA256", "source": "CKZ_DATA_SPECIFIED",
        "pSourceData": None, "ulSourceDataLen": 0}
    (derive,) = calls_named(events, "C_DeriveKey")
    par = derive.args["pMechanism"]["parameter"]
    assert par["kdf"] == "CKD_NULL" and par["ulPublicDataLen"] == 65
    assert par["pPublicData"].startswith("04") and derive.args["phKey"] == 0x12
    (cancel,) = calls_named(events, "C_SessionCancel")
    assert cancel.args["flags"] == "CKF_ENCRYPT|CKF_DECRYPT"
    (mech,) = calls_named(events, "C_GetMechanismInfo")  # "Returned:" glued to "[in] type"
    assert (mech.rv_name, mech.args) == ("CKR_MECHANISM_INVALID",
                                         {"slotID": 0, "type": "CKM_SHA256_RSA_PKCS_PSS"})


def test_windows_pid_and_thread_line():
    events = decode(FIXTURES / "written-0.24-windows-pt-crlf.log")
    calls = of(events, Call)
    assert {c.pid for c in calls} == {11916}
    assert [c.tid for c in calls_named(events, "C_Login")] == [34512]
    (login,) = calls_named(events, "C_Login")
    assert login.rv_name == "CKR_PIN_INCORRECT" and login.args["pPin"] == "5bc7e7bbe5fc6abe"
    assert login.args["userType"] == "CKU_CONTEXT_SPECIFIC"
    get = calls_named(events, "C_GetAttributeValue")[0]
    assert get.args["pTemplate"]["out"][0] == {"type": "CKA_CLASS", "len": 4,
                                               "value": "CKO_PRIVATE_KEY"}
    query, failed = calls_named(events, "C_Sign")
    assert query.length_query and query.args["pulSignatureLen"] == {"out": 256}
    assert failed.rv_name == "CKR_USER_NOT_LOGGED_IN"


def test_two_processes_get_their_pids():
    events = decode(FIXTURES / "written-0.25-linux-two-processes.log")
    assert [p.pid for p in of(events, Process)] == [3101, 3102]
    calls = of(events, Call)
    assert [(c.pid, c.call_number, c.function) for c in calls] == [
        (3101, 0, "C_Initialize"), (3101, 1, "C_OpenSession"), (3101, 2, "C_Login"),
        (3102, 0, "C_Initialize"), (3102, 1, "C_OpenSession"), (3101, 3, "C_Logout"),
        (3102, 2, "C_Login"), (3101, 4, "C_Finalize"), (3102, 3, "C_Finalize")]
    failed = [c for c in calls if c.rv]
    assert [(c.pid, c.rv_name) for c in failed] == [(3102, "CKR_PIN_INCORRECT")]
    # each Process comes before its own process's calls
    order = [(type(e).__name__, e.pid) for e in events]
    assert order.index(("Process", 3102)) < order.index(("SpyCall", 3102))


def test_null_names_are_replaced():
    path = FIXTURES / "written-0.26-linux-null-names.log"
    events = decode(path)
    nulls = [unsigned(int(rv)) for rv, n in RETURNED.findall(text_of(path)) if n == "(null)"]
    assert len(nulls) == 6
    by_rv = {c.rv: c.rv_name for c in of(events, Call)}
    assert [by_rv[rv] for rv in nulls] == [
        "CKR_PIN_TOO_WEAK", "CKR_CURVE_NOT_SUPPORTED", "CKR_ACTION_PROHIBITED",
        "CKR_AEAD_DECRYPT_FAILED", "CKR_FUNCTION_REJECTED", "CKR_VENDOR_DEFINED+0x123"]
    (gen,) = calls_named(events, "C_GenerateKeyPair")
    assert gen.args["pPublicKeyTemplate"][1] == {"type": "CKA_EC_PARAMS", "len": 7,
                                                 "value": "06052b8104000a"}
    (dec,) = calls_named(events, "C_DecryptInit")
    assert dec.args["pMechanism"] == {"mechanism": "CKM_AES_GCM", "parameter": None}


def test_interleaved_threads_never_crash():
    events = decode(FIXTURES / INTERLEAVED)
    signs = calls_named(events, "C_Sign")
    assert len(signs) == 2 and {c.tid for c in signs} == {140551234567808, 140551226175104}
    assert all(c.rv == 0 for c in signs)
    (warning,) = of(events, TraceWarning)
    assert warning.message.startswith("line 35: call #4 C_Sign starts before call #3")
    problems = [p for c in signs for p in c.args.get("decode_problems", [])]
    assert problems == ["line 41: pData is printed twice: the lines of two calls are mixed "
                        "(concurrent threads?)"]
    (login,) = calls_named(events, "C_Login")
    assert login.rv_name == "CKR_PIN_TOO_WEAK"


# --- the command ------------------------------------------------------------------------------


def p11spy(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([P11SPY, *args], capture_output=True, text=True, timeout=timeout)


def test_decode_detects_the_format_and_prints_text():
    path = FIXTURES / "real-0.23-login-wrong-pin.log"
    r = p11spy("decode", str(path))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "C_Login" in r.stdout and "CKR_PIN_INCORRECT (0xa0)" in r.stdout
    assert "module /usr/lib/softhsm/libsofthsm2.so, secrets SHOWN" in r.stdout
    r = p11spy("decode", "--errors", str(path))
    assert r.returncode == 0 and r.stdout.count("\n#") == 0 and "C_Login" in r.stdout


def test_decode_json():
    path = FIXTURES / "written-0.25-linux-two-processes.log"
    r = p11spy("decode", "--json", str(path))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["type"] for x in rows].count("call") == len(HEADER.findall(text_of(path)))
    assert rows[0] == {"type": "process", "seq": 0, "pid": 3101,
                       "module": "/usr/lib/softhsm/libsofthsm2.so", "format": "pkcs11-spy",
                       "secrets": True}
    login = next(x for x in rows if x["type"] == "call" and x["rv"])
    assert login == {
        "type": "call", "seq": 8, "function": "C_Login", "rv": 160,
        "rv_name": "CKR_PIN_INCORRECT", "pid": 3102, "tid": 139912345678592,
        "time": login["time"], "duration_us": None,
        "args": {"hSession": 2, "userType": "CKU_USER", "pPin": b"000000".hex(),
                 "ulPinLen": 6}}
    assert login["time"] == dt.datetime(2025, 1, 20, 8, 30, 0, 131000).timestamp()


# --- bad input ------------------------------------------------------------------------------


def test_empty_file(tmp_path):
    path = tmp_path / "empty.log"
    path.write_bytes(b"")
    assert decode(path) == []
    r = p11spy("decode", str(path))
    assert r.returncode == 2 and "the file is empty" in r.stderr and "Traceback" not in r.stderr


def test_binary_garbage(tmp_path):
    data = random.Random(7).randbytes(300_000)
    path = tmp_path / "garbage.bin"
    path.write_bytes(data)
    r = p11spy("decode", str(path))
    assert r.returncode == 2 and "not a trace format" in r.stderr
    assert "Traceback" not in r.stderr
    r = p11spy("decode", "--format", "pkcs11-spy", str(path))
    assert r.returncode == 0 and "Traceback" not in r.stderr
    events = decode(path)
    warnings = of(events, TraceWarning)
    assert warnings and len(warnings) < 200  # runs of stray lines make one warning each
    assert all(w.message.startswith("line") for w in warnings)
    for e in events:
        json.dumps(e.to_json())


def test_file_cut_mid_call(tmp_path):
    data = (FIXTURES / "real-0.23-keypair-sign.log").read_bytes()
    cut = data.index(b"[out] pSignature") + 150  # inside the signature's dump
    events = decode_bytes(data[:cut], tmp_path)
    calls = of(events, Call)
    last = calls[-1]
    assert last.function == "C_Sign" and last.rv is None and last.rv_name is None
    assert last.args["pData"] == b"hello\n".hex()
    assert any("holds" in p for p in last.args["decode_problems"])  # 96 of 256 bytes
    (warning,) = of(events, TraceWarning)
    assert f"line {last.source[5:]}: call #{last.call_number} C_Sign has no 'Returned:' line" \
        in warning.message
    assert all(c.rv is not None for c in calls[:-1])
    r = p11spy("decode", str(tmp_path / "spy.log"))
    assert r.returncode == 0 and "(not recorded)" in r.stdout and "!! line" in r.stdout


def test_ten_megabyte_line(tmp_path):
    fixture = (FIXTURES / "real-0.23-login-wrong-pin.log").read_bytes()
    n = fixture.count(b"\n")
    events = decode_bytes(fixture + b"Z" * 10_000_000 + b"\n" + fixture, tmp_path)
    assert len(of(events, Call)) == 2 * fixture.count(b"Returned:")
    (warning,) = of(events, TraceWarning)
    assert warning.message.startswith(f"line {n + 1}: a line of ")
    # inside a call, starting like a dump line, and at the end without a newline
    inner = fixture.replace(b"[in] userType = CKU_USER\n",
                            b"[in] userType = CKU_USER\n " + b"0" * 10_000_000 + b"\n")
    events = decode_bytes(inner + b"\n" + b"7" * 10_000_000, tmp_path)
    (login,) = calls_named(events, "C_Login")
    assert login.rv == 160 and login.args["pPin"] == b"000000".hex()
    assert len(of(events, TraceWarning)) == 2
    r = p11spy("decode", str(tmp_path / "spy.log"), timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr


def test_invalid_utf8(tmp_path):
    data = (FIXTURES / "real-0.23-login-wrong-pin.log").read_bytes()
    data = data.replace(b"'fixture  ", b"'fi\xffx\xc3  ").replace(b"libsofthsm2", b"lib\xfe2")
    events = decode_bytes(data, tmp_path)
    assert of(events, Process)[0].info["module"] == "/usr/lib/softhsm/lib\ufffd2.so"
    token = calls_named(events, "C_GetTokenInfo")[0].args["pInfo"]
    assert token["label"] == "fi\ufffdx\ufffd"
    assert calls_named(events, "C_Login")[0].rv == 160
    r = p11spy("decode", "--json", str(tmp_path / "spy.log"))
    assert r.returncode == 0 and "Traceback" not in r.stderr


def test_lines_outside_calls_become_warnings(tmp_path):
    data = (FIXTURES / "real-0.23-login-wrong-pin.log").read_bytes()
    data = data.replace(b"\n1: C_Initialize", b"stray text\nmore stray\n\n1: C_Initialize")
    events = decode_bytes(data, tmp_path)
    (warning,) = of(events, TraceWarning)
    text = data.decode()
    first = text[:text.index("stray text")].count("\n") + 1
    assert warning.message.startswith(f"lines {first}-{first + 1}: 2 lines")
    assert "outside any call" in warning.message
    assert len(of(events, Call)) == 9


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_logs_never_raise(data):
    src = (FIXTURES / "written-0.24-linux-pt.log").read_bytes()
    lines = src.split(b"\n")
    for _ in range(data.draw(st.integers(0, 6))):
        op = data.draw(st.sampled_from(["drop", "dup", "cut", "flip", "swap"]))
        i = data.draw(st.integers(0, len(lines) - 1))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "cut":
            lines[i] = lines[i][:data.draw(st.integers(0, len(lines[i])))]
        elif op == "flip" and lines[i]:
            j = data.draw(st.integers(0, len(lines[i]) - 1))
            b = bytearray(lines[i])
            b[j] = data.draw(st.integers(0, 255))
            lines[i] = bytes(b)
        elif op == "swap":
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        if not lines:
            lines = [b""]
    import io

    events = list(pkcs11spy_text.read(io.BytesIO(b"\n".join(lines))))
    assert [e.seq for e in events] == list(range(len(events)))
    for e in events:
        json.dumps(e.to_json())


# --- streaming and the event model ---------------------------------------------------------


def test_memory_stays_flat(tmp_path):
    src = (FIXTURES / "real-0.23-keypair-sign.log").read_bytes()
    path = tmp_path / "big.log"
    path.write_bytes(src * (24_000_000 // len(src)))
    tracemalloc.start()
    try:
        n = 0
        with path.open("rb") as f:
            for e in pkcs11spy_text.read(f):
                n += 1
                if isinstance(e, Call) and e.function == "C_Sign":
                    assert e.args["pulSignatureLen"] == {"out": 256}
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n > 50_000
    assert peak < 12_000_000, peak


def test_arguments_are_parsed_once_on_demand():
    events = decode(FIXTURES / "real-0.23-login-wrong-pin.log")
    login = calls_named(events, "C_Login")[0]
    assert isinstance(login, Call) and login._raw is not None  # not parsed yet
    args = login.args
    assert login._raw is None and login.args is args
    assert dataclasses.asdict(login)["args"] == args
    copy = dataclasses.replace(login, rv=0)
    assert copy.args == args and copy.rv == 0 and login.rv == 160
    login.args = {"replaced": True}
    assert login.to_json()["args"] == {"replaced": True}


# --- against p11spy's own trace of the same run ---------------------------------------------


def _differences(ours: Any, theirs: Any, path: str) -> list[str]:
    """Where our value is not p11spy's; only what pkcs11-spy printed is compared (it never
    prints the room offered by a length pointer, for one)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for k, v in ours.items():
            if k not in theirs:
                out.append(f"{path}.{k}: only ours")
            else:
                out += _differences(v, theirs[k], f"{path}.{k}")
        return out
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return [d for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
                for d in _differences(a, b, f"{path}[{i}]")]
    return [] if ours == theirs else [f"{path}: {ours!r} != {theirs!r}"]


def test_same_values_as_p11spy(tmp_path, token: Token, shim_for):
    if not Path(SPY_MODULE).exists():
        pytest.fail(f"{SPY_MODULE} is missing: run `make setup` (opensc)")
    spy_log, trace = tmp_path / "spy.log", tmp_path / "trace.p11"
    env = {**token.env, "P11SPY_MODULE": SPY_MODULE, "P11SPY_OUTPUT": str(trace),
           "P11SPY_LOG_SECRETS": "1", "PKCS11SPY": token.module,
           "PKCS11SPY_OUTPUT": str(spy_log)}
    data = tmp_path / "data"
    data.write_bytes(b"hello\n")
    tool = ["pkcs11-tool", "--module", str(shim_for(SPY_MODULE))]
    runs = [
        ["--login", "--pin", "0000", "-O"],
        ["--login", "--pin", "1234", "--keypairgen", "--key-type", "rsa:2048", "--id", "01",
         "--label", "k1", "--usage-sign"],
        ["--login", "--pin", "1234", "--sign", "-m", "SHA256-RSA-PKCS-PSS", "--id", "01",
         "-i", str(data), "-o", str(tmp_path / "sig")],
        ["--login", "--pin", "1234", "--keygen", "--key-type", "AES:16", "--extractable",
         "--id", "02", "--label", "aes"],
        ["--login", "--pin", "1234", "--read-object", "--type", "secrkey", "--id", "02",
         "-o", str(tmp_path / "key")],
        ["--login", "--pin", "1234", "--change-pin", "--new-pin", "4321"],
        ["-I", "-M", "-T"],
    ]
    for args in runs:
        subprocess.run(tool + args, env=env, capture_output=True, timeout=120)
    ours = of(decode(spy_log), Call)
    with trace.open("rb") as f:
        theirs = [e for e in p11log.read(f) if isinstance(e, Call)]
    # pkcs11-spy also logs the C_GetInfo the shim itself makes after C_Initialize
    match = difflib.SequenceMatcher(a=[c.function for c in ours],
                                    b=[c.function for c in theirs], autojunk=False)
    compared, problems = 0, []
    for tag, i1, i2, j1, j2 in match.get_opcodes():
        if tag != "equal":
            assert tag == "delete" and {c.function for c in ours[i1:i2]} == {"C_GetInfo"}, \
                (tag, ours[i1:i2], theirs[j1:j2])
            continue
        for a, b in zip(ours[i1:i2], theirs[j1:j2], strict=True):
            compared += 1
            problems += _differences(
                {"rv": a.rv, "rv_name": a.rv_name, "length_query": a.length_query,
                 "args": a.args},
                {"rv": b.rv, "rv_name": b.rv_name, "length_query": b.length_query,
                 "args": b.args}, f"{a.source} {a.function}")
    assert compared == len(theirs) > 300
    assert problems == []
    functions = {c.function for c in theirs}
    assert {"C_Login", "C_GenerateKeyPair", "C_SignInit", "C_Sign", "C_GenerateKey",
            "C_SetPIN", "C_GetMechanismInfo", "C_GetAttributeValue"} <= functions
    assert [c.rv for c in theirs if c.function == "C_Login"][0] == 160
