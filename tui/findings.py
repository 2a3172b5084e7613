"""The findings panel: what `p11spy diagnose` says about the trace, inside the viewer.

Why a screen of its own: the diagnosis reads the whole file once more (decoder/diagnose.py,
in a worker thread so the viewer stays responsive on a large trace), then lists the findings,
most important first; the selected one shows its explanation, evidence and what to do, and
Enter goes to the call it points at. Record numbers in the viewer are the seqs the findings
cite, mapped to the viewer's records (TraceIndex.record_of_seq).

Opened with `d`; once it has run, the call list marks the rows the findings point at (● in
the finding's colour).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from p11spy.decoder.diagnose import RANK, Finding, diagnose
from p11spy.tui.trace_index import CALL, TraceIndex

COLOURS = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def rows_cited(findings: list[Finding], index: TraceIndex | None = None
               ) -> dict[int, list[Finding]]:
    """Row -> the findings that cite it (or an APDU or line under it), in the findings'
    order. Without an index, by seq."""
    out: dict[int, list[Finding]] = {}
    for f in findings:
        rows = f.seqs if index is None else (
            index.call_of(r) for r in map(index.record_of_seq, f.seqs) if r is not None)
        for row in dict.fromkeys(rows):
            out.setdefault(row, []).append(f)
    return out


def marks(cited: dict[int, list[Finding]]) -> dict[int, str]:
    """Row -> the worst severity of the findings that cite it."""
    return {row: min((f.severity for f in found), key=RANK.__getitem__)
            for row, found in cited.items()}


def finding_text(f: Finding) -> Text:
    """The detail of one finding, as the panel shows it."""
    t = Text()
    t.append(f"[{f.severity}] ", COLOURS[f.severity])
    t.append(f.title + "\n", "bold")
    t.append(f.explanation + "\n\n")
    if f.evidence:
        t.append("Evidence\n", "bold")
        for e in f.evidence:
            t.append(f"  #{e.seq:<7}", "bold")
            t.append(e.what + "\n")
        if f.more_evidence:
            t.append(f"  ... and {f.more_evidence} more\n")
        t.append("\n")
    t.append("What to do\n", "bold")
    t.append(f.action + "\n")
    return t


class FindingsScreen(Screen[int | None]):
    """Dismisses with the record the user chose to go to, or None."""

    DEFAULT_CSS = """
    FindingsScreen #findings { height: auto; max-height: 12; }
    FindingsScreen VerticalScroll { padding: 0 1; height: 1fr; }
    """
    BINDINGS = [Binding("escape,q,d", "close", "Close"),
                Binding("enter", "jump", "Go to evidence", show=True)]

    def __init__(self, index: TraceIndex, findings: list[Finding] | None = None) -> None:
        super().__init__()
        self.index = index
        self.findings: list[Finding] | None = findings

    def compose(self) -> ComposeResult:
        yield Static(Text(f"{self.index.path.name}: diagnosing...", "bold"), id="status")
        yield DataTable(id="findings", cursor_type="row", zebra_stripes=True)
        with VerticalScroll():
            yield Static("", id="finding")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#findings", DataTable).add_columns("severity", "finding", "at")
        if self.findings is None:
            self.run_worker(self._diagnose, thread=True, exclusive=True)
        else:
            self._show(self.findings)

    def _diagnose(self) -> None:
        from p11spy.decoder.formats.registry import open_events

        found = diagnose(open_events(self.index.path, self.index.format_name
                                     if self.index.format_name != "?" else None))
        self.app.call_from_thread(self._show, found)

    def _show(self, findings: list[Finding]) -> None:
        self.findings = findings
        self.index.findings_at = rows_cited(findings, self.index)
        self.index.marks = marks(self.index.findings_at)
        n = sum(f.severity != "info" for f in findings)
        self.query_one("#status", Static).update(Text(
            f"{self.index.path.name}: {len(findings)} finding(s), {n} above info"
            + ("" if findings else ": nothing went wrong that p11spy recognises"), "bold"))
        table = self.query_one("#findings", DataTable)
        for i, f in enumerate(findings):
            cited = f.subjects or f.seqs
            at = f"#{cited[0]}" if cited else ""
            table.add_row(Text(f.severity, COLOURS[f.severity]), f.title, at, key=str(i))
        if findings:
            self._detail(0)
            table.focus()

    def _detail(self, i: int) -> None:
        if self.findings and 0 <= i < len(self.findings):
            self.query_one("#finding", Static).update(finding_text(self.findings[i]))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._detail(int(event.row_key.value or 0))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self._jump(int(event.row_key.value or 0))

    def action_jump(self) -> None:
        table = self.query_one("#findings", DataTable)
        if table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            self._jump(int(key or 0))

    def _jump(self, i: int) -> None:
        """The call that failed, as the finding names it (its subjects), else the first call
        it cites (an APDU's or log line's call, when it cites one of those)."""
        if not self.findings:
            return
        f = self.findings[i]
        for seqs in (f.subjects, f.seqs):
            recs = [r for r in map(self.index.record_of_seq, seqs) if r is not None]
            calls = [r for r in recs if self.index.kind(r) == CALL]
            if calls or recs:
                self.dismiss(calls[0] if calls else self.index.call_of(recs[0]))
                return

    def action_close(self) -> None:
        self.dismiss(None)
