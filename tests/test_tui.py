"""`p11spy show`: the index, the views and searches under it, every key and screen of the app
(Pilot), snapshots of the main screens, a real terminal (tmux), and the acceptance: a real
SoftHSM2 trace with a wrong-PIN C_Login, found with `e`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from p11spy.decoder.events import Call
from p11spy.decoder.formats.p11spy import reader as p11log
from tests.conftest import REPO, SO_PIN, run

textual = pytest.importorskip("textual")

from rich.console import Console  # noqa: E402
from textual.pilot import Pilot  # noqa: E402

from p11spy.tui import detail, search  # noqa: E402
from p11spy.tui.app import ShowApp  # noqa: E402
from p11spy.tui.call_list import CallList  # noqa: E402
from p11spy.tui.dialogs import FilterScreen, HelpScreen, PromptScreen  # noqa: E402
from p11spy.tui.loader import open_index  # noqa: E402
from p11spy.tui.p11_index import P11Index  # noqa: E402
from p11spy.tui.stats_screen import StatsScreen  # noqa: E402
from p11spy.tui.trace_view import TraceView  # noqa: E402
from p11spy.tui.view import Filter, View  # noqa: E402
from tests.traces import TraceWriter, grow, login_story, ulong  # noqa: E402

FIXTURES = REPO / "fixtures"
OPENSC_WRONG_PIN = FIXTURES / "opensc-debug" / "written-0.24-linux-wrong-pin.log"
SPY_WRONG_PIN = FIXTURES / "pkcs11-spy" / "real-0.23-login-wrong-pin.log"
EXERCISE = REPO / "tests" / "clients" / "exercise.py"
P11SPY = Path(sys.executable).parent / "p11spy"
SIZE = (100, 30)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Times print in the machine's zone: fix it, so screens and snapshots do not vary."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def story(tmp_path: Path) -> Path:
    """A card session: SELECT, a wrong PIN (VERIFY -> 63C2), the right one, a signature."""
    path = tmp_path / "story.p11"
    login_story(path)
    return path


@pytest.fixture
def exercise_trace(token, tmp_path: Path, spy_env, shim_for) -> Path:
    """A real trace: tests/clients/exercise.py through the shim over SoftHSM2; it logs in
    once with a wrong PIN."""
    trace = tmp_path / "exercise.p11"
    res = run([sys.executable, str(EXERCISE), str(shim_for(token.module)), "1234", SO_PIN],
              spy_env(token, trace))
    assert res.returncode == 0, res.stderr
    assert "C_Login wrong CKR_PIN_INCORRECT" in res.stdout
    return trace


def sync(fn: Callable) -> Callable:
    """Run an async test in its own event loop (no async plugin needed)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


def screen_text(app: ShowApp) -> str:
    """What the terminal shows, as text."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False,
                      safe_box=False)
    console.print(app.screen._compositor.render_update(
        full=True, screen_stack=app._background_screens))
    return console.export_text()


async def ready(pilot: Pilot, app: ShowApp | None = None) -> TraceView:
    """Wait until the active trace is indexed, its rows listed and the detail shown."""
    app = app or pilot.app  # type: ignore[assignment]
    tv = None
    for _ in range(500):
        await pilot.pause(0.01)
        try:
            tv = app.active()
        except Exception:  # noqa: BLE001 - not composed yet
            continue
        if (tv.index.complete and tv.view.caught_up and len(tv.view)
                and tv.calls.virtual_size.height == len(tv.view) and tv._shown is not None):
            break
    assert tv is not None
    await pilot.pause(0.1)
    return tv


async def settle(pilot: Pilot, tv: TraceView) -> None:
    """Let searches finish and the detail pane catch up with the cursor."""
    for _ in range(300):
        await pilot.pause(0.01)
        if tv.searching is None:
            break
    await pilot.pause(0.1)


def under_cursor(tv: TraceView) -> Call:
    rec, _kid = tv.calls.current()
    e = tv.index.event(rec)
    assert isinstance(e, Call)
    return e


# --- the index, without a terminal ---------------------------------------------------------


def test_index_agrees_with_the_decoder(exercise_trace: Path) -> None:
    """Every call the decoder reads is a row with the same function and return value."""
    idx = open_index(exercise_trace)
    assert isinstance(idx, P11Index)
    idx.scan(lambda: False)
    with exercise_trace.open("rb") as f:
        calls = [e for e in p11log.read(f) if isinstance(e, Call)]
    rows = [r for r in idx.rows if idx.event(r).type == "call"]
    assert [idx.function(r) for r in rows] == [c.function for c in calls]
    assert [idx.event(r).rv for r in rows] == [c.rv for c in calls]
    assert len(idx.errors) == sum(1 for c in calls if c.rv)
    assert idx.stats.calls == len(calls)
    login = next(r for r in idx.errors if idx.event(r).rv_name == "CKR_PIN_INCORRECT")
    assert idx.function(login) == "C_Login"
    assert idx.session_label(idx.sessions[login]) == str(idx.event(login).args["hSession"])


def test_apdus_belong_to_their_call(story: Path) -> None:
    idx = open_index(story)
    idx.scan(lambda: False)
    login = idx.errors[0]
    assert idx.function(login) == "C_Login"
    [verify] = idx.kids(login)
    assert verify < login  # written before the call's own record
    assert idx.event(verify).sw == "63C2"
    assert idx.stats.status_words == {"9000": 3, "63C2": 1, "6120": 1}
    view = View(idx, expand_all=True)
    view.extend()
    pos = view.pos_of(login)
    assert view.record(pos + 1) == (login, verify)


def test_filters_are_index_arrays(story: Path) -> None:
    idx = open_index(story)
    idx.scan(lambda: False)
    errors = View(idx, Filter(errors=True))
    errors.extend()
    assert [idx.function(errors.record(i)[0]) for i in range(len(errors))] == ["C_Login"]
    sign = View(idx, Filter(functions=frozenset({idx.func_ids["C_Sign"]})))
    sign.extend()
    assert len(sign) == 1
    session = View(idx, Filter(sessions=frozenset(
        s for s, (_pid, h) in enumerate(idx.session_keys) if h == 7)))
    session.extend()
    names = [idx.function(session.record(i)[0]) for i in range(len(session))]
    assert names == ["C_OpenSession", "C_Login", "C_Login", "C_Sign"]


@pytest.mark.parametrize(("text", "kind"), [
    ("C_Login", "function"), ("login", "function"), ("CKR_PIN_INCORRECT", "rv"),
    ("0xa0", "rv"), ("160", "rv"), ("63 C2", "bytes"), ("63C2", "bytes"),
    ("CKU_USER", "text"), ("pkcs11-tool", "text"),
])
def test_search_reads_the_query(story: Path, text: str, kind: str) -> None:
    idx = open_index(story)
    idx.scan(lambda: False)
    q = search.parse(text, idx)
    assert q.kind == kind
    view = View(idx)
    pos = search.find(view, 0, q)
    assert pos is not None


def test_search_finds_bytes_inside_apdus_and_wraps(story: Path) -> None:
    idx = open_index(story)
    idx.scan(lambda: False)
    view = View(idx)
    q = search.parse("63 C2", idx)
    pos = search.find(view, 0, q)
    assert idx.function(view.record(pos)[0]) == "C_Login"
    assert search.find(view, pos, q) == pos  # the only match: found again after wrapping
    assert search.find(view, 0, search.parse("DE AD BE EF", idx)) is None


def test_damaged_and_truncated_traces_list_warnings(story: Path, tmp_path: Path) -> None:
    data = story.read_bytes()
    bad = tmp_path / "bad.p11"
    bad.write_bytes(data[:400] + b"garbage!" * 3 + data[400:-10])
    idx = open_index(bad)
    idx.scan(lambda: False)
    warnings = [idx.event(r).message for r in idx.rows if idx.event(r).type == "warning"]
    assert any("unreadable bytes" in w for w in warnings)
    assert any("file ends inside a record" in w for w in warnings)
    assert idx.stats.calls >= 4


def test_text_formats_keep_their_lines(tmp_path: Path) -> None:
    idx = open_index(OPENSC_WRONG_PIN)
    idx.scan(lambda: False)
    login = next(r for r in idx.errors if idx.function(r) == "C_Login")
    text = detail.plain(detail.build(idx, login))
    assert "CKR_PIN_INCORRECT" in text and "63C2" in text
    assert "31 32 33" not in text  # the PIN OpenSC logged in clear is masked in the pane
    raw = detail.plain(detail.build(idx, login, raw=True))
    assert "C_Login" in raw and "pkcs11-session.c" in raw
    spy = open_index(SPY_WRONG_PIN)
    spy.scan(lambda: False)
    assert any(spy.event(r).rv_name == "CKR_PIN_INCORRECT" for r in spy.errors)


def test_grow_repeats_records_with_new_call_numbers(story: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.p11"
    count = grow(story, big, 64 << 10)
    idx = open_index(big)
    idx.scan(lambda: False)
    assert len(idx.kinds) == count
    assert idx.stats.errors == len(idx.errors) > 10
    assert all(len(idx.apdu_kids(r)) == 1 for r in idx.errors)  # each copy keeps its APDU


def test_show_is_a_subcommand_and_needs_a_terminal(story: Path) -> None:
    res = subprocess.run([str(P11SPY), "show", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--follow" in res.stdout and "--format" in res.stdout
    res = subprocess.run([str(P11SPY), "show", str(story)], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 2
    assert "needs a terminal" in res.stderr


# --- the app, key by key ---------------------------------------------------------------------


@sync
async def test_first_screen_lists_calls_and_the_status(story: Path) -> None:
    app = ShowApp.for_paths([story])
    async with app.run_test(size=SIZE) as pilot:
        tv = await ready(pilot)
        text = screen_text(app)
        assert "C_Initialize" in text and "C_OpenSession" in text and "C_Finalize" in text
        assert "CKR_PIN_INCORRECT" in text
        assert "story.p11" in text and "6 calls" in text and "1 failed" in text
        assert "e Next error" in text and "q Quit" in text  # the footer
        assert isinstance(app.focused, CallList)
        assert tv.calls.cursor == 0


@sync
async def test_e_and_E_move_between_failed_calls(exercise_trace: Path) -> None:
    app = ShowApp.for_paths([exercise_trace])
    async with app.run_test(size=SIZE) as pilot:
        tv = await ready(pilot)
        await pilot.press("e")
        await settle(pilot, tv)
        first = tv.current_record()
        assert first == tv.index.errors[0]
        await pilot.press("e", "e")
        await settle(pilot, tv)
        assert tv.current_record() == tv.index.errors[2]
        await pilot.press("E")
        await settle(pilot, tv)
        assert tv.current_record() == tv.index.errors[1]
        assert "failed call" in screen_text(app)


@sync
async def test_search_slash_n_and_N(story: Path) -> None:
    app = ShowApp.for_paths([story])
    async with app.run_test(size=SIZE) as pilot:
        tv = await ready(pilot)
        await pilot.press("slash")
        assert isinstance(app.screen, PromptScreen)
        await pilot.press(*"C_Login", "enter")
        await settle(pilot, tv)
        first = tv.current_record()
        assert under_cursor(tv).function == "C_Login"
        await pilot.press("n")
        await settle(pilot, tv)
        assert under_cursor(tv).function == "C_Login" and tv.current_record() > first
        await pilot.press("N")
        await settle(pilot, tv)
        assert tv.current_record() == first
        for query, function in (("6120", "C_Sign"), ("CKR_PIN_INCORRECT", "C_Login"),
                                ("pkcs11-tool", None)):
            await pilot.press("home", "slash", "ctrl+a", "ctrl+k", *query, "enter")
            await settle(pilot, tv)
            rec = tv.current_record()
            if function:
                assert tv.index.function(rec) == function
            else:
                assert tv.index.event(rec).type == "process"
        assert "pkcs11-tool" in screen_text(app)


@sync
async def test_filter_dialog_errors_function_thread_session_and_clear(story: Path) -> None:
    app = ShowApp.for_paths([story])
    async with app.run_test(size=SIZE) as pilot:
        tv = await ready(pilot)
        await pilot.press("f")
        assert isinstance(app.screen, FilterScreen)
        await pilot.click("#errors")
        await pilot.click("#apply")
        await settle(pilot, tv)
        assert len(tv.view) == 1 and under_cursor(tv).rv_name == "CKR_PIN_INCORRECT"
        assert "filter: errors" in screen_text(app)
        await pilot.press("f")
        await pilot.click("#errors")  # off again
        await pilot.click("#functions")
        await pilot.press(*"Login, C_Sign")
        await pilot.click("#threads")
        await pilot.press(*"T1")
        await pilot.click("#sessions")
        await pilot.press("7", "enter")
        await settle(pilot, tv)
        names = [tv.index.function(tv.view.record(i)[0]) for i in range(len(tv.view))]
        assert names == ["C_Login", "C_Login", "C_Sign"]
        await pilot.press("f")
        await pilot.click("#sessions")
        await pilot.press(*"99", "enter")
        await pilot.pause(0.1)
        assert isinstance(app.screen, FilterScreen)  # says what is wrong, stays open
        assert "no session 99" in screen_text(app)
        await pilot.press("escape")
        await pilot.press("F")
        await settle(pilot, tv)
        assert not tv.view.filter.active and len(tv.view) == len(tv.index.rows)


@sync
async def test_goto_record_and_time(story: Path) -> None:
    app = ShowApp.for_paths([story])
    async with app.run_test(size=SIZE) as pilot:
        tv = await ready(pilot)
        await pilot.press("g", *"10", "enter")
        await settle(pilot, tv)
        assert tv.current_record() == 10
        await pilot.press("g", *"22:13:20.004", "enter")
        await settle(pilot, tv)
        assert under_cursor(tv).function == "C_Login" and under_cursor(tv).rv == 0
        await pilot.press("g", *"2023-11-14 22:13:20.0088", "enter")
        await settle(pilot, tv)
        assert under_cursor(tv).function == "C_Sign"
        await pilot.press("g", *"soon", "enter")
        await settle(pilot, tv)
        assert "not a record number or a time" in screen_text(app)


@sync
async def test_stats_screen_and_jump_to_a_slow_call(story: Path) -> None:
    app = ShowApp.for_paths([story])
    async with app.run_test(size=(100, 50)) as pilot:
        tv = await ready(pilot)
        await pilot.press("s")
        await pilot.pause(0.1)
        assert isinstance(app.screen, StatsScreen)
        text = screen_text(app)
        for word in ("Per function", "C_Login", "CKR_PIN_INCORRECT", "Status words",
                     "63C2", "6120", "9000", "Slowest calls"):
            assert word in text, word
        await pilot.press("enter")  # the slowest: C_Sign (9 ms)
        await settle(pilot, tv)
        assert not isinstance(app.screen, StatsScreen)
        assert under_cursor(tv).function == "C_Sign"
        await pilot.press("s")
        await pilot.pause(0.05)
        await pilot.press("escape")
        await pilot.pause(0.05)
        assert not isinstance(app.screen, StatsScreen)


@sync
async def test_help_screen_lists_the_keys(story: Path) -> None:
    app = ShowApp.for_paths([story])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.05)
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for key in ("e / E", "n / N", "f / F", "Enter", "Ctrl+P"):
            assert key in text
        await pilot.press("escape")
        await pilot.pause(0.05)
        assert not isinstance(app.screen, HelpScreen)


@sync
async def test_enter_opens_apdus_a_opens_all_o_shows_raw(story: Path) -> None:
    app = ShowApp.for_paths([story])
    async with app.run_test(size=SIZE) as pilot:
        tv = await ready(pilot)
        rows = len(tv.view)
        await pilot.press("e", "enter")
        await settle(pilot, tv)
        assert len(tv.view) == rows + 1
        await pilot.press("down")
        await settle(pilot, tv)
        rec, kid = tv.calls.current()
        assert kid is not None and tv.index.event(kid).sw == "63C2"
        text = screen_text(app)
        assert "VERIFY" in text and "63C2" in text and "2 tries left" in text.lower() or \
            "2 tries left" in text
        await pilot.press("up", "enter")
        await settle(pilot, tv)
        assert len(tv.view) == rows
        await pilot.press("a")
        await settle(pilot, tv)
        assert len(tv.view) == rows + 5  # every APDU of the session
        await pilot.press("a")
        await settle(pilot, tv)
        assert len(tv.view) == rows
        await pilot.press("o")
        await settle(pilot, tv)
        assert "Raw record" in tv.detail_text() and "P11R" in screen_text(app)
        await pilot.press("o")
        await settle(pilot, tv)
        assert "Why CKR_PIN_INCORRECT" in tv.detail_text()


@sync
async def test_mouse_selects_and_double_click_opens(story: Path) -> None:
    app = ShowApp.for_paths([story])
    async with app.run_test(size=SIZE) as pilot:
        tv = await ready(pilot)
        login = tv.view.pos_of(tv.index.errors[0])
        await pilot.click(CallList, offset=(10, login))
        await settle(pilot, tv)
        assert tv.calls.cursor == login
        await pilot.click(CallList, offset=(10, login), times=2)
        await settle(pilot, tv)
        assert tv.view.is_open(tv.index.errors[0])
        await pilot.click("Footer", offset=(2, 0))  # the footer's first key: e
        await settle(pilot, tv)


@sync
async def test_command_palette_lists_the_actions(story: Path) -> None:
    app = ShowApp.for_paths([story])
    async with app.run_test(size=SIZE) as pilot:
        tv = await ready(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in ("Next failed call", "Search", "Filter", "Go to", "Statistics", "Keys"):
            assert title in titles
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"next failed")
        await pilot.pause(0.5)
        assert "Next failed call" in screen_text(app)
        await pilot.press("enter")
        await settle(pilot, tv)
        assert under_cursor(tv).rv_name == "CKR_PIN_INCORRECT"


@sync
async def test_q_quits() -> None:
    app = ShowApp.for_paths([OPENSC_WRONG_PIN])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("q")
        await pilot.pause(0.05)
    assert app.return_code in (0, None)


@sync
async def test_several_files_open_in_tabs(story: Path) -> None:
    app = ShowApp.for_paths([story, OPENSC_WRONG_PIN, SPY_WRONG_PIN])
    async with app.run_test(size=SIZE) as pilot:
        tv = await ready(pilot)
        assert tv.index.path == story
        await pilot.press("right_square_bracket")
        tv2 = await ready(pilot)
        assert tv2.index.path == OPENSC_WRONG_PIN and tv2.index.format_name == "opensc-debug"
        await pilot.press("e")
        await settle(pilot, tv2)
        assert under_cursor(tv2).rv_name == "CKR_PIN_INCORRECT"
        await pilot.press("right_square_bracket")
        tv3 = await ready(pilot)
        assert tv3.index.format_name == "pkcs11-spy"
        text = screen_text(app)
        assert "story.p11" in text and "real-0.23-login-wrong-pin.log" in text
        await pilot.press("left_square_bracket", "left_square_bracket")
        await pilot.pause(0.1)
        assert app.active() is tv


@sync
async def test_moving_keys(story: Path) -> None:
    app = ShowApp.for_paths([story])
    async with app.run_test(size=(100, 14)) as pilot:
        tv = await ready(pilot)
        await pilot.press("down", "j")
        assert tv.calls.cursor == 2
        await pilot.press("up", "k")
        assert tv.calls.cursor == 0
        await pilot.press("pagedown")
        assert tv.calls.cursor > 2
        await pilot.press("pageup")
        assert tv.calls.cursor == 0
        await pilot.press("end")
        assert tv.calls.cursor == len(tv.view) - 1
        await pilot.press("home")
        assert tv.calls.cursor == 0
        await pilot.press("tab")
        assert app.focused is not None and app.focused.id == "detail-scroll"


@sync
async def test_following_an_empty_new_trace(tmp_path: Path) -> None:
    """The shim creates the file at the first call: an empty file followed is read as a
    p11spy trace, and its calls appear as they are written."""
    path = tmp_path / "new.p11"
    path.touch()
    app = ShowApp.for_paths([path], follow=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        tv = app.active()
        assert len(tv.view) == 0
        with path.open("ab") as f:
            w = TraceWriter(f)
            w.process()
            w.call("C_Initialize", ulong(0, 0))
        await wait_for(pilot, lambda: len(tv.view) == 2)
        await pilot.pause(0.2)
        assert "C_Initialize" in screen_text(app)


@sync
async def test_follow_shows_new_calls_and_pauses_when_scrolled_up(story: Path) -> None:
    app = ShowApp.for_paths([story], follow=True)
    async with app.run_test(size=SIZE) as pilot:
        tv = await ready_following(pilot)
        start = len(tv.view)
        assert tv.calls.cursor == start - 1  # following: on the last row
        with story.open("ab") as f:
            w = TraceWriter(f, start_us=1_700_000_100_000_000)
            w.number = 100
            for _ in range(3):
                w.call("C_GetSessionInfo", ulong(0, 7) + ulong(1, 0))
        await wait_for(pilot, lambda: len(tv.view) == start + 3)
        await pilot.pause(0.2)
        assert tv.calls.cursor == start + 2
        await pilot.press("up", "up")
        with story.open("ab") as f:
            w = TraceWriter(f, start_us=1_700_000_200_000_000)
            w.number = 200
            w.call("C_Logout", ulong(0, 7), rv="CKR_USER_NOT_LOGGED_IN")
            w.call("C_CloseSession", ulong(0, 7))
        await wait_for(pilot, lambda: len(tv.view) == start + 5)
        await pilot.pause(0.2)
        assert tv.calls.cursor == start  # paused: the cursor stays
        assert "paused, 2 new" in screen_text(app)
        await pilot.press("end")
        await pilot.pause(0.2)
        assert tv.calls.cursor == start + 4 and "following" in screen_text(app)


async def ready_following(pilot: Pilot) -> TraceView:
    for _ in range(500):
        await pilot.pause(0.01)
        try:
            tv = pilot.app.active()
        except Exception:  # noqa: BLE001
            continue
        if tv.index.done_bytes and tv.index.done_bytes >= tv.index.size and len(tv.view) \
                and tv.calls.virtual_size.height == len(tv.view):
            await pilot.pause(0.2)
            return tv
    raise AssertionError("the followed file was never indexed")


async def wait_for(pilot: Pilot, cond: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        await pilot.pause(0.05)


# --- the acceptance: a real trace, a wrong PIN, found with `e` -----------------------------


@sync
async def test_acceptance_e_finds_the_wrong_pin_login(exercise_trace: Path) -> None:
    """exercise.py logs in once with a wrong PIN: pressing e (repeatedly, as a user would,
    through the earlier failures the script provokes on purpose) puts that C_Login on screen
    with CKR_PIN_INCORRECT and the knowledge base's explanation."""
    app = ShowApp.for_paths([exercise_trace])
    async with app.run_test(size=(120, 40)) as pilot:
        tv = await ready(pilot)
        for _ in range(len(tv.index.errors)):
            await pilot.press("e")
            await pilot.pause(0.01)
            if tv.index.event(tv.current_record()).rv_name == "CKR_PIN_INCORRECT":
                break
        await settle(pilot, tv)
        login = under_cursor(tv)
        assert login.function == "C_Login" and login.rv_name == "CKR_PIN_INCORRECT"
        text = screen_text(app)
        assert "C_Login" in text and "CKR_PIN_INCORRECT" in text
        assert "Why CKR_PIN_INCORRECT" in text
        assert "The token rejected the PIN" in text  # decoder/knowledge via decoder/codes.py
        assert "<masked: 4 bytes, ASCII digits>" in text


# --- snapshots -------------------------------------------------------------------------------


def _snap(story: Path, *keys: str, size: tuple[int, int] = SIZE,
          after: Callable[[TraceView], None] | None = None):
    async def run_before(pilot: Pilot) -> None:
        tv = await ready(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot, tv)
        if after is not None:
            after(tv)
        await settle(pilot, tv)

    return ShowApp.for_paths([story]), run_before, size


SNAPSHOTS = [
    ("main_80x24", ("e",), (80, 24)),
    ("main_failed_login", ("e",), SIZE),
    ("apdus_open", ("a", "e", "down"), SIZE),
    ("raw_record", ("e", "o"), SIZE),
    ("stats", ("s",), (100, 40)),
    ("help", ("question_mark",), SIZE),
    ("filter_dialog", ("f",), SIZE),
]


@pytest.mark.parametrize(("name", "keys", "size"), SNAPSHOTS, ids=[s[0] for s in SNAPSHOTS])
def test_snapshot(snap_compare, story: Path, name: str, keys: tuple[str, ...],
                  size: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    from textual.widgets import Input

    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None)
    app, run_before, size = _snap(story, *keys, size=size)
    assert snap_compare(app, terminal_size=size, run_before=run_before)


# --- a real terminal -------------------------------------------------------------------------


# A tmux server of the test run's own (its own socket, no configuration file): sessions get
# exactly the environment given, whatever server another test or the user has running.
TMUX = ["tmux", "-L", f"p11spy-tests-{os.getpid()}", "-f", "/dev/null"]


def _tmux(*args: str) -> str:
    return subprocess.run([*TMUX, *args], capture_output=True, text=True, check=True).stdout


@contextlib.contextmanager
def tmux_session(cmd: str, env: dict[str, str], name: str) -> Iterator[str]:
    """cmd in a detached 120x40 terminal; the session is killed afterwards."""
    subprocess.run([*TMUX, "new-session", "-d", "-s", name, "-x", "120", "-y", "40", cmd],
                   check=True, env=env)
    try:
        yield name
    finally:
        subprocess.run([*TMUX, "kill-session", "-t", name], capture_output=True)


def _screen(session: str) -> str:
    return _tmux("capture-pane", "-p", "-t", session)


def _wait_screen(session: str, cond: Callable[[str], bool], timeout: float = 15) -> str:
    end = time.monotonic() + timeout
    while True:
        text = _screen(session)
        if cond(text):
            return text
        assert time.monotonic() < end, f"screen never matched:\n{text}"
        time.sleep(0.1)


def _press_until(session: str, key: str, cond: Callable[[str], bool]) -> str:
    """Press a key until the screen shows its effect (the first key may arrive before the
    app reads its input)."""
    for _ in range(20):
        _tmux("send-keys", "-t", session, key)
        try:
            return _wait_screen(session, cond, timeout=1)
        except AssertionError:
            continue
    raise AssertionError(f"{key} had no effect:\n{_screen(session)}")


def test_real_terminal_with_tmux(exercise_trace: Path) -> None:
    env = {**os.environ, "TZ": "UTC"}
    cmd = f"{P11SPY} show {exercise_trace}; echo EXITED $?; sleep 30"
    with tmux_session(cmd, env, "show") as session:
        text = _wait_screen(session, lambda s: "C_GetFunctionList" in s and "q Quit" in s)
        assert "e Next error" in text and re.search(r"[\d,]+ calls", text)
        # Keep C_Login only, then e until the wrong PIN: what a user would type. Keys sent
        # before the dialog has focused its first field go elsewhere: the text must be seen
        # in the functions field before Enter, else the dialog is closed and opened again.
        for _ in range(5):
            _press_until(session, "f", lambda s: "functions (" in s)
            time.sleep(0.2)
            _tmux("send-keys", "-t", session, "Tab")
            _tmux("send-keys", "-t", session, "-l", "C_Login")
            try:
                _wait_screen(session, lambda s: re.search(r"│ C_Login +│", s) is not None,
                             timeout=2)
                break
            except AssertionError:
                _tmux("send-keys", "-t", session, "Escape")
                _wait_screen(session, lambda s: "functions (" not in s)
        _tmux("send-keys", "-t", session, "Enter")
        _wait_screen(session, lambda s: "filter: C_Login" in s)
        for _ in range(10):
            _tmux("send-keys", "-t", session, "e")
            time.sleep(0.3)
            text = _screen(session)
            if "Why CKR_PIN_INCORRECT" in text:
                break
        assert "C_Login  CKR_PIN_INCORRECT (0xa0)" in text
        assert "The token rejected the PIN" in text
        _tmux("send-keys", "-t", session, "q")
        text = _wait_screen(session, lambda s: "EXITED" in s)
        assert "EXITED 0" in text
