"""Small modal screens: a one-line prompt (search, go to), the filter form and the key help.

Why modal screens: each asks one question and returns the answer to the trace view through
`dismiss`, so the main screen keeps no half-entered state.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static

from p11spy.tui.trace_index import TraceIndex
from p11spy.tui.view import Filter


class TickBox(Checkbox):
    """A checkbox with a tick when checked and an empty box when not: Textual's draws an X
    either way (dimmed when unchecked), which reads as checked."""

    @property
    def _button(self) -> Content:
        self.BUTTON_INNER = "✓" if self.value else " "
        return super()._button

KEYS_HELP = [
    ("e / E", "next / previous failed call"),
    ("/", "search: function (C_Login, login), code (CKR_PIN_INCORRECT, 0xa0), hex bytes "
          "(3F 00) or status word (6A82), constant (CKM_RSA_PKCS) or free text"),
    ("n / N", "next / previous match"),
    ("f / F", "filter (errors only, function, thread, session) / clear the filter"),
    ("g", "go to a call number (#1234, as decode and diagnose number them) or a time "
          "(12:34:56.789, 2024-03-25 12:34)"),
    ("s", "statistics: per function counts, errors and times; status words; slowest calls"),
    ("d", "findings: what went wrong (p11spy diagnose); Enter goes to the call, and the list "
          "marks the calls each finding points at with ●"),
    ("Enter / click twice", "open or close the APDUs under a call"),
    ("a", "open or close the APDUs under every call"),
    ("r / x", "redacted view (PINs, keys masked) / export it next to the trace"),
    ("o", "the original record (hex dump, or the log lines as written) / decoded view"),
    ("↑ ↓ PgUp PgDn Home", "move; the detail pane follows the cursor"),
    ("End / G", "last row; with --follow, follow new calls again"),
    ("Tab", "move the focus between the list and the detail pane"),
    ("[ / ]", "previous / next file (several files open)"),
    ("Ctrl+P", "command palette: every action by name"),
    ("? / q", "this help / quit"),
]


class PromptScreen(ModalScreen[str | None]):
    """One line of input; Enter answers, Escape cancels."""

    DEFAULT_CSS = """
    PromptScreen { align: center middle; }
    PromptScreen > Vertical {
        width: 70; max-width: 95%; height: auto; padding: 0 1;
        border: round $primary; background: $surface;
    }
    PromptScreen Label { width: 100%; }
    PromptScreen Input { background: $boost; margin: 1 0 0 0; }
    PromptScreen .hint { color: $text-muted; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, hint: str = "", value: str = "",
                 placeholder: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.hint = hint
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text)
            yield Input(value=self.value, placeholder=self.placeholder, id="prompt", compact=True)
            if self.hint:
                yield Label(self.hint, classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class FilterScreen(ModalScreen[Filter | None]):
    """Errors only, and lists of functions, threads and sessions (empty: all)."""

    DEFAULT_CSS = """
    FilterScreen { align: center middle; }
    FilterScreen > Vertical {
        width: 76; max-width: 98%; height: auto; max-height: 98%; padding: 0 1;
        border: round $primary; background: $surface;
    }
    FilterScreen Input { margin-bottom: 1; background: $boost; }
    FilterScreen Checkbox { margin: 1 0; }
    FilterScreen .hint { color: $text-muted; }
    FilterScreen .error { color: $error; }
    FilterScreen Horizontal { height: auto; }
    FilterScreen Button { margin-right: 1; min-width: 10; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, index: TraceIndex, current: Filter) -> None:
        super().__init__()
        self.index = index
        self.current = current

    def compose(self) -> ComposeResult:
        idx, cur = self.index, self.current
        with Vertical():
            yield Label("Filter the list (empty fields keep everything)")
            yield TickBox("failed calls only", cur.errors, id="errors", compact=True)
            yield Label("functions (C_Login, Sign, ...):")
            yield Input(", ".join(sorted(idx.func_names[f] for f in cur.functions)),
                        id="functions", compact=True, placeholder="all functions")
            yield Label("threads (T1, T2, or thread ids):")
            yield Input(", ".join(idx.thread_label(t) for t in sorted(cur.threads)),
                        id="threads", compact=True, placeholder="all threads")
            yield Label("sessions (handles):")
            yield Input(", ".join(idx.session_label(s) for s in sorted(cur.sessions)),
                        id="sessions", compact=True, placeholder="all sessions")
            yield Label("", id="problem", classes="error")
            with Horizontal():
                yield Button("Apply", variant="primary", id="apply", compact=True)
                yield Button("Clear", id="clear", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        elif event.button.id == "clear":
            self.dismiss(Filter())
        else:
            self._apply()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._apply()

    def _apply(self) -> None:
        try:
            flt = parse_filter(self.index, self.query_one("#errors", Checkbox).value,
                               self.query_one("#functions", Input).value,
                               self.query_one("#threads", Input).value,
                               self.query_one("#sessions", Input).value)
        except ValueError as exc:
            self.query_one("#problem", Label).update(str(exc))
            return
        self.dismiss(flt)

    def action_cancel(self) -> None:
        self.dismiss(None)


def _items(text: str) -> list[str]:
    return [t.strip() for t in text.replace(";", ",").split(",") if t.strip()]


def parse_filter(index: TraceIndex, errors: bool, functions: str, threads: str,
                 sessions: str) -> Filter:
    """A Filter from the form's text; ValueError names what matches nothing."""
    fids: set[int] = set()
    for item in _items(functions):
        low = item.lower()
        found = {i for i, n in enumerate(index.func_names)
                 if n.lower() in (low, "c_" + low) and not n.startswith("(")}
        if not found:
            found = {i for i, n in enumerate(index.func_names)
                     if n.lower().startswith((low, "c_" + low)) and not n.startswith("(")}
        if not found:
            raise ValueError(f"no function called {item!r}")
        fids |= found
    tids: set[int] = set()
    for item in _items(threads):
        t = item.upper().removeprefix("T")
        if item.upper().startswith("T") and t.isdigit() and int(t) < len(index.thread_keys):
            tids.add(int(t))
        else:
            tids |= _keys_numbered(index.thread_keys, item, "thread")
    sids: set[int] = set()
    for item in _items(sessions):
        sids |= _keys_numbered(index.session_keys, item, "session", "session handle")
    return Filter(errors, frozenset(fids), frozenset(tids), frozenset(sids))


def _keys_numbered(keys: list[tuple[int | None, int | None]], item: str, what: str,
                   kind: str | None = None) -> set[int]:
    """The indexes of the (pid, number) keys whose number the item names (decimal or 0x)."""
    try:
        number = int(item, 0)
    except ValueError:
        raise ValueError(f"not a {kind or what}: {item!r}") from None
    found = {i for i, (_pid, n) in enumerate(keys) if n == number}
    if not found:
        raise ValueError(f"no {what} {item}")
    return found


class HelpScreen(ModalScreen[None]):
    """The keys, and where the mouse works."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90; max-width: 98%; height: auto; max-height: 95%; padding: 0 1;
        border: round $primary; background: $surface;
    }
    """
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def compose(self) -> ComposeResult:
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for key, what in KEYS_HELP:
            table.add_row(key, what)
        with VerticalScroll():
            yield Static("p11spy show: keys (Escape closes)\n")
            yield Static(table)
            yield Static("\nThe mouse selects rows, scrolls, clicks footer keys and tabs. "
                         "Failed calls are in the error colour, APDU rows start with ↳, "
                         "⇅N counts a call's APDUs.")

    def action_close(self) -> None:
        self.dismiss(None)
