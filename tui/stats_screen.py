"""The statistics screen: where the time went and what failed, for the whole trace.

Why it opens at once: the counts are gathered while indexing (decoder/summary.py's Summary), so this
screen only formats them. Picking one of the slowest calls jumps to it in the list.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from p11spy.decoder.apdu import sw_meaning
from p11spy.tui.explain import sw_class
from p11spy.tui.row_text import fmt_duration
from p11spy.tui.trace_index import TraceIndex

BAR = 30


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.3f}"


def function_table(index: TraceIndex) -> Table:
    t = Table(title="Per function", title_justify="left", expand=False, box=None,
              header_style="bold", pad_edge=False)
    for name, justify in (("function", "left"), ("count", "right"), ("errors", "right"),
                          ("total ms", "right"), ("mean ms", "right"), ("max ms", "right")):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    rows = sorted(list(index.stats.functions.items()), key=lambda kv: (-kv[1].total_us, kv[0]))
    for name, st in rows:
        t.add_row(name, str(st.count), Text(str(st.errors), "bold red" if st.errors else ""),
                  _ms(st.total_us), _ms(st.mean_us), _ms(st.max_us))
    return t


def failures_table(index: TraceIndex) -> Table | Text:
    items = sorted(index.stats.failures.items(), key=lambda kv: (-kv[1], kv[0]))
    if not items:
        return Text("No failed calls.")
    t = Table(title="Failures", title_justify="left", box=None, header_style="bold",
              pad_edge=False)
    t.add_column("function")
    t.add_column("return value")
    t.add_column("times", justify="right")
    for (fn, rv), n in items:
        t.add_row(fn, Text(rv, "red"), str(n))
    return t


def status_word_table(index: TraceIndex) -> Table | Text:
    items = sorted(list(index.stats.status_words.items()), key=lambda kv: (-kv[1], kv[0]))
    if not items:
        return Text("No APDUs in this trace.")
    most = items[0][1]
    t = Table(title=f"Status words ({index.stats.apdus} APDUs)", title_justify="left",
              box=None, header_style="bold", pad_edge=False)
    t.add_column("SW")
    t.add_column("count", justify="right")
    t.add_column("")
    t.add_column("meaning")
    for sw, n in items:
        colour = {"ok": "green", "more": "cyan", "warning": "yellow"}.get(sw_class(sw), "red")
        meaning = sw_meaning(int(sw, 16)) if sw != "none" else "no response"
        t.add_row(Text(sw, colour), str(n), "█" * max(1, n * BAR // most), meaning)
    return t


class StatsScreen(Screen[int | None]):
    """Dismisses with the record of a slowest call the user picked, or None."""

    DEFAULT_CSS = """
    StatsScreen VerticalScroll { padding: 0 1; }
    StatsScreen Static { margin-bottom: 1; }
    StatsScreen DataTable { height: auto; max-height: 24; margin-bottom: 1; }
    """
    BINDINGS = [Binding("escape,s,q", "close", "Close"),
                Binding("enter", "jump", "Go to call", show=True)]

    def __init__(self, index: TraceIndex) -> None:
        super().__init__()
        self.index = index

    def compose(self) -> ComposeResult:
        idx = self.index
        s = idx.stats
        state = "" if idx.complete else f" (indexing: {idx.progress:.0%} so far)"
        with VerticalScroll():
            yield Static(Text(f"{idx.path.name}: {s.calls} calls, {s.errors} failed, "
                              f"{s.apdus} APDUs{state}", "bold"))
            yield Static(function_table(idx))
            yield Static(failures_table(idx))
            yield Static(status_word_table(idx))
            yield Static(Text("Slowest calls (Enter goes to the call)", "bold"))
            yield DataTable(id="slowest", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#slowest", DataTable)
        table.add_columns("#", "function", "duration", "result")
        idx = self.index
        for dur, rec, _function in sorted(list(idx.stats.slowest_calls), reverse=True):
            rv = idx.rv_values[idx.rvs[rec]]
            name = "" if rv is None else (idx.event(rec).rv_name or f"0x{rv:x}")  # type: ignore
            table.add_row(f"#{idx.seq_of(rec)}", idx.function(rec), fmt_duration(dur), name,
                          key=str(rec))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.dismiss(int(event.row_key.value or 0))

    def action_jump(self) -> None:
        table = self.query_one("#slowest", DataTable)
        if table.row_count:
            self.dismiss(int(table.coordinate_to_cell_key(table.cursor_coordinate)
                             .row_key.value or 0))

    def action_close(self) -> None:
        self.dismiss(None)
