"""`p11spy redact`: real traces (pkcs11-spy over SoftHSM2, OPENSC_DEBUG=9 over the card station,
p11spy with P11SPY_LOG_SECRETS=1) fail --check before redaction and pass it after; the
fixtures likewise; and the command never harms the input."""

from __future__ import annotations

import io
import os
import re
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from p11spy.decoder import masking, redact
from p11spy.decoder.formats.registry import open_events
from p11spy.decoder.masking import search as secrets_search
from testbed.card_station import CardStation
from tests.conftest import REPO, SO_PIN, USER_PIN, Token, run

P11SPY = [str(Path(sys.executable).parent / "p11spy")]
SPY_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so"
FIXTURES = REPO / "fixtures"
NEW_PIN = "73915286"


def p11spy(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*P11SPY, *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def counts(path: Path) -> Counter:
    return Counter((e.type, getattr(e, "function", None), getattr(e, "rv", None))
                   for e in open_events(path))


def pin_hits(path: Path, pin: str) -> list[str]:
    binary = path.read_bytes()[:4] == b"P11R"
    with path.open("rb") as f:
        return [str(x) for x in secrets_search.search(f, pin, binary)]


def bytes_hits(path: Path, secret: bytes) -> list[str]:
    binary = path.read_bytes()[:4] == b"P11R"
    with path.open("rb") as f:
        return [str(x) for x in secrets_search.search_encodings(
            f, [secrets_search.Encoding("secret", secret)], binary)]


def assert_redacts(trace: Path, pins: list[str], keys: list[bytes], expect: list[str]) -> Path:
    """The user's round: --check fails and names the places, redact, --check passes (also
    for each known PIN), same events, mode 0600."""
    before = p11spy("redact", "--check", trace)
    assert before.returncode == 1, before.stdout + before.stderr
    for what in expect:
        assert what in before.stdout, (what, before.stdout)
    for pin in pins:
        assert pin_hits(trace, pin), f"{pin} not in the raw trace: the test proves nothing"
    for key in keys:
        assert bytes_hits(trace, key)
    out = trace.with_name(trace.stem + ".redacted" + trace.suffix)
    r = p11spy("redact", trace, "-o", out)
    assert r.returncode == 0, r.stderr
    assert "masked" in r.stderr
    after = p11spy("redact", "--check", out, *[a for p in pins for a in ("--pin", p)])
    assert after.returncode == 0, after.stdout
    assert "no secret found" in after.stdout
    for key in keys:
        assert bytes_hits(out, key) == []
    assert counts(out) == counts(trace)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    return out


def test_pkcs11_spy_over_softhsm(tmp_path: Path, token: Token) -> None:
    if not Path(SPY_MODULE).exists():
        pytest.fail(f"{SPY_MODULE} is missing: run `make setup` (opensc)")
    log = tmp_path / "spy.log"
    env = {k: v for k, v in token.env.items() if not k.startswith(("P11SPY", "PKCS11SPY"))}
    env.update(PKCS11SPY=token.module, PKCS11SPY_OUTPUT=str(log))
    tool = ["pkcs11-tool", "--module", SPY_MODULE]
    key = tmp_path / "key.bin"
    for args in (["--login", "--pin", "999999", "-O"],  # wrong PIN
                 ["--login", "--pin", USER_PIN, "--change-pin", "--new-pin", NEW_PIN],
                 ["--login", "--login-type", "so", "--so-pin", SO_PIN, "--init-pin",
                  "--new-pin", USER_PIN],
                 ["--login", "--pin", USER_PIN, "--keygen", "--key-type", "AES:32",
                  "--extractable", "--id", "02", "--label", "aes"],
                 ["--login", "--pin", USER_PIN, "--read-object", "--type", "secrkey",
                  "--id", "02", "-o", str(key)]):
        run(tool + args, env)
    assert key.stat().st_size == 32
    text = log.read_text()
    assert "C_SetPIN" in text and "C_InitPIN" in text and "CKR_PIN_INCORRECT" in text
    out = assert_redacts(log, ["999999", NEW_PIN, SO_PIN], [key.read_bytes()],
                         ["C_Login pPin (PIN)", "C_SetPIN pOldPin (PIN)",
                          "C_SetPIN pNewPin (PIN)", "C_InitPIN pPin (PIN)",
                          "C_GetAttributeValue CKA_VALUE (key material)"])
    # same lines, same lengths: only bytes of secrets differ
    a, b = log.read_text().splitlines(), out.read_text().splitlines()
    assert [len(x) for x in a] == [len(x) for x in b]
    changed = [y for x, y in zip(a, b, strict=True) if x != y]
    # each run's banner is marked, so that the reader knows the PINs are masked
    banners = [y for y in changed if "OpenSC PKCS#11 spy (redacted) " in y]
    assert len(banners) == text.count("OpenSC PKCS#11 spy") == 5
    assert all(set(y[14:62].split()) == {"2A"} for y in changed if y not in banners)
    # decoded: no "secrets SHOWN", and each PIN shows as masked, not as a row of 2a
    events = list(open_events(out))
    assert [e.info["secrets"] for e in events if e.type == "process"] == [False] * 5
    pins = [v for e in events if e.type == "call" for k, v in e.args.items()
            if k in ("pPin", "pOldPin", "pNewPin") and v is not None]
    assert len(pins) >= 5 and all(v["masked"] and v["redacted"] for v in pins), pins
    shown = p11spy("decode", out).stdout
    assert "secrets SHOWN" not in shown and "pPin = <masked: 6 bytes, by p11spy redact>" in shown


def test_p11spy_log_with_secrets(tmp_path: Path, token: Token, spy_env, shim: Path) -> None:
    trace = tmp_path / "secrets.p11"
    env = spy_env(token, trace, P11SPY_LOG_SECRETS="1")
    key = tmp_path / "key.bin"
    tool = ["pkcs11-tool", "--module", str(shim)]
    for args in (["--login", "--pin", "999999", "-O"],
                 ["--login", "--pin", USER_PIN, "--change-pin", "--new-pin", NEW_PIN],
                 ["--login", "--pin", NEW_PIN, "--keygen", "--key-type", "AES:32",
                  "--extractable", "--id", "02"],
                 ["--login", "--pin", NEW_PIN, "--read-object", "--type", "secrkey",
                  "--id", "02", "-o", str(key)]):
        run(tool + args, env)
    out = assert_redacts(trace, ["999999", NEW_PIN], [key.read_bytes()],
                         ["process header: recorded with secrets in clear",
                          "C_Login pPin (PIN)", "C_SetPIN pNewPin (PIN)", "CKA_VALUE"])
    assert out.stat().st_size == trace.stat().st_size  # records keep their lengths
    headers = [e for e in open_events(out) if e.type == "process"]
    assert headers and all(h.info["redacted"] and not h.info["secrets"] for h in headers)
    shown = p11spy("decode", out).stdout
    assert NEW_PIN.encode().hex() not in shown and "secrets SHOWN" not in shown
    assert "pPin = <masked: 6 bytes, by p11spy redact>" in shown  # not a row of 2a


def test_opensc_debug_9_over_the_card(piv_card: CardStation, tmp_path: Path) -> None:
    """Level 9 logs the VERIFY APDUs with the PIN in clear: wrong, right, then a change."""
    log = tmp_path / "opensc-debug.log"
    with log.open("w") as f:
        for args in (("--login", "--pin", "999999", "-O"),
                     ("--login", "--pin", piv_card.pin, "-O"),
                     ("--change-pin", "--login", "--pin", piv_card.pin, "--new-pin",
                      "24681357")):
            r = piv_card.pkcs11_tool(*args, OPENSC_DEBUG="9")
            f.write(r.stderr)
    assert "Outgoing APDU" in log.read_text()
    out = assert_redacts(log, ["999999", piv_card.pin, "24681357"], [],
                         ["VERIFY APDU data (PIN)", "CHANGE REFERENCE DATA APDU data (PIN)"])
    # decoded, each VERIFY that carried a PIN says it was masked, as at capture
    verifies = [line for line in p11spy("decode", out).stdout.splitlines()
                if "[VERIFY]" in line and " 08 " in line]
    assert len(verifies) >= 2 and all(line.endswith("(PIN masked by p11spy redact)")
                                      for line in verifies), verifies


def test_pkcs11_spy_over_the_card(piv_card: CardStation, tmp_path: Path) -> None:
    """pkcs11-spy between pkcs11-tool and OpenSC's module on the PIV card: wrong PIN, right
    PIN, a PIN change; the log also holds the card's certificate (public: kept)."""
    log = tmp_path / "spy-card.log"
    spy = {"PKCS11SPY": piv_card.module, "PKCS11SPY_OUTPUT": str(log)}
    for args in (("--login", "--pin", "999999", "-O"),
                 ("--login", "--pin", piv_card.pin, "-O"),
                 ("--change-pin", "--login", "--pin", piv_card.pin, "--new-pin", "24681357")):
        piv_card.run(["pkcs11-tool", "--module", SPY_MODULE, *args], **spy)
    assert "C_SetPIN" in log.read_text()
    out = assert_redacts(log, ["999999", piv_card.pin, "24681357"], [],
                         ["C_Login pPin (PIN)", "C_SetPIN pNewPin (PIN)"])
    assert "CKO_CERTIFICATE" in out.read_text()


def test_p11spy_run_with_secrets_over_the_card(piv_card: CardStation, tmp_path: Path) -> None:
    """The preload spy with --log-secrets records the VERIFY and CHANGE REFERENCE DATA APDUs
    in clear under C_Login / C_SetPIN: all masked, and the trace keeps its size."""
    trace = tmp_path / "card.p11"
    for args in (("--login", "--pin", "999999", "-O"),
                 ("--login", "--pin", piv_card.pin, "-O"),
                 ("--change-pin", "--login", "--pin", piv_card.pin, "--new-pin", "24681357")):
        piv_card.run([*P11SPY, "run", "--log-secrets", "-o", str(trace), "--", "pkcs11-tool",
                      "--module", piv_card.module, *args])
    out = assert_redacts(trace, ["999999", piv_card.pin, "24681357"], [],
                         ["VERIFY APDU data (PIN)", "C_Login pPin (PIN)",
                          "CHANGE REFERENCE DATA APDU data (PIN)"])
    assert out.stat().st_size == trace.stat().st_size


PIN_FIXTURES = sorted(p for p in (FIXTURES / "pkcs11-spy").glob("*.log")
                      if "pPin" in p.read_text(errors="replace")) + sorted(
    p for p in (FIXTURES / "opensc-debug").glob("*.log")
    if re.search(r"\n[01]0 (?:20|24|2C) [0-9A-F]{2} [0-9A-F]{2} (?!00)[0-9A-F]{2} [0-9A-F]{2} ",
                 p.read_text(errors="replace")))


@pytest.mark.parametrize("fixture", PIN_FIXTURES, ids=lambda p: p.name)
def test_fixtures_fail_check_then_pass(fixture: Path, tmp_path: Path) -> None:
    trace = tmp_path / fixture.name
    trace.write_bytes(fixture.read_bytes())
    expect = ["(PIN)"]
    assert_redacts(trace, [], [], expect)


@pytest.mark.parametrize("fixture", sorted((FIXTURES / "pkcs11-spy").glob("*.log")),
                         ids=lambda p: p.name)
def test_pkcs11_spy_fast_path_is_the_line_machine(fixture: Path) -> None:
    """The default path skips the lines that cannot matter: it must write and find exactly
    what the full line machine does (also with --hide-lengths)."""
    from p11spy.decoder.formats.pkcs11_spy import masker as redact_spy_text

    data = fixture.read_bytes()
    for opts in (redact.Options(), redact.Options(hide_lengths=True)):
        results = []
        for fast in (True, False):
            out, found = io.BytesIO(), []
            redact_spy_text.redact(io.BytesIO(data), out, opts, found.append, fast=fast)
            results.append((out.getvalue(), found))
        assert results[0] == results[1]


# --- the command and the user's files ---------------------------------------------------------

WRONG_PIN = FIXTURES / "pkcs11-spy" / "real-0.23-login-wrong-pin.log"


def test_never_writes_over_the_input(tmp_path: Path) -> None:
    trace = tmp_path / "t.log"
    trace.write_bytes(WRONG_PIN.read_bytes())
    for target in (trace, tmp_path / "." / "t.log"):
        r = p11spy("redact", trace, "-o", target)
        assert r.returncode == 2 and "is the input" in r.stderr
        assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    link = tmp_path / "hard.log"
    os.link(trace, link)
    assert p11spy("redact", trace, "-o", link).returncode == 2
    assert trace.read_bytes() == WRONG_PIN.read_bytes()
    assert list(tmp_path.iterdir()) == sorted([trace, link]) or \
        set(tmp_path.iterdir()) == {trace, link}


def test_in_place_replaces_atomically(tmp_path: Path) -> None:
    trace = tmp_path / "t.log"
    trace.write_bytes(WRONG_PIN.read_bytes())
    r = p11spy("redact", "--in-place", trace)
    assert r.returncode == 0, r.stderr
    assert p11spy("redact", "--check", trace).returncode == 0
    assert stat.S_IMODE(trace.stat().st_mode) == 0o600
    assert set(tmp_path.iterdir()) == {trace}  # no temporary file left behind


@pytest.mark.parametrize(("args", "message"), [
    (["missing.log"], "no such file"),
    (["{dir}"], "is a directory"),
    (["{junk}"], "not a trace format"),
    (["{trace}", "-o", "/proc/nope/out.log"], "cannot write there"),
    (["{trace}", "--in-place", "-o", "{dir}/x"], "exclude each other"),
])
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\nworld\n")
    trace = tmp_path / "t.log"
    trace.write_bytes(WRONG_PIN.read_bytes())
    fill = {"dir": tmp_path, "junk": junk, "trace": trace}
    r = p11spy("redact", *[a.format(**fill) for a in args])
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert trace.read_bytes() == WRONG_PIN.read_bytes()


def test_stdout_and_known_pin_in_other_encodings(tmp_path: Path) -> None:
    r = subprocess.run([*P11SPY, "redact", str(WRONG_PIN)], capture_output=True, timeout=60)
    assert r.returncode == 0 and b"2A 2A 2A 2A 2A 2A" in r.stdout
    assert b"30 30 30 30 30 30" not in r.stdout
    # a PIN in EBCDIC, UTF-16 and as an ISO 9564 block is still found by --pin
    for raw, name in ((b"\xf4\xf7\xf1\xf1", "EBCDIC"), ("4711".encode("utf-16-le"), "UTF-16LE"),
                      (bytes.fromhex("244711FFFFFFFFFF"), "ISO 9564")):
        f = io.BytesIO(b"  00000000  " + raw.hex(" ").upper().encode() + b"\n")
        assert any(name in str(x) for x in secrets_search.search(f, "4711", False)), name
    # and a redacted trace checked for a PIN that never was in it passes
    out = tmp_path / "r.log"
    p11spy("redact", WRONG_PIN, "-o", out)
    assert p11spy("redact", "--check", "--pin", "000000", out).returncode == 0
    assert p11spy("redact", "--check", "--pin", "000000", WRONG_PIN).returncode == 1


def test_marker_is_not_flagged_and_check_is_redaction() -> None:
    data = WRONG_PIN.read_bytes()
    out = io.BytesIO()
    found = redact.redact("pkcs11-spy", io.BytesIO(data), out)
    assert [f.what for f in found] == ["C_Login pPin (PIN)"]
    assert redact.check("pkcs11-spy", io.BytesIO(out.getvalue())) == []
    again = io.BytesIO()
    redact.redact("pkcs11-spy", io.BytesIO(out.getvalue()), again)
    assert again.getvalue() == out.getvalue()  # idempotent


def test_pin_pad_structures_are_masked() -> None:
    """OpenSC's dump of a PC/SC part 10 PIN block, and the p11spy preload spy's SCardControl
    to a PIN-pad control code it learnt from GET_FEATURE_REQUEST (secrets on)."""
    from p11spy.facts import pcsc
    from p11spy.facts.logformat import Kind, Phase, RecordType
    from tests.traces import field, record, ulong

    block = bytes.fromhex("1E1E8947040C0402010904000000000D000000002000800834353637FFFFFFFF")
    text = ("P:1; T:0x1 10:00:00.000 [opensc-pkcs11] reader-pcsc.c:1900:pcsc_pin_cmd: \n"
            f"PC/SC v2 pinpad block ({len(block)} bytes):\n"
            + "\n".join(" ".join(f"{b:02X}" for b in block[k:k + 16]) + " " +
                        "".join(masking.printable(b) for b in block[k:k + 16])
                        for k in range(0, len(block), 16)) + "\n\n").encode()
    out = io.BytesIO()
    found = redact.redact("opensc-debug", io.BytesIO(text), out)
    assert [f.what for f in found] == ["PIN-pad structure (PIN)"]
    assert b"34 35 36 37" not in out.getvalue() and b"4567" not in out.getvalue()
    assert len(out.getvalue()) == len(text)

    code = 0x42330006
    features = bytes([pcsc.FEATURE_VERIFY_PIN_DIRECT, 4]) + code.to_bytes(4, "big")
    control = pcsc.BY_NAME["SCardControl"].index
    trace = b"".join([
        record(RecordType.PCSC, control, ulong(1, pcsc.CM_IOCTL_GET_FEATURE_REQUEST)
               + field(4, Phase.OUT, Kind.BYTES, features)),
        record(RecordType.PCSC, control, ulong(1, code)
               + field(2, Phase.IN, Kind.BYTES, block, 1)),
    ])
    out = io.BytesIO()
    found = redact.redact("p11spy", io.BytesIO(trace), out)
    assert [f.what for f in found] == ["SCardControl PIN-pad structure (PIN)"]
    assert block not in out.getvalue() and len(out.getvalue()) == len(trace)


def test_strict_masks_what_identifies(tmp_path: Path) -> None:
    src = FIXTURES / "pkcs11-spy" / "real-0.23-set-pin.log"
    out = tmp_path / "strict.log"
    r = p11spy("redact", "--strict", src, "-o", out)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "caa89c7fc4a69cae" in src.read_text() and "caa89c7fc4a69cae" not in text
    assert "'fixture " not in text and "libsofthsm2" not in text
    assert counts(out) == counts(src)
    assert p11spy("redact", "--check", out).returncode == 0
    assert p11spy("redact", "--check", "--strict", src).returncode == 1


@pytest.mark.parametrize("tracer", ["p11spy", "pkcs11-spy"])
@pytest.mark.parametrize("client", ["classes", "noclass"])  # modes of shim_c/classes.c
def test_redact_masks_what_the_shim_masks(client, tracer, token, tmp_path, spy_env, shim):
    """A trace made with secrets shown (p11spy's, or OpenSC's pkcs11-spy log): key values under
    OTP, vendor-defined and unknown classes, in templates that name no class, and in a search
    by value are each found by --check, masked by redact (as the shim masks them at capture),
    and --check is then clean."""
    from p11spy.decoder.masking import search
    from tests.conftest import USER_PIN, run
    from tests.cprogs import build

    prog = build("classes", tmp_path)
    trace = tmp_path / "shown.trace"
    if tracer == "p11spy":
        module, env = shim, spy_env(token, trace, P11SPY_LOG_SECRETS="1")
    else:
        module = SPY_MODULE
        env = {**token.env, "PKCS11SPY": token.module, "PKCS11SPY_OUTPUT": str(trace)}
    res = run([str(prog), str(module), USER_PIN, client], env)
    assert res.returncode == 0, res.stderr
    secrets = [line.split()[-1].encode() for line in res.stdout.splitlines()
               if "secret" in line]

    def found(path: Path) -> list[bytes]:
        """The secrets a trace holds, as bytes, hex or split across dump lines."""
        enc = [search.Encoding("value", s) for s in secrets]
        with path.open("rb") as f:
            return list(search.search_encodings(f, enc, tracer == "p11spy"))

    assert secrets and len(found(trace)) >= len(secrets)
    check = subprocess.run([*P11SPY, "redact", "--check", str(trace)], capture_output=True,
                           text=True)
    assert check.returncode == 1
    out = tmp_path / "red.p11"
    assert subprocess.run([*P11SPY, "redact", str(trace), "-o", str(out)]).returncode == 0
    assert found(out) == []
    assert subprocess.run([*P11SPY, "redact", "--check", str(out)]).returncode == 0
