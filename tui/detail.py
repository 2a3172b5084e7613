"""The detail pane's content for one record: decoded call, its APDUs, explanations, raw bytes.

Why a module of its own that returns Rich renderables: everything the pane says is decided
here from the event model and the decoders, and tests read it as plain text. Optional decoders
(decoder/apdu.py, decoder/tlv.py, decoder/codes.py) are imported lazily; without them the
pane still shows the hex.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.style import Style
from rich.text import Text
from rich.tree import Tree

from p11spy.decoder.apdu import CommandApdu, ResponseApdu, decode_command, decode_response
from p11spy.decoder.events import Apdu, Call, Event, LogLine, PcscCall, TraceWarning
from p11spy.decoder.render import call_text, pcsc_text, thread_of
from p11spy.decoder.values import format_time
from p11spy.tui.explain import explain_rv, explain_sw, sw_class
from p11spy.tui.row_text import fmt_duration, header_text, masked_hex
from p11spy.tui.trace_index import TraceIndex

MAX_LOG_LINES = 300  # log lines of one call shown (OpenSC debug logs can have thousands)
MAX_APDUS = 200

DEFAULT_STYLES: dict[str, Style] = {
    "title": Style(bold=True),
    "section": Style(bold=True, underline=True),
    "ok": Style(color="green"),
    "error": Style(color="red", bold=True),
    "warning": Style(color="yellow"),
    "more": Style(color="cyan"),
    "dim": Style(dim=True),
    "apdu": Style(color="cyan"),
    "explain": Style(italic=True),
}


def _role(styles: dict[str, Style], name: str) -> Style:
    return styles.get(name) or DEFAULT_STYLES.get(name) or Style()


def build(index: TraceIndex, rec: int, kid: int | None = None, raw: bool = False,
          styles: dict[str, Style] | None = None) -> RenderableType:
    """The pane for a record (and, when a row under a call is selected, that child)."""
    st = styles or DEFAULT_STYLES
    if raw:
        return _raw(index, rec, kid, st)
    e = index.event(rec)
    if kid is not None:
        return Group(_kid_heading(index, rec, e, st), Text(""),
                     *_child(index, kid, 1, st))
    if isinstance(e, Call):
        return _call(index, rec, e, st)
    text, role = header_text(e)
    parts: list[RenderableType] = [Text(text, _role(st, role))]
    if isinstance(e, TraceWarning):
        parts.append(Text(e.message))
    info = getattr(e, "info", None)
    if info:
        parts.append(Text(""))
        for k, v in info.items():
            parts.append(Text(f"    {k} = {v}"))
    kids = index.kids(rec)
    if kids:
        parts += [Text(""), Text(f"APDUs and PC/SC calls ({len(kids)})", _role(st, "section"))]
        for i, k in enumerate(kids[:MAX_APDUS]):
            parts += _child(index, k, i + 1, st)
    return Group(*parts)


def _kid_heading(index: TraceIndex, rec: int, e: Event, st: dict[str, Style]) -> Text:
    name = e.function if isinstance(e, Call) else type(e).__name__
    return Text.assemble(("under ", _role(st, "dim")), (f"#{rec} {name}", _role(st, "title")),
                         ("  (Enter on the call closes its APDUs)", _role(st, "dim")))


def _call(index: TraceIndex, rec: int, c: Call, st: dict[str, Style]) -> RenderableType:
    failed = bool(c.rv) or c.never_returned
    rv = "(not recorded)" if c.rv is None else f"{c.rv_name} (0x{c.rv:x})"
    if c.never_returned:
        rv = f"never returned ({thread_of(c)}): crashed, killed or hung inside the module"
    parts: list[RenderableType] = [
        Text.assemble((c.function, _role(st, "title")), "  ",
                      (rv, _role(st, "error" if failed else ("ok" if c.rv == 0 else "dim")))),
    ]
    facts = [f"record {rec}"]
    if c.call_number is not None:
        facts.append(f"call #{c.call_number}")
    facts.append(f"pid {c.pid}")
    if c.module and len(index.modules) > 1:  # the trace holds calls to several modules
        facts.append(f"module {c.module}")
    facts.append(index.describe_thread(index.threads[rec]).split(":")[0] + f" (tid {c.tid})")
    facts.append(format_time(c.time))
    if c.duration_us is not None:
        facts.append(fmt_duration(c.duration_us))
    if c.source:
        facts.append(c.source)
    why = explain_rv(c.rv) if failed else []
    if why:  # the meaning at once, under the name; causes and checks after the arguments
        parts.append(Text(why[0], _role(st, "explain")))
    parts.append(Text(" · ".join(facts), _role(st, "dim")))
    parts += [Text(""), Text("Arguments", _role(st, "section"))]
    body = call_text(c)[1:]
    parts += [Text(ln) for ln in body[:-1]]
    parts.append(Text(body[-1], _role(st, "error" if failed else "ok")))
    if len(why) > 1:
        parts += [Text(""), Text(f"Why {c.rv_name}", _role(st, "section"))]
        parts += [Text("  " + ln, _role(st, "explain")) for ln in why[1:]]
    found = index.findings_at.get(rec, [])
    if found:  # what `d` (p11spy diagnose) said about this call
        parts += [Text(""), Text("Findings", _role(st, "section"))]
        for f in found:
            parts.append(Text.assemble((f"  [{f.severity}] ", _role(st, "error" if f.severity
                                                                  == "error" else "explain")),
                                       (f.title, _role(st, "title"))))
            parts.append(Text("    what to do: " + f.action, _role(st, "explain")))
    kids = index.kids(rec)
    apdus = [k for k in kids if not isinstance(index.event(k), LogLine)]
    logs = [k for k in kids if k not in set(apdus)]
    if apdus:
        parts += [Text(""), Text(f"APDUs ({len(apdus)})", _role(st, "section"))]
        for i, k in enumerate(apdus[:MAX_APDUS]):
            parts += _child(index, k, i + 1, st)
        if len(apdus) > MAX_APDUS:
            parts.append(Text(f"... {len(apdus) - MAX_APDUS} more", _role(st, "dim")))
    if logs:
        parts += [Text(""), Text(f"Log lines ({len(logs)})", _role(st, "section"))]
        for k in logs[:MAX_LOG_LINES]:
            parts.append(Text("  " + getattr(index.event(k), "text", ""), _role(st, "dim")))
        if len(logs) > MAX_LOG_LINES:
            parts.append(Text(f"... {len(logs) - MAX_LOG_LINES} more", _role(st, "dim")))
    parts += [Text(""), Text("o: the original record (raw)", _role(st, "dim"))]
    return Group(*parts)


def _child(index: TraceIndex, k: int, n: int, st: dict[str, Style]) -> list[RenderableType]:
    e = index.event(k)
    if isinstance(e, Apdu):
        return apdu_parts(e, n, st)
    if isinstance(e, PcscCall):
        return [Text(f"{n:>3} " + pcsc_text(e).strip(),
                     _role(st, "ok" if not e.rv else "error"))]
    return [Text(f"{n:>3} {getattr(e, 'text', e)}", _role(st, "dim"))]


def apdu_parts(a: Apdu, n: int, st: dict[str, Style] | None = None) -> list[RenderableType]:
    """One exchange: hex both ways, the decoded command, the status word and its meaning,
    and the response's TLV tree when the decoder finds one."""
    st = st or DEFAULT_STYLES
    out: list[RenderableType] = []
    head = Text.assemble((f"{n:>3} > ", _role(st, "apdu")), masked_hex(a.command),
                         ("  (PIN masked by p11spy)" if a.masked else "", _role(st, "dim")),
                         (f"  {fmt_duration(a.duration_us)}" if a.duration_us else "",
                          _role(st, "dim")))
    out.append(head)
    cmd = _decode_command(a.command)
    if cmd is not None:
        try:
            out += [Text("      " + ln) for ln in cmd.describe()]
        except Exception:  # noqa: BLE001 - a decoder bug must not hide the hex
            pass
    if a.response is None:
        out.append(Text(f"    < no response: {a.error or 'not recorded'}", _role(st, "error")))
        return out
    sw = a.sw
    cls = sw_class(sw)
    role = {"ok": "ok", "more": "more", "warning": "warning"}.get(cls, "error")
    out.append(Text.assemble(("    < ", _role(st, "apdu")), _hex(a.response)))
    if sw:
        meaning = explain_sw(int(sw, 16))
        out.append(Text.assemble(("      SW ", _role(st, "dim")), (sw, _role(st, role)),
                                 ("  " + (meaning[0] if meaning else ""), _role(st, role))))
        if cls not in ("ok", "more"):  # the long explanation only where something went wrong
            out += [Text("        " + ln, _role(st, "explain")) for ln in meaning[1:]]
    resp = _decode_response(a.response, cmd)
    if resp is not None:
        tlv = getattr(resp, "tlv", None)
        if tlv:
            out.append(_indent(tlv_tree(tlv), 6))
        else:
            out += [Text("      " + ln) for ln in _response_details(resp)]
    return out


def _response_details(resp: Any) -> list[str]:
    try:
        lines = resp.describe()
    except Exception:  # noqa: BLE001
        return []
    return lines[1:]  # the first line is the status word, already shown


def _indent(r: RenderableType, n: int) -> RenderableType:
    from rich.padding import Padding

    return Padding(r, (0, 0, 0, n))


def tlv_tree(nodes: Sequence[Any], label: str = "response data (BER-TLV)") -> Tree:
    """The decoder's TLV nodes as a Rich tree: tag, name, length and value per node."""
    tree = Tree(label, guide_style="dim")
    _add_nodes(tree, nodes)
    return tree


def _add_nodes(tree: Tree, nodes: Sequence[Any]) -> None:
    for node in nodes:
        kind = getattr(node, "kind", "tlv")
        if kind == "padding":
            tree.add(f"(padding {len(node.value)} bytes)")
            continue
        if kind == "raw":
            tree.add(f"(unparsed {len(node.value)} bytes: {node.error}) "
                     f"{node.value[:32].hex(' ').upper()}")
            continue
        label = f"{node.tag_hex} {node.name or '(unknown tag)'} [{node.length}]"
        if node.constructed:
            branch = tree.add(label + (f" ({node.error})" if node.error else ""))
            _add_nodes(branch, node.children)
        else:
            tree.add(f"{label}: {node.summary()}")


def _hex(b: bytes, limit: int = 64) -> str:
    h = b[:limit].hex(" ").upper()
    return h + (f" … ({len(b)} bytes)" if len(b) > limit else "")


def _decode_command(command: bytes) -> CommandApdu:
    return decode_command(command)  # never raises: what does not parse is kept as hex


def _decode_response(response: bytes, cmd: CommandApdu | None) -> ResponseApdu:
    return decode_response(response, cmd)


def _raw(index: TraceIndex, rec: int, kid: int | None, st: dict[str, Style]) -> RenderableType:
    parts: list[RenderableType] = [Text("Raw record (r: decoded view)", _role(st, "section"))]
    for r in ([kid] if kid is not None else [rec]):
        parts += [Text(ln) for ln in index.raw(r)]
    if kid is None and index.format_name == "p11spy":
        for k in index.kids(rec)[:MAX_APDUS]:
            parts += [Text(""), *[Text(ln, _role(st, "dim")) for ln in index.raw(k)]]
    return Group(*parts)


def plain(renderable: RenderableType, width: int = 100) -> str:
    """The pane as plain text (for tests and for copying)."""
    from rich.console import Console

    console = Console(width=width, record=True, color_system=None, file=_Null())
    console.print(renderable)
    return console.export_text()


class _Null:
    def write(self, _s: str) -> int:
        return 0

    def flush(self) -> None:
        pass
