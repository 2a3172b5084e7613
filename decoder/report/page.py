"""The report's HTML: the template (a package data file) filled with the trace's tables.

Why the order in the file: what a support engineer reads first, the header and the diagnosis,
is plain HTML at the top, so the browser paints it before it reaches the data; the tables come
next in inert script blocks (JSON, base64 columns), and the script that draws the timeline and
the lists last. Everything is inline and a Content-Security-Policy forbids every fetch, so the
page works offline and asks nothing of any network.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterator
from importlib import resources
from typing import Any, TextIO

from p11spy import __version__
from p11spy.decoder.diagnose import Finding, code_meaning
from p11spy.decoder.report.collect import Collector

MARKER = "<!--p11spy:{}-->"
CHUNK = 4096  # strings per piece written
PARTS = ("css", "header", "diagnosis", "codes", "data", "js")


def _asset(name: str) -> str:
    return resources.files("p11spy.decoder.report").joinpath(name).read_text("utf-8")


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _script_json(data: Any) -> str:
    """JSON safe inside <script>: no '<' can end the block or open a comment."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def header(name: str, fmt: str, redacted: bool, masked: int, c: Collector) -> str:
    if redacted:
        safety = (f'<p class="safety ok" id="redaction">Redacted: PINs and key material were '
                  f"masked before this page was made, as <code>p11spy redact</code> does "
                  f"({masked} place(s) masked). Safe to attach to a ticket.</p>")
    else:
        safety = ('<p class="safety danger" id="redaction">NOT REDACTED (--no-redact): this '
                  "page shows the trace as it was recorded and may hold PINs and key material. "
                  "Do not share it.</p>")
    facts = [f"format {fmt}", f"{len(c.calls):,} calls ({c.failed_calls:,} failed)",
             f"{len(c.kids):,} APDUs and PC/SC calls", f"{len(c.threads)} thread(s)"]
    if c.log_lines:
        facts.append(f"{c.log_lines:,} log lines (under their calls)")
    out = [f"<h1>p11spy report: {_e(name)}</h1>", safety,
           f'<p class="facts">{_e(" · ".join(facts))}</p>']
    left = []
    if c.calls_left_out:
        left.append(f"{c.calls_left_out:,} calls that did not fail (past the first "
                    f"{len(c.calls) - c.failed_calls:,}) and {c.kids_left_out:,} APDUs under them "
                    "are left out of this page")
    if c.details_left_out:
        left.append(f"{c.details_left_out:,} calls and APDUs that did not fail show no "
                    "decoded arguments (size limit)")
    if left:
        out.append(f'<p class="limits">{_e("; ".join(left))}: '
                   f"<code>p11spy decode</code> shows every one.</p>")
    for p in c.processes[:20]:
        secrets = "SHOWN" if p.get("secrets") else "masked at capture"
        out.append(f'<p class="proc">process {_e(p.get("pid"))}: '
                   f'{_e(p.get("exe") or "(program not named)")} · module '
                   f'{_e(p.get("module") or "every module it loads")} · secrets {secrets}</p>')
    if c.warning_count:
        items = "".join(f"<li>{_e(w)}</li>" for w in c.warnings)
        more = c.warning_count - len(c.warnings)
        out.append(f'<details class="warnings"><summary>{c.warning_count} reader warning(s)'
                   f'</summary><ul>{items}</ul>{f"<p>... and {more} more</p>" if more else ""}'
                   "</details>")
    return "\n".join(out)


def _anchor(key: str) -> str:
    """The id of a code's explanation ("SW 63C2" -> "code-SW-63C2": ids hold no spaces)."""
    return _e("code-" + "-".join(key.split()))


def _code_link(code: str, keys: set[str]) -> str:
    """A code a finding names: a link to its explanation below when the trace shows it."""
    if code in keys:
        return f'<a href="#{_anchor(code)}" class="code">{_e(code)}</a>'
    return f"<b>{_e(code)}</b>"


def diagnosis(findings: list[Finding], keys: set[str]) -> str:
    if not findings:
        return '<p class="none">No findings: nothing in this trace looks wrong to p11spy.</p>'
    out = []
    for f in findings:
        ev = "".join(f'<li><a href="#" class="seq" data-seq="{e.seq}">#{e.seq}</a> '
                     f"{_e(e.what)}</li>" for e in f.evidence)
        if f.more_evidence:
            ev += f"<li>... and {f.more_evidence} more</li>"
        codes = "".join(f"<li>{_code_link(c, keys)}: {_e(m)}</li>"
                        for c in f.codes if (m := code_meaning(c)))
        related = ", ".join(_e(c) for c in f.related_codes)
        out.append(
            f'<section class="finding sev-{_e(f.severity)}" data-rule="{_e(f.rule)}">'
            f'<h3><span class="sev">{_e(f.severity)}</span> {_e(f.title)} '
            f'<span class="rule">({_e(f.rule)})</span></h3>'
            f"<p><b>Why:</b> {_e(f.explanation)}</p>"
            + (f"<p><b>Evidence:</b></p><ul class=\"evidence\">{ev}</ul>" if ev else "")
            + f"<p><b>What to do:</b> {_e(f.action)}</p>"
            + (f"<p><b>Codes:</b></p><ul>{codes}</ul>" if codes else "")
            + (f'<p class="related"><b>Related</b> (what a card, OpenSC, IBM MQ or GSKit '
               f"would report instead): {related}</p>" if related else "")
            + "</section>")
    return "\n".join(out)


def codes_section(c: Collector) -> str:
    """explain's text for every code the trace shows, failures first."""
    refs = sorted({r.key: r for r in c.codes}.values(), key=lambda r: (not r.fail, r.key))
    return "\n".join(
        f'<details class="code{" fail" if r.fail else ""}" id="{_anchor(r.key)}"'
        f'{" open" if r.fail else ""}><summary>{_e(r.key)}: {_e(r.short)}</summary>'
        f"<pre>{_e(r.text)}</pre></details>" for r in refs)


def data_blocks(c: Collector, findings: list[Finding]) -> Iterator[str]:
    """The tables as inert script blocks: meta (JSON), columns (base64), strings (JSON)."""
    links: dict[str, list[dict[str, str]]] = {}
    seen: dict[int, set[str]] = {}
    for f in findings:
        for e in f.evidence:
            row = c.call_row(e.seq)
            row = c.kid_parent(e.seq) if row is None else row
            if row is not None and f.rule not in seen.setdefault(row, set()):
                seen[row].add(f.rule)
                links.setdefault(str(row), []).append(
                    {"severity": f.severity, "title": f.title, "rule": f.rule,
                     "action": f.action})
    meta = {
        "version": __version__,
        "names": c.names.items,
        "codes": [{"key": r.key, "fail": r.fail, "short": r.short, "text": r.text}
                  for r in c.codes],
        "threads": [{"pid": p, "tid": t} for p, t in c.threads],
        "findings": links,
        "calls": len(c.calls), "kids": len(c.kids),
    }
    yield f'<script type="application/json" id="p11-meta">{_script_json(meta)}</script>\n'
    for table, cols in (("calls", c.calls), ("kids", c.kids)):
        for name, col in cols.encoded().items():
            yield (f'<script type="text/plain" id="p11-{table}-{name}" '
                   f'data-type="{col["type"]}">{col["b64"]}</script>\n')
    yield '<script type="application/json" id="p11-strings">'
    items = c.strings.items
    yield "["
    for i in range(0, len(items), CHUNK):
        yield ("," if i else "") + _script_json(items[i:i + CHUNK])[1:-1]
    yield "]"
    yield "</script>\n"


def write(out: TextIO, name: str, fmt: str, redacted: bool, masked: int, c: Collector,
          findings: list[Finding]) -> None:
    """The whole page into out, piece by piece (the data is never one big string)."""
    template = _asset("template.html")
    fill: dict[str, Any] = {
        "css": _asset("report.css"),
        "header": header(name, fmt, redacted, masked, c),
        "diagnosis": diagnosis(findings, {r.key for r in c.codes}),
        "codes": codes_section(c),
        "data": data_blocks(c, findings),
        "js": _asset("report.js"),
    }
    template = template.replace("{{title}}", _e(f"p11spy report: {name}")).replace(
        "{{generated}}", _e(f"p11spy {__version__}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"))
    rest = template
    for part in PARTS:
        before, _, rest = rest.partition(MARKER.format(part))
        out.write(before)
        value = fill[part]
        if isinstance(value, str):
            out.write(value)
        else:
            for piece in value:
                out.write(piece)
    out.write(rest)
