"""One open trace: the call list, a status line with the indexing progress, the detail pane.

Why the work is split this way: the index grows in a thread worker; a 0.1 s timer on the UI
side takes in what it found (rows, progress, new calls when following), so the first screen
shows as soon as the first records are indexed. Searches and large filters run in their own
cancellable thread workers; everything that touches widgets stays on the UI thread.
"""

from __future__ import annotations

import datetime as _dt
import re
import threading

from rich.style import Style
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.timer import Timer
from textual.widgets import ProgressBar, Static
from textual.worker import Worker, get_current_worker

from p11spy.decoder.events import Undated
from p11spy.decoder.values import format_time
from p11spy.tui import detail, search
from p11spy.tui.call_list import CallList
from p11spy.tui.trace_index import TraceIndex
from p11spy.tui.view import Filter, View

TICK = 0.1
INLINE_FILTER = 100_000  # rows a filter takes in on the UI thread; more goes to a worker
INSIDE_AFTER = 1.0  # seconds a followed call stays inside the module before the status names it
DETAIL_DELAY = 0.04  # let key repeat settle before decoding the detail pane

_TIME = re.compile(r"(?:(\d{4}-\d{2}-\d{2})[ T])?(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?")


class TraceView(Vertical):
    """Everything about one file; the app sends it the user's commands."""

    DEFAULT_CSS = """
    TraceView { height: 1fr; }
    TraceView > CallList { height: 3fr; min-height: 5; }
    TraceView > #statusbar { height: 1; background: $panel; }
    TraceView > #statusbar > #status { width: 1fr; height: 1; color: $foreground; }
    TraceView > #statusbar > ProgressBar { width: 28; height: 1; }
    TraceView > #detail-scroll { height: 2fr; min-height: 4; padding: 0 1; }
    TraceView > #detail-scroll:focus { background: $boost; }
    """

    def __init__(self, index: TraceIndex, follow: bool = False, **kw) -> None:
        super().__init__(**kw)
        self.index = index
        self.follow = follow
        self.view = View(index)
        self.raw = False
        self.last_query: search.Query | None = None
        self.message = ""
        self.message_at = -1  # the record the cursor was on when the message was said
        # what the status bar says of the whole view (the redacted view): it stays, whatever
        # the cursor does, where a message goes with the row it spoke of
        self.view_note = ""
        self.searching: str | None = None
        self._stop = threading.Event()
        self._detail_timer: Timer | None = None
        self._filter_job: Worker | None = None
        self._paused_at: int | None = None
        self._shown: tuple[int, int | None, bool] | None = None

    # -- layout and life cycle -----------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield CallList(self.view, id="calls")
        with Horizontal(id="statusbar"):
            yield Static("", id="status")
            yield ProgressBar(total=100, show_eta=False, show_percentage=True, id="progress")
        with VerticalScroll(id="detail-scroll"):
            yield Static("", id="detail")

    @property
    def calls(self) -> CallList:
        return self.query_one(CallList)

    def on_mount(self) -> None:
        self.calls.following = self.follow
        self._scan()
        self.set_interval(TICK, self.tick)
        self.call_after_refresh(self.tick)

    def on_unmount(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()

    @work(thread=True, group="index", exit_on_error=False)
    def _scan(self) -> None:
        worker = get_current_worker()
        try:
            self.index.scan(lambda: worker.is_cancelled or self._stop.is_set(), self.follow)
        except Exception as exc:  # noqa: BLE001 - show what went wrong, keep what was read
            self.index.failure = f"{type(exc).__name__}: {exc}"
            raise

    # -- the timer -----------------------------------------------------------------------------

    def tick(self) -> None:
        view = self.view
        if not view.caught_up:
            backlog = len(self.index.rows) - view.upto
            if backlog <= INLINE_FILTER:
                view.extend()
            elif self._filter_job is None or self._filter_job.is_finished:
                self._filter_job = self._catch_up(view)
        self.calls.sync()
        if len(view) and self._shown is None:
            self._show_detail()
        self._update_status()

    @work(thread=True, group="filter", exclusive=True, exit_on_error=False)
    def _catch_up(self, view: View) -> None:
        worker = get_current_worker()
        view.extend(cancelled=lambda: worker.is_cancelled or view is not self.view
                    or self._stop.is_set())

    def _update_status(self) -> None:
        idx = self.index
        rows = len(self.view)
        where = f"{min(self.calls.cursor + 1, rows):,}/{rows:,}" + (
            "" if self.view.caught_up else "…")
        parts = [idx.path.name, where, f"{idx.stats.calls:,} calls",
                 f"{idx.stats.errors:,} failed"]
        if self.view_note:
            parts.append(self.view_note)
        if self.view.filter.active:
            parts.append(f"filter: {self.view.filter.describe(idx)}")
        if self.follow:
            if self.calls.following:
                parts.append("following")
            else:
                waiting = len(self.view) - (self._paused_at or len(self.view))
                parts.append(f"paused, {waiting:,} new (End follows)")
            parts += [f"inside the module for {since:.0f} s: {fn} (thread {tid})"
                      for fn, tid, since in idx.inside(INSIDE_AFTER)[:2]]
        if self.searching:
            parts.append(f"searching {self.searching}…")
        elif self.message:
            parts.append(self.message)
        if idx.failure:
            parts.append(f"stopped: {idx.failure}")
        self.query_one("#status", Static).update(" · ".join(parts))
        bar = self.query_one(ProgressBar)
        indexing = not idx.complete and idx.done_bytes < idx.size
        bar.display = indexing
        if indexing:
            bar.update(progress=idx.progress * 100)

    # -- detail pane ---------------------------------------------------------------------------

    def on_call_list_moved(self, event: CallList.Moved) -> None:
        event.stop()
        if self.message and self.current_record() != self.message_at:
            self.message = ""  # it spoke of the row the cursor has left
        self._update_status()
        if self._detail_timer is not None:
            self._detail_timer.stop()
        self._detail_timer = self.set_timer(DETAIL_DELAY, self._show_detail)

    def on_call_list_scrolled_away(self, event: CallList.ScrolledAway) -> None:
        event.stop()
        self._paused_at = len(self.view)

    def _styles(self) -> dict[str, Style]:
        calls = self.calls
        st = {role: calls.style_of(role) for role in ("ok", "error", "warning", "more", "apdu",
                                                       "dim")}
        st["title"] = Style(bold=True)
        st["section"] = Style(bold=True, underline=True)
        st["explain"] = Style(italic=True)
        return st

    def _show_detail(self, force: bool = False) -> None:
        cur = self.calls.current()
        if cur is None:
            return
        key = (cur[0], cur[1], self.raw)
        if key == self._shown and not force:
            return
        self._shown = key
        try:
            body = detail.build(self.index, cur[0], cur[1], self.raw, self._styles())
        except Exception as exc:  # noqa: BLE001 - a bad record must not take the app down
            body = Text(f"{self.number(cur[0])}: cannot decode ({type(exc).__name__}: {exc})")
        self.query_one("#detail", Static).update(body)
        self.query_one("#detail-scroll", VerticalScroll).scroll_home(animate=False)

    def detail_text(self) -> str:
        """The detail pane as plain text (tests read it)."""
        cur = self.calls.current()
        if cur is None:
            return ""
        return detail.plain(detail.build(self.index, cur[0], cur[1], self.raw))

    # -- commands ------------------------------------------------------------------------------

    def say(self, message: str) -> None:
        """A message in the status bar, about the row under the cursor: it goes when the
        cursor moves to another row."""
        self.message = message
        self.message_at = self.current_record()
        self._update_status()

    def number(self, rec: int) -> str:
        """How messages name a record: decode's #seq, as the list and diagnose do."""
        return f"#{self.index.seq_of(rec)}"

    def current_record(self) -> int:
        cur = self.calls.current()
        return cur[0] if cur is not None else -1

    def go_to_record(self, rec: int) -> bool:
        pos = self.view.pos_of(rec)
        if pos is None:
            return False
        self.calls.cursor = pos
        return True

    def next_error(self, backwards: bool = False) -> None:
        rec = self.current_record()
        if rec < 0:
            self.say("no rows yet")
            return
        idx = self.index
        while True:
            rec = idx.next_error(rec, backwards)
            if rec is None:
                more = "" if idx.complete else f" (indexed {idx.progress:.0%} so far)"
                self.say(("no earlier failed call" if backwards else "no later failed call")
                         + more)
                return
            if self.go_to_record(rec):
                self.say(f"failed call {self.number(rec)} {idx.function(rec)}")
                return

    def start_search(self, text: str) -> None:
        self.last_query = search.parse(text, self.index)
        self._search(self.last_query, backwards=False)

    def search_again(self, backwards: bool = False) -> None:
        if self.last_query is None:
            self.say("no search yet: press /")
            return
        self._search(self.last_query, backwards)

    def _search(self, q: search.Query, backwards: bool) -> None:
        self.searching = q.describe()
        self.message = ""
        self.message_at = -1  # the record the cursor was on when the message was said
        self._update_status()
        self._search_worker(q, self.calls.cursor, backwards)

    @work(thread=True, group="search", exclusive=True, exit_on_error=False)
    def _search_worker(self, q: search.Query, start: int, backwards: bool) -> None:
        worker = get_current_worker()
        pos = search.find(self.view, start, q, backwards,
                          cancelled=lambda: worker.is_cancelled or self._stop.is_set())
        if not worker.is_cancelled and not self._stop.is_set():
            self.app.call_from_thread(self._search_done, q, start, pos, backwards)

    def _search_done(self, q: search.Query, start: int, pos: int | None,
                     backwards: bool) -> None:
        self.searching = None
        if pos is None:
            more = "" if self.index.complete else " in what is indexed so far"
            self.say(f"{q.describe()}: not found{more}")
            return
        wrapped = pos >= start if backwards else pos <= start
        self.calls.cursor = pos
        self.say(f"{q.describe()}: {self.number(self.view.record(pos)[0])}"
                 + (" (search wrapped around)" if wrapped else ""))

    def cancel_search(self) -> bool:
        if self.searching is None:
            return False
        self.workers.cancel_group(self, "search")
        self.searching = None
        self.say("search cancelled")
        return True

    def set_filter(self, flt: Filter, expand_all: bool | None = None) -> None:
        keep = self.current_record()
        expand = self.view.expand_all if expand_all is None else expand_all
        view = View(self.index, flt, expand, expanded=set(self.view.expanded))
        self.view = view
        if not view.caught_up and len(self.index.rows) <= INLINE_FILTER:
            view.extend()
        self.calls.set_view(view, keep if keep >= 0 else None)
        self._shown = None
        self._show_detail()
        self.say("" if flt.active else "filter cleared")

    def toggle_expand_all(self) -> None:
        self.set_filter(self.view.filter, not self.view.expand_all)
        self.say("APDUs shown under every call" if self.view.expand_all else "APDUs folded")

    def toggle_raw(self) -> None:
        self.raw = not self.raw
        self._show_detail(force=True)

    def go_to(self, text: str) -> None:
        t = text.strip().lstrip("#")
        if t.isdigit():  # decode's #seq
            rec = self.index.record_of_seq(int(t))
            if rec is None:
                self.say(f"no #{t} (last: #{len(self.index.kinds) - 1})")
                return
            pos = min(self.view.nearest(rec), len(self.view) - 1)
            if pos >= 0:
                self.calls.cursor = pos
                self.say(self.number(self.view.record(pos)[0]))
            return
        target = self._parse_time(t)
        if target is None:
            self.say(f"not a record number or a time: {text!r}")
            return
        pos = self._time_position(target)
        self.calls.cursor = pos
        first = self._first_time()
        when = format_time(Undated(target) if isinstance(first, Undated) else target)
        self.say(f"first row at or after {when}")

    def _first_time(self) -> float | None:
        for pos in range(min(len(self.view), 50)):
            t = self.index.time_of(self.view.record(pos)[0])
            if t is not None:
                return t
        return None

    def _parse_time(self, t: str) -> float | None:
        m = _TIME.fullmatch(t)
        if m is None:
            return None
        date, hh, mm, ss, frac = m.groups()
        if date:
            day = _dt.date.fromisoformat(date)
        else:
            first = self._first_time()
            if first is None:
                return None
            day = _dt.datetime.fromtimestamp(first).date()
        micro = int((frac or "0").ljust(6, "0")[:6])
        when = _dt.datetime.combine(day, _dt.time(int(hh), int(mm), int(ss or 0), micro))
        target = when.timestamp()
        first = self._first_time()
        if not date and first is not None and target < first - 1:
            target += 86400  # a time of day earlier than the trace's start: the next day
        return target

    def _time_position(self, target: float) -> int:
        lo, hi = 0, len(self.view)
        while lo < hi:
            mid = (lo + hi) // 2
            t = self.index.time_of(self.view.record(mid)[0])
            if t is None or t < target:
                lo = mid + 1
            else:
                hi = mid
        return min(lo, max(0, len(self.view) - 1))

    def resume_follow(self) -> None:
        self._paused_at = None
        self.calls.action_last()
