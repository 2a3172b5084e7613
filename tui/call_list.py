"""The call list: a Line-API ScrollView over a View, one line per row.

Why not DataTable or ListView: they build a widget or a row object per item and take seconds
at 100k rows. Here the virtual height is the row count and `render_line` decodes only the rows
on screen (the index caches decoded events; this widget caches the rendered strips), so nine
million calls cost no more to show than ninety.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from p11spy.tui.row_text import Columns, call_parts, kid_parts
from p11spy.tui.trace_index import LRU
from p11spy.tui.view import View

ROLES = ("num", "time", "thread", "func", "args", "ok", "error", "warning", "more", "apdu",
         "dim", "dur", "cursor")


class CallList(ScrollView, can_focus=True):
    """Rows of a View; the cursor row is the one the detail pane shows."""

    COMPONENT_CLASSES = {f"call-list--{r}" for r in ROLES}

    DEFAULT_CSS = """
    CallList { height: 1fr; overflow-x: hidden; }
    CallList > .call-list--num { color: $text-muted; }
    CallList > .call-list--time { color: $text-muted; }
    CallList > .call-list--thread { color: $secondary; }
    CallList > .call-list--func { text-style: bold; }
    CallList > .call-list--args { }
    CallList > .call-list--ok { color: $success; }
    CallList > .call-list--error { color: $error; text-style: bold; }
    CallList > .call-list--warning { color: $warning; }
    CallList > .call-list--more { color: $secondary; }
    CallList > .call-list--apdu { color: $secondary; }
    CallList > .call-list--dim { color: $text-muted; }
    CallList > .call-list--dur { color: $text-muted; }
    CallList > .call-list--cursor {
        background: $block-cursor-blurred-background;
        text-style: bold;
    }
    CallList:focus > .call-list--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
    }
    """

    BINDINGS = [
        Binding("up,k", "move(-1)", "Up", show=False),
        Binding("down,j", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end,G", "last", "Last (follow)", show=False),
        Binding("enter,space", "toggle", "Open/close APDUs", show=False),
    ]

    cursor: reactive[int] = reactive(0, always_update=True, repaint=False)

    class Moved(Message):
        """The cursor moved to another row (or the row under it changed)."""

        def __init__(self, call_list: CallList, pos: int) -> None:
            super().__init__()
            self.call_list = call_list
            self.pos = pos

    class ScrolledAway(Message):
        """The user left the last row while following: new rows no longer pull the cursor."""

    def __init__(self, view: View, **kw) -> None:
        super().__init__(**kw)
        self.view = view
        self.following = False
        self._strips = LRU(2000)
        self._gen = 0
        self._cols: Columns | None = None
        self._cols_key: tuple[int, int, int] | None = None
        self._styles: dict[str, Style] = {}

    # -- data ----------------------------------------------------------------------------------

    def set_view(self, view: View, keep_record: int | None = None) -> None:
        self.view = view
        self._invalidate()
        self.sync()
        if keep_record is not None:
            self.cursor = min(view.nearest(keep_record), max(0, len(view) - 1))
        else:
            self.cursor = min(self.cursor, max(0, len(view) - 1))

    def sync(self) -> None:
        """Take in rows the index or the view gained; keep the cursor at the end when
        following."""
        n = len(self.view)
        width = self.scrollable_content_region.width or self.size.width
        if self.virtual_size.height != n or self.virtual_size.width != width:
            self.virtual_size = Size(width, n)
            self.refresh()
        if self.following and n and self.cursor != n - 1:
            self.cursor = n - 1

    def redraw(self) -> None:
        """Render every row afresh (something a row shows changed, e.g. its mark)."""
        self._invalidate()

    def _invalidate(self) -> None:
        self._gen += 1
        self._strips.clear()
        self._styles = {}
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._invalidate()

    def style_of(self, role: str) -> Style:
        st = self._styles.get(role)
        if st is None:
            st = self._styles[role] = self.get_component_rich_style(f"call-list--{role}",
                                                                      partial=True)
        return st

    # -- cursor --------------------------------------------------------------------------------

    def watch_cursor(self, old: int, new: int) -> None:
        n = len(self.view)
        if n and not 0 <= new < n:
            self.cursor = max(0, min(new, n - 1))
            return
        if self.following and new < n - 1:
            self.following = False
            self.post_message(self.ScrolledAway())
        self._refresh_row(old)
        self._refresh_row(new)
        self.scroll_to_cursor()
        self.post_message(self.Moved(self, new))

    def _refresh_row(self, pos: int) -> None:
        y = pos - int(self.scroll_offset.y)
        if 0 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def scroll_to_cursor(self) -> None:
        height = self.scrollable_content_region.height or self.size.height
        top = int(self.scroll_offset.y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif height and self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False, immediate=True)

    def action_move(self, delta: int) -> None:
        self.cursor = max(0, min(len(self.view) - 1, self.cursor + delta))

    def action_page(self, direction: int) -> None:
        height = self.scrollable_content_region.height or 10
        self.action_move(direction * max(1, height - 1))

    def action_first(self) -> None:
        self.cursor = 0

    def action_last(self) -> None:
        self.following = True
        self.cursor = max(0, len(self.view) - 1)

    def action_toggle(self) -> None:
        if not len(self.view):
            return
        rec, kid = self.view.record(self.cursor)
        if self.view.toggle(rec):
            pos = self.view.pos_of(rec)
            self._invalidate()
            self.sync()
            if pos is not None:
                self.cursor = pos

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        if self.following:  # the wheel moves the view, not the cursor: stop following too
            self.following = False
            self.post_message(self.ScrolledAway())

    def on_click(self, event: events.Click) -> None:
        y = event.y + int(self.scroll_offset.y)
        if 0 <= y < len(self.view):
            self.focus()
            if y == self.cursor and event.chain >= 2:
                self.action_toggle()
            else:
                self.cursor = y

    # -- rendering -----------------------------------------------------------------------------

    def _columns(self, width: int) -> Columns:
        index = self.view.index
        key = (width, len(str(len(index.kinds))), min(len(index.thread_keys), 50))
        if key != self._cols_key or self._cols is None:
            self._cols, self._cols_key = Columns(width, index), key
            self._strips.clear()
        return self._cols

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width or self.size.width
        pos = y + int(self.scroll_offset.y)
        base = self.rich_style
        if not 0 <= pos < len(self.view):
            return Strip.blank(width, base)
        try:
            entry = self.view.entry(pos)
        except IndexError:  # the view changed under us; the next refresh catches up
            return Strip.blank(width, base)
        is_cursor = pos == self.cursor
        cols = self._columns(width)
        key = (entry, width, is_cursor, self._gen)
        strip = self._strips.get(key)
        if strip is None:
            strip = self._render_row(pos, cols, width, is_cursor, base)
            self._strips.put(key, strip)
        return strip.apply_offsets(0, pos)

    def _render_row(self, pos: int, cols: Columns, width: int, is_cursor: bool,
                    base: Style) -> Strip:
        index = self.view.index
        rec, kid = self.view.record(pos)
        try:
            if kid is None:
                parts = call_parts(index, rec, index.event(rec), cols)
            else:
                parts = kid_parts(index, kid, index.event(kid), cols)
        except Exception as exc:  # noqa: BLE001 - one bad record must not break the list
            parts = [(f"{rec} (cannot show this record: {exc})", "warning")]
        text = Text(no_wrap=True, overflow="crop", end="")
        for chunk, role in parts:
            text.append(chunk, self.style_of(role))
        line_style = base + self.style_of("cursor") if is_cursor else base
        segments = [Segment(s.text, line_style + s.style if s.style else line_style)
                    for s in text.render(self.app.console)]
        return Strip(segments).crop_extend(0, width, line_style)

    def current(self) -> tuple[int, int | None] | None:
        """(record, child) under the cursor."""
        if not len(self.view):
            return None
        return self.view.record(min(self.cursor, len(self.view) - 1))
