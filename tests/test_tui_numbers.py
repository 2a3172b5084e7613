"""The viewer numbers what it shows as decode does (#seq, which diagnose cites), one number
only; its status bar speaks of the row under the cursor; the filter dialog's unchecked box is
empty. On a real trace of pkcs11-tool's wrong PIN on the card station (fixtures/p11spy), whose
PC/SC records come before their call's record in the file: record order and decode's order
differ there."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from textual.widgets import Static

from p11spy.tui.app import ShowApp
from p11spy.tui.dialogs import FilterScreen
from tests.conftest import REPO
from tests.test_tui import ready, screen_text, settle, sync, under_cursor

TRACE = REPO / "fixtures" / "p11spy" / "real-card-wrong-pin.p11"
P11SPY = str(Path(sys.executable).parent / "p11spy")
SIZE = (100, 30)


def decoded() -> dict[int, str]:
    """decode's #seq -> the function (or APDU) it numbers."""
    text = subprocess.run([P11SPY, "decode", str(TRACE)], capture_output=True, text=True,
                          check=True).stdout
    return {int(m[1]): m[2] for m in re.finditer(r"^\s*#(\d+) (\S+)", text, re.MULTILINE)}


def status(app: ShowApp) -> str:
    return str(app.active().query_one("#status", Static).render())


@sync
async def test_rows_and_detail_carry_decodes_number() -> None:
    numbers = decoded()
    login = next(seq for seq, fn in numbers.items() if fn == "C_Login")
    app = ShowApp.for_paths([TRACE])
    async with app.run_test(size=SIZE) as pilot:
        tv = await ready(pilot)
        idx = tv.index
        for rec in range(len(idx.kinds)):  # every record, calls and what is under them
            seq = idx.seq_of(rec)
            assert idx.record_of_seq(seq) == rec
            if seq in numbers and numbers[seq].startswith("C_"):
                assert idx.function(rec) == numbers[seq]
        assert idx.seq_of(idx.record_of_seq(login)) == login != idx.record_of_seq(login)
        await pilot.press("e")
        await settle(pilot, tv)
        assert under_cursor(tv).function == "C_Login"
        rows = [line for line in screen_text(app).splitlines() if "C_Login" in line]
        assert rows and rows[0].split()[0] == str(login)
        pane = tv.detail_text()
        facts = pane.splitlines()[2]
        assert facts.startswith(f"#{login} · ") and "record" not in facts \
            and "call #" not in facts, facts
        # the APDUs and PC/SC calls under it carry decode's numbers too, not 1, 2, 3
        kids = [idx.seq_of(k) for k in idx.kids(idx.record_of_seq(login))]
        assert kids == [s for s in numbers if login < s <= kids[-1]]
        shown = [int(m) for m in re.findall(r"^\s*#(\d+) ", pane, re.MULTILINE)]
        assert shown == [login, *kids]  # the call's own facts line, then its children
        # the status bar says where `e` went, until the cursor leaves that row
        assert f"failed call #{login} C_Login" in status(app)
        await pilot.press("up")
        await settle(pilot, tv)
        assert "failed call" not in status(app)
        await pilot.press("down")
        await settle(pilot, tv)
        assert "failed call" not in status(app)
        # g takes decode's number
        await pilot.press("home", "g", *str(login), "enter")
        await settle(pilot, tv)
        assert under_cursor(tv).function == "C_Login" and f"#{login}" in status(app)


@sync
async def test_filter_checkbox_is_empty_until_checked() -> None:
    app = ShowApp.for_paths([TRACE])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f")
        await pilot.pause(0.2)
        assert isinstance(app.screen, FilterScreen)

        def box() -> str:
            [line] = [x for x in screen_text(app).splitlines() if "failed calls only" in x]
            return line[:line.index("failed calls only")].rstrip()[-3:]

        assert box() == "▐ ▌"
        await pilot.click("#errors")
        await pilot.pause(0.2)
        assert box() == "▐✓▌"


def test_no_python_none_on_any_fixture() -> None:
    """What a format does not record (a pid, a tid, a module) is left out of the rows and the
    detail pane, never printed as Python's None; every fixture, every record (up to 3000)."""
    from p11spy.tui import detail
    from p11spy.tui.loader import open_index
    from p11spy.tui.row_text import Columns, call_parts

    for path in sorted(p for p in (REPO / "fixtures").rglob("*")
                       if p.is_file() and p.suffix not in (".md", ".sh")):
        idx = open_index(path)
        idx.scan(lambda: False)
        cols = Columns(120, idx)
        for rec in range(min(len(idx.kinds), 3000)):
            e = idx.event(rec)
            pane = detail.plain(detail.build(idx, rec, None, False))
            row = "".join(text for text, _ in call_parts(idx, rec, e, cols))
            assert not re.search(r"\bNone\b", pane + row), (path.name, rec, pane, row)
