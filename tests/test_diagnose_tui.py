"""The findings panel of the viewer (tui/findings.py) on a real trace: it lists what diagnose
finds, shows the selected finding, and Enter goes to the call it cites."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Static

from p11spy.decoder.diagnose import diagnose
from p11spy.decoder.formats.registry import open_events
from p11spy.tui.app import ShowApp
from p11spy.tui.detail import build, plain
from p11spy.tui.findings import FindingsScreen, finding_text, marks, rows_cited
from p11spy.tui.p11_index import P11Index
from p11spy.tui.trace_view import TraceView
from tests.conftest import REPO
from tests.test_tui import ready, sync

WRONG_PIN = REPO / "fixtures" / "pkcs11-spy" / "written-0.24-windows-pt-crlf.log"
SIZE = (100, 30)


def test_marks_keep_the_worst_severity() -> None:
    findings = diagnose(open_events(WRONG_PIN))
    m = marks(rows_cited(findings))
    login = one_seq(findings, "pin-encoding")
    assert m[login] == "error"
    assert "What to do" in finding_text(findings[0]).plain


def one_seq(findings, rule: str) -> int:
    [f] = [f for f in findings if f.rule == rule]
    return f.seqs[0]


@sync
async def test_panel_lists_findings_and_goes_to_the_call() -> None:
    app = ShowApp.for_paths([WRONG_PIN])
    async with app.run_test(size=SIZE) as pilot:
        tv = await ready(pilot)
        chosen: list[int | None] = []

        def done(rec: int | None) -> None:
            chosen.append(rec)
            if rec is not None:
                tv.go_to_record(rec)

        app.push_screen(FindingsScreen(tv.index), done)
        screen = await findings_shown(pilot, app)
        table = screen.query_one("#findings", DataTable)
        assert table.row_count == 2  # the encoding leads, the wrong PIN inside it
        assert "wrongly encoded" in str(table.get_row_at(0)[1])
        detail = screen.query_one("#finding", Static)
        assert "What to do" in str(detail.render())
        await pilot.press("down")  # the not-logged-in finding
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert len(chosen) == 1 and chosen[0] is not None
        rec, _kid = tv.calls.current()
        assert rec == chosen[0]
        # the call that failed, not the finding's first evidence (the failed login before it)
        call = tv.index.event(rec)
        assert call.function == "C_Sign" and call.rv_name == "CKR_USER_NOT_LOGGED_IN"



@pytest.mark.parametrize("name", ["real-card-wrong-pin.p11", "real-card-sign.p11",
                                  "real-card-list.p11"])
def test_the_seqs_diagnose_cites_are_the_viewers_records(name: str) -> None:
    """In a p11spy trace a call's PC/SC records come before it in the file, and the decoder
    numbers them after it: the viewer maps each seq to its own record."""
    path = REPO / "fixtures" / "p11spy" / name
    idx = P11Index(path)
    idx.scan(lambda: False)
    events = list(open_events(path))
    assert len(events) == len(idx.kinds)
    for e in events:
        rec = idx.record_of_seq(e.seq)
        assert rec is not None
        got = idx.event(rec)
        assert (type(got), getattr(got, "function", None), getattr(got, "command", None)) == \
            (type(e), getattr(e, "function", None), getattr(e, "command", None)), e.seq


def test_seqs_agree_where_pcsc_calls_outgrow_what_is_kept_waiting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the bytes of PC/SC records a reader keeps for a call not returned yet (lowered
    here from 4 MiB), decode shows them without their call under a warning: so does the
    viewer, with the same numbers."""
    from p11spy.decoder.formats.p11spy import entries

    monkeypatch.setattr(entries, "MAX_WAITING", 2000)
    path = REPO / "fixtures" / "p11spy" / "real-card-sign.p11"
    idx = P11Index(path)
    idx.scan(lambda: False)
    events = list(open_events(path))
    gave_up = [e for e in events if "than a reader keeps waiting" in getattr(e, "message", "")]
    assert len(gave_up) >= 3 and len(events) == len(idx.kinds)
    for e in events:
        got = idx.event(idx.record_of_seq(e.seq))
        assert (type(got), getattr(got, "function", None), getattr(got, "command", None)) == \
            (type(e), getattr(e, "function", None), getattr(e, "command", None)), e.seq
        assert getattr(e, "message", "") in getattr(got, "message", "")


async def findings_shown(pilot, app: ShowApp) -> FindingsScreen:
    """The findings panel on top, once diagnose has filled it."""
    screen = app.screen
    assert isinstance(screen, FindingsScreen)
    for _ in range(300):
        await pilot.pause(0.01)
        if screen.findings is not None:
            break
    await pilot.pause(0.1)
    return screen


async def first_finding(pilot, app: ShowApp) -> tuple[TraceView, str, int]:
    """What a user does: d, then Enter on the first finding. The trace's view, that finding's
    title as listed, and the record the viewer is on after."""
    tv = await ready(pilot)
    await pilot.press("d")
    screen = await findings_shown(pilot, app)
    first = str(screen.query_one("#findings", DataTable).get_row_at(0)[1])
    await pilot.press("enter")
    await pilot.pause(0.2)
    return tv, first, tv.calls.current()[0]


@sync
async def test_d_on_a_card_trace_goes_to_the_login_and_marks_it() -> None:
    """What a user does: open a p11spy trace of a wrong PIN on the card, press d, Enter on the
    first finding: the viewer is on C_Login, and its row carries the error mark."""
    path = REPO / "fixtures" / "p11spy" / "real-card-wrong-pin.p11"
    app = ShowApp.for_paths([path])
    async with app.run_test(size=(120, 40)) as pilot:
        tv, first, rec = await first_finding(pilot, app)
        assert "Wrong PIN" in first
        assert tv.index.event(rec).function == "C_Login"
        assert tv.index.marks[rec] == "error"
        line = tv.calls.render_line(tv.calls.cursor - int(tv.calls.scroll_offset.y))
        assert "●" in line.text and "C_Login" in line.text
        # and the detail pane says what the finding says about this call
        text = plain(build(tv.index, rec), width=200)
        assert "Findings" in text and "[error] Wrong PIN: 1 failed login(s)" in text
        assert "what to do: Check which PIN the program really sends" in text
