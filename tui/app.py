"""`p11spy show`: the Textual app that finds the failing call in a trace of any size.

Why the app is thin: every file is a TraceView that owns its index and workers; the app holds
the key bindings (so they work wherever the focus is), the command palette entries, the tabs
when several files are open, and the modal screens that ask the user something.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane

from p11spy.tui import redacted
from p11spy.tui.dialogs import FilterScreen, HelpScreen, PromptScreen
from p11spy.tui.findings import FindingsScreen
from p11spy.tui.loader import open_index
from p11spy.tui.stats_screen import StatsScreen
from p11spy.tui.trace_index import TraceIndex
from p11spy.tui.trace_view import TraceView
from p11spy.tui.view import Filter

THEME = "ansi-dark"  # the terminal's own colours; P11SPY_THEME picks another Textual theme

# (action, title, help) for the command palette; the keys are in ShowApp.BINDINGS.
ACTIONS = [
    ("next_error", "Next failed call", "move to the next call that did not return CKR_OK"),
    ("prev_error", "Previous failed call", "move to the previous failed call"),
    ("search", "Search", "function, return code, hex bytes or text"),
    ("search_next", "Next match", "repeat the last search forwards"),
    ("search_prev", "Previous match", "repeat the last search backwards"),
    ("filter", "Filter", "errors only, function, thread, session"),
    ("clear_filter", "Clear filter", "show every call again"),
    ("goto", "Go to", "a record number or a time"),
    ("stats", "Statistics", "per function counts and times, status words, slowest calls"),
    ("findings", "Findings", "what went wrong, as `p11spy diagnose` says; marks the calls"),
    ("expand_all", "Open all APDUs", "show the APDUs under every call, or fold them"),
    ("raw", "Raw record", "switch the detail pane between decoded and raw"),
    ("follow", "Follow", "go to the last call and follow new ones (with --follow)"),
    ("redacted", "Redacted view", "the trace with PINs and key material masked, as `p11spy "
                                  "redact` writes it (again: the original)"),
    ("export_redacted", "Export redacted trace", "write <name>.redacted<ext> next to the trace"),
    ("help", "Keys", "the help screen"),
]


_TRACE_ACTIONS = {a for a, _t, _h in ACTIONS} | {"tab", "cancel"}


class ShowApp(App[int]):
    """Browse one or more traces; returns 0."""

    TITLE = "p11spy show"
    CSS = """
    Screen { layout: vertical; }
    TabbedContent { height: 1fr; }
    TabPane { padding: 0; height: 1fr; }
    """
    BINDINGS = [
        Binding("e", "next_error", "Next error"),
        Binding("E", "prev_error", "Prev"),
        Binding("slash", "search", "Search"),
        Binding("n", "search_next", "Next match", show=False),
        Binding("N", "search_prev", "Prev match", show=False),
        Binding("f", "filter", "Filter"),
        Binding("F", "clear_filter", "Clear filter", show=False),
        Binding("g", "goto", "Go to"),
        Binding("s", "stats", "Stats"),
        Binding("d", "findings", "Findings", show=False),
        Binding("a", "expand_all", "All APDUs", show=False),
        Binding("o", "raw", "Original record", show=False),
        Binding("r", "redacted", "Redacted view", show=False),
        Binding("x", "export_redacted", "Export redacted", show=False),
        Binding("escape", "cancel", "Cancel search", show=False),
        Binding("left_square_bracket", "tab(-1)", "Previous file", show=False),
        Binding("right_square_bracket", "tab(1)", "Next file", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, indexes: list[TraceIndex], follow: bool = False) -> None:
        super().__init__()
        self.indexes = indexes
        self.follow = follow

    @classmethod
    def for_paths(cls, paths: Iterable[str | Path], follow: bool = False,
                  fmt: str | None = None) -> ShowApp:
        return cls([open_index(Path(p), fmt, follow) for p in paths], follow)

    def compose(self) -> ComposeResult:
        if len(self.indexes) == 1:
            yield TraceView(self.indexes[0], self.follow)
        else:
            with TabbedContent():
                for i, idx in enumerate(self.indexes):
                    with TabPane(idx.path.name, id=f"file{i}"):
                        yield TraceView(idx, self.follow)
        yield Footer(show_command_palette=False)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The trace commands only act on the main screen (not under a dialog or stats)."""
        if action in _TRACE_ACTIONS and len(self.screen_stack) > 1:
            return False
        return True

    def on_mount(self) -> None:
        self.theme = os.environ.get("P11SPY_THEME", THEME)
        self.active().calls.focus()

    def on_unmount(self) -> None:
        for tv in self.query(TraceView):
            tv.stop()

    def active(self) -> TraceView:
        """The trace view of the visible tab."""
        if len(self.indexes) > 1:
            tabs = self.query_one(TabbedContent)
            pane = tabs.get_pane(tabs.active) if tabs.active else None
            if pane is not None:
                return pane.query_one(TraceView)
        return self.query_one(TraceView)

    # -- actions -------------------------------------------------------------------------------

    def action_next_error(self) -> None:
        self.active().next_error()

    def action_prev_error(self) -> None:
        self.active().next_error(backwards=True)

    def action_search(self) -> None:
        tv = self.active()
        last = tv.last_query.text if tv.last_query else ""

        def done(text: str | None) -> None:
            if text:
                tv.start_search(text)

        self.push_screen(PromptScreen(
            "Search", "function (C_Login), code (CKR_PIN_INCORRECT, 0xa0), hex (6A 82), "
                      "constant (CKM_RSA_PKCS) or text; n / N repeat", last,
            "C_Login"), done)

    def action_search_next(self) -> None:
        self.active().search_again()

    def action_search_prev(self) -> None:
        self.active().search_again(backwards=True)

    def action_filter(self) -> None:
        tv = self.active()

        def done(flt: Filter | None) -> None:
            if flt is not None:
                tv.set_filter(flt)

        self.push_screen(FilterScreen(tv.index, tv.view.filter), done)

    def action_clear_filter(self) -> None:
        self.active().set_filter(Filter())

    def action_goto(self) -> None:
        tv = self.active()

        def done(text: str | None) -> None:
            if text:
                tv.go_to(text)

        self.push_screen(PromptScreen("Go to", "a call number (#1234, as decode and diagnose "
                                               "number them) or a time (12:34:56.789, "
                                               "2024-03-25 12:34)",
                                      placeholder="#number or time"), done)

    def action_stats(self) -> None:
        tv = self.active()

        def done(rec: int | None) -> None:
            if rec is not None and not tv.go_to_record(rec):
                tv.say(f"{tv.number(rec)} is not in the filtered list")

        self.push_screen(StatsScreen(tv.index), done)

    def action_findings(self) -> None:
        tv = self.active()

        def done(rec: int | None) -> None:
            tv.calls.redraw()  # with the marks the diagnosis left
            if rec is not None and not tv.go_to_record(rec):
                tv.say(f"{tv.number(rec)} is not in the filtered list")

        self.push_screen(FindingsScreen(tv.index), done)

    def action_expand_all(self) -> None:
        self.active().toggle_expand_all()

    def action_raw(self) -> None:
        self.active().toggle_raw()

    def action_follow(self) -> None:
        self.active().resume_follow()

    def action_cancel(self) -> None:
        self.active().cancel_search()

    def action_redacted(self) -> None:
        tv = self.active()
        original = getattr(tv, "redacted_from", None)
        if original is not None:  # back to the trace as it is
            self._swap(tv, open_index(original, None, self.follow), self.follow)
            return
        tv.say("redacting…")
        self._redact_for_view(tv)

    @work(thread=True, group="redact", exit_on_error=False)
    def _redact_for_view(self, tv: TraceView) -> None:
        from p11spy.errors import UserError

        try:
            path, n = redacted.redacted_copy(tv.index.path,
                                             getattr(tv.index, "format_name", None))
        except (UserError, OSError) as exc:
            self.call_from_thread(tv.say, f"cannot redact: {exc}")
            return
        self.call_from_thread(self._show_redacted, tv, path, n)

    def _show_redacted(self, tv: TraceView, path: Path, masked: int) -> None:
        new = self._swap(tv, open_index(path), follow=False)
        new.redacted_from = tv.index.path  # type: ignore[attr-defined]
        new.view_note = f"redacted view: {masked} place(s) masked (r: the original)"

    def _swap(self, tv: TraceView, index: TraceIndex, follow: bool) -> TraceView:
        """Replaces a trace view by one of another index, in the same place."""
        new = TraceView(index, follow)
        tv.stop()
        tv.parent.mount(new, before=tv)
        tv.remove()
        self.call_after_refresh(lambda: new.calls.focus())
        return new

    def action_export_redacted(self) -> None:
        tv = self.active()
        src = getattr(tv, "redacted_from", None) or tv.index.path
        tv.say("exporting the redacted trace…")
        self._export(tv, src)

    @work(thread=True, group="redact", exit_on_error=False)
    def _export(self, tv: TraceView, src: Path) -> None:
        from p11spy.errors import UserError

        try:
            dest, n = redacted.export(src)
        except (UserError, OSError) as exc:
            self.call_from_thread(tv.say, f"cannot export: {exc}")
            return
        self.call_from_thread(tv.say, f"wrote {dest}: {n} place(s) masked")

    def action_tab(self, step: int) -> None:
        if len(self.indexes) < 2:
            return
        tabs = self.query_one(TabbedContent)
        ids = [f"file{i}" for i in range(len(self.indexes))]
        i = ids.index(tabs.active) if tabs.active in ids else 0
        tabs.active = ids[(i + step) % len(ids)]
        self.active().calls.focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for action, title, help_text in ACTIONS:
            yield SystemCommand(title, help_text, getattr(self, f"action_{action}"))


def run_show(paths: list[str], follow: bool = False, fmt: str | None = None) -> int:
    """Open the viewer on trace files (as `p11spy show` and `make demo` do); the exit status."""
    from p11spy.errors import UserError

    try:
        app = ShowApp.for_paths(paths, follow, fmt)
    except UserError as exc:
        print(f"p11spy show: {exc}", file=sys.stderr)
        return exc.status
    result = app.run()
    return int(result or 0)
