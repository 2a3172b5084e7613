"""`p11spy report`: the HTML page a support engineer opens, tried in a real browser.

The traces are real: pkcs11-tool with a wrong PIN over SoftHSM2 through the shim, and over the
card station's virtual PIV card under `p11spy run` (so the failed C_Login has its VERIFY and
the card's 63C2 under it), both recorded with P11SPY_LOG_SECRETS=1 so that the PIN is in the
trace and the report's redaction has something to remove. The page is opened in Debian's
chromium, driven by playwright (never a browser playwright downloads): the test clicks the
first failure and reads what a person would see.
"""

from __future__ import annotations

import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from testbed.card_station import CardStation
from tests.conftest import REPO, Token, read_trace, run
from tests.test_run import P11SPY
from tests.test_run_card import pkcs11_tool, traced

CHROMIUM = "/usr/bin/chromium"
SOFTHSM_PIN = "zq97531k"  # a wrong PIN that nothing else in a trace or a page can spell
CARD_PIN = "975312"
FIX = REPO / "fixtures"
# one trace of every format `decode` reads, each with a failure
FORMAT_FIXTURES = {
    "p11spy": FIX / "p11spy" / "real-card-wrong-pin.p11",
    "pkcs11-spy": FIX / "pkcs11-spy" / "real-0.23-card-wrong-pin.log",
    "opensc-debug": FIX / "opensc-debug" / "real-0.23-card-wrong-pin-debug9.log",
    "pcsc-spy": FIX / "pcsc-spy" / "real-1.9.9-card-wrong-pin.raw",
    "pcsc-spy text": FIX / "pcsc-spy" / "real-1.9.9-card-wrong-pin-decoded-n.txt",
}
# anything that would make the page reach outside itself
EXTERNAL = re.compile(r"(?i)\b(?:https?|ftp|wss?|file)://|//[a-z0-9-]+(?:\.[a-z0-9-]+)+|"
                      r"\b(?:src|href|action)\s*=\s*[\"']?(?!#)[^\s\"'>]")


def report(trace: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([P11SPY, "report", str(trace), "-o", str(out), *args],
                          capture_output=True, text=True, timeout=300)


def made(trace: Path, out: Path, *args: str) -> str:
    res = report(trace, out, *args)
    assert res.returncode == 0, res.stderr
    return out.read_text("utf-8")


# --- the browser -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install the Debian package chromium (`make setup`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Page:
    """A report opened in the browser: every request it made and every script error kept."""

    def __init__(self, browser: object, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_selector("body[data-ready='1']", timeout=60_000)

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector)

    def click_first_failure(self) -> str:
        """Ticks 'failures only', clicks the first row, and returns the detail pane's text."""
        self.page.check("#failures-only")
        self.page.click("#call-list .row.fail >> nth=0")
        self.page.wait_for_selector("#detail h3.title")
        return self.text("#detail")

    def close(self, own_file: Path) -> None:
        assert self.errors == []
        assert self.requests == [own_file.resolve().as_uri()]  # nothing but itself
        self.page.close()


# --- SoftHSM2 through the shim ----------------------------------------------------------------

@pytest.fixture
def softhsm_trace(token: Token, spy_env, shim: Path, tmp_path: Path) -> Path:
    out = tmp_path / "softhsm.p11"
    env = spy_env(token, out, P11SPY_LOG_SECRETS="1")
    res = run(["pkcs11-tool", "--module", str(shim), "--login", "--pin", SOFTHSM_PIN, "-O"],
              env)
    assert res.returncode != 0 and "CKR_PIN_INCORRECT" in res.stderr, res.stderr
    assert SOFTHSM_PIN.encode() in out.read_bytes()  # the capture kept it: redaction must act
    return out


def test_softhsm_wrong_pin_report_in_the_browser(softhsm_trace: Path, tmp_path: Path,
                                                 browser: object) -> None:
    html = tmp_path / "report.html"
    text = made(softhsm_trace, html)
    assert stat.S_IMODE(html.stat().st_mode) == 0o600
    assert SOFTHSM_PIN not in text and SOFTHSM_PIN.encode().hex() not in text.lower()
    assert EXTERNAL.search(text) is None, EXTERNAL.search(text)

    page = Page(browser, html)
    assert "Redacted" in page.text("#redaction")
    diagnosis = page.text("#diagnosis")
    assert "Wrong PIN" in diagnosis  # the diagnosis comes first, as diagnose says it
    detail = page.click_first_failure()
    assert "C_Login" in detail and "CKR_PIN_INCORRECT" in detail
    assert "userType = CKU_USER" in page.text("#detail pre.args")  # decoded arguments
    # the PIN as `p11spy redact` leaves it: every byte a '*' (2A)
    assert f"pPin = {'2a' * len(SOFTHSM_PIN)}" in page.text("#detail pre.args")
    assert "The token rejected the PIN." in page.text("#detail .rv-explain")  # explain's text
    assert "CKR_PIN_INCORRECT" in page.text("#codes")
    # the timeline: zoomed to the failed call, a click on its (red) bar opens it again
    page.page.click("#tl-focus")
    page.page.evaluate("document.getElementById('detail').textContent = ''")
    box = page.page.locator("#timeline").bounding_box()
    assert box is not None
    label, axis = 120, 22  # the thread names' column and the time axis (report.js)
    page.page.mouse.click(box["x"] + label + (box["width"] - label) / 2, box["y"] + axis + 9)
    assert "C_Login → CKR_PIN_INCORRECT" in page.text("#detail h3.title")
    page.close(html)


def test_no_redact_is_an_opt_in_the_page_announces(softhsm_trace: Path, tmp_path: Path,
                                                   browser: object) -> None:
    html = tmp_path / "clear.html"
    text = made(softhsm_trace, html, "--no-redact")
    assert SOFTHSM_PIN.encode().hex() in text  # what the default report removes was there
    page = Page(browser, html)
    assert "NOT REDACTED" in page.text("#redaction")
    page.close(html)


def test_what_the_trace_says_is_text_not_markup(spy_env, shim: Path, tmp_path: Path,
                                                browser: object) -> None:
    """A token label is whatever its owner typed: the page shows it, and runs none of it."""
    from tests.conftest import make_token

    label = "<img src=x onerror=alert(1)>"
    tok = make_token(tmp_path / "hsm", label=label)
    trace = tmp_path / "label.p11"
    res = run(["pkcs11-tool", "--module", str(shim), "-L"], spy_env(tok, trace))
    assert res.returncode == 0 and label in res.stdout, res.stderr
    html = tmp_path / "label.html"
    made(trace, html)
    page = Page(browser, html)
    page.page.fill("#search", "C_GetTokenInfo")
    expect(page.page.locator("#call-list .row >> nth=0")).to_contain_text("C_GetTokenInfo")
    page.page.click("#call-list .row >> nth=0")
    assert label in page.text("#detail pre.args")  # shown as the characters it is
    assert page.page.locator("img").count() == 0
    page.close(html)  # and no request for "x"


def test_strict_masks_what_names_the_card_as_redact_strict_does(tmp_path: Path) -> None:
    trace, label = FORMAT_FIXTURES["p11spy"], "PIV Authentication"
    assert label in made(trace, tmp_path / "plain.html")
    strict = made(trace, tmp_path / "strict.html", "--strict")
    assert label not in strict and "place(s) masked" in strict


# --- the card station: APDUs under the call ---------------------------------------------------

def test_card_wrong_pin_report_shows_the_verify_and_63c2(piv_card: CardStation,
                                                         tmp_path: Path,
                                                         browser: object) -> None:
    env = {**piv_card.env, "P11SPY_LOG_SECRETS": "1"}
    t = traced(piv_card, tmp_path / "run", pkcs11_tool(piv_card, "--login", "--pin", CARD_PIN,
                                                       "-O"), env=env)
    [trace] = t.traces
    assert CARD_PIN.encode() in trace.read_bytes()  # recorded in clear (C_Login, VERIFY)

    html = tmp_path / "card.html"
    text = made(trace, html)
    for form in (CARD_PIN, CARD_PIN.encode().hex(), CARD_PIN.encode().hex(" ").upper()):
        assert form not in text
    page = Page(browser, html)
    detail = page.click_first_failure()
    assert "C_Login" in detail and "CKR_PIN_INCORRECT" in detail
    assert "userType = CKU_USER" in page.text("#detail pre.args")
    kids = page.text("#detail .kids")
    assert "VERIFY" in kids and "SW 6" in kids and "63C2" in kids  # the APDU and its SW
    assert "2 tries left" in page.text("#detail .kid.fail .kid-explain")  # SW's meaning
    assert "The token rejected the PIN." in page.text("#detail .rv-explain")
    # the APDU list has the VERIFY with its status word's meaning
    page.page.check("#kid-failures-only")
    page.page.fill("#kid-search", "63c2")
    expect(page.page.locator("#kid-count")).to_have_text(re.compile(r"^1 of "))
    row = page.text("#kid-list .row")
    assert "VERIFY" in row and "SW 63C2: Verification failed (wrong PIN or key)" in row
    page.close(html)
    clear = made(trace, tmp_path / "card-clear.html", "--no-redact")
    assert CARD_PIN.encode().hex(" ").upper() in clear  # the VERIFY's PIN, shown on opt-in


# --- every format decode reads ------------------------------------------------------------------

@pytest.mark.parametrize("name", FORMAT_FIXTURES)
def test_every_format_gives_a_page(name: str, tmp_path: Path, browser: object) -> None:
    """The fixtures are a wrong PIN (975312) on the virtual card; but for p11spy's, which
    masked it at capture, each has the PIN in clear (fixtures/*/README.md)."""
    html = tmp_path / "r.html"
    forms = (CARD_PIN, CARD_PIN.encode().hex(), CARD_PIN.encode().hex(" "))
    text = made(FORMAT_FIXTURES[name], html).lower()
    assert not [f for f in forms if f in text]
    if name != "p11spy":
        clear = made(FORMAT_FIXTURES[name], tmp_path / "clear.html", "--no-redact").lower()
        assert [f for f in forms if f in clear]
    page = Page(browser, html)
    assert page.page.locator("#call-list .row, #kid-list .row").count() > 0
    assert page.page.locator(".row.fail").count() > 0  # the wrong PIN shows as a failure
    if name.startswith("pcsc-spy"):  # PC/SC calls and APDUs only: the card's 63Cx
        page.page.fill("#kid-search", "verify")
        expect(page.page.locator("#kid-list .row.fail >> nth=0")).to_contain_text("SW 63C")
        page.page.click("#kid-list .row.fail >> nth=0")
        assert "Verification failed" in page.text("#detail .kid-explain")
    else:
        detail = page.click_first_failure()
        assert "C_Login" in detail and "CKR_PIN_INCORRECT" in detail
        assert "The token rejected the PIN." in page.text("#detail .rv-explain")
    if name == "opensc-debug":  # what OpenSC logged under the call, PIN and all masked
        assert "sc_pkcs15_verify_pin: called" in page.text("#detail pre.logs")
    page.close(html)


def test_a_big_trace_draws_only_the_rows_in_view(tmp_path: Path, browser: object) -> None:
    """Thousands of calls, a few dozen rows in the page; --max-calls keeps the failures."""
    from tests.traces import grow

    big = tmp_path / "big.p11"
    grow(FORMAT_FIXTURES["p11spy"], big, 2 << 20)
    html = tmp_path / "big.html"
    made(big, html, "--max-calls", "500")
    page = Page(browser, html)
    assert "left out of this page" in page.text("#top")
    count = page.text("#count")
    total = int(count.split(" of ")[1].split()[0].replace(",", ""))
    assert total > 500  # 500 calls, then every failed one
    assert page.page.locator("#call-list .row").count() < 60
    calls = [e for e in read_trace(big) if e.type == "call"]
    kept = 500 + sum(1 for c in calls[500:] if c.rv)
    assert total == kept
    page.page.check("#failures-only")
    assert int(page.text("#count").split()[0].replace(",", "")) == sum(1 for c in calls if c.rv)
    page.page.locator("#call-list").evaluate("el => { el.scrollTop = el.scrollHeight; }")
    page.page.wait_for_timeout(100)
    assert page.page.locator("#call-list .row.fail").count() > 0  # rows drawn at the end too
    page.close(html)


def test_past_the_text_budget_only_failures_keep_their_arguments(tmp_path: Path,
                                                                  browser: object) -> None:
    from p11spy.decoder.report import make_report

    html = tmp_path / "budget.html"
    make_report(FORMAT_FIXTURES["p11spy"], html, detail_budget=200)
    page = Page(browser, html)
    assert "show no decoded arguments (size limit)" in page.text("#top")
    page.page.click("#call-list .row >> nth=-1")  # C_Finalize, past the budget
    assert "not embedded" in page.text("#detail .args")
    detail = page.click_first_failure()
    assert "C_Login" in detail and "userType = CKU_USER" in page.text("#detail pre.args")
    page.close(html)


# --- the file it writes, and bad input ----------------------------------------------------------

def test_output_never_overwrites_nor_follows_a_link(tmp_path: Path) -> None:
    trace = FORMAT_FIXTURES["p11spy"]
    out = tmp_path / "r.html"
    out.write_text("mine")
    res = report(trace, out)
    assert res.returncode != 0 and "already exists" in res.stderr
    assert out.read_text() == "mine"
    victim = tmp_path / "victim"
    victim.write_text("keep")
    link = tmp_path / "link.html"
    link.symlink_to(victim)
    assert report(trace, link).returncode != 0
    assert made(trace, link, "--force").startswith("<!DOCTYPE html>")
    assert victim.read_text() == "keep" and not link.is_symlink()  # the link was replaced
    assert stat.S_IMODE(link.stat().st_mode) == 0o600
    assert made(trace, out, "--force").startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("content, message", [
    (None, "no such file"), (b"", "empty"), (b"hello, this is not a trace\n", "not a trace"),
])
def test_bad_input_is_one_line(tmp_path: Path, content: bytes | None, message: str) -> None:
    src = tmp_path / "in"
    if content is not None:
        src.write_bytes(content)
    res = report(src, tmp_path / "r.html")
    assert res.returncode != 0 and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "r.html").exists()

