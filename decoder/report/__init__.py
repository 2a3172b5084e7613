"""`p11spy report`: one self-contained HTML page of a trace that anyone can open and attach.

Why: the person who must read a trace (a support desk, a customer's administrator) often has a
browser and no Linux terminal. The page needs no server and no network: the CSS, the script
and the trace's tables are inside it. It is made from the redacted trace by default (the
format's masker, exactly what `p11spy redact` writes), so attaching it leaks no PIN; making it
from the trace as recorded is an explicit opt-in that the page announces in red.

collect.py reads the events into compact tables, page.py writes the HTML from the template
(template.html, report.css, report.js: package data), output.py creates the file safely.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from p11spy.decoder.diagnose import diagnose
from p11spy.decoder.formats.registry import FORMATS, open_trace
from p11spy.decoder.masking import Options
from p11spy.decoder.report import page
from p11spy.decoder.report.collect import DETAIL_BUDGET, MAX_CALLS, Collector
from p11spy.decoder.report.output import new_output


@dataclass
class Made:
    """What a report holds, for the command's one line."""

    calls: int
    failed: int
    findings: int
    masked: int | None  # None: not redacted


def _redacted_copy(fmt: str, fin: io.BufferedIOBase, folder: Path, opts: Options) -> tuple[
        Path, int]:
    """The trace as `p11spy redact` writes it, in a private folder; the places masked."""
    from p11spy.decoder import redact

    count = 0

    def counted(_finding: object) -> None:
        nonlocal count
        count += 1

    dest = folder / "redacted"
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with fin, os.fdopen(fd, "wb") as fout:
        redact.redact(fmt, fin, fout, opts, report=counted)
    return dest, count


def make_report(src: Path, dest: Path | None, fmt: str | None = None, redacted: bool = True,
                opts: Options | None = None, force: bool = False, max_calls: int = MAX_CALLS,
                detail_budget: int = DETAIL_BUDGET, out: io.TextIOBase | None = None) -> Made:
    """Writes the report of one trace to dest (created 0600, never through a link, over an
    existing file only with force) or to out; what it holds."""
    name, fin = open_trace(src, fmt)
    c = Collector(max_calls, detail_budget)
    with tempfile.TemporaryDirectory(prefix="p11spy-report-") as tmp:  # mode 0700
        masked = None
        if redacted:
            path, masked = _redacted_copy(name, fin, Path(tmp), opts or Options())
            fin = path.open("rb")

        def events():  # noqa: ANN202 - every event, to the tables and to the diagnosis
            for e in FORMATS[name].reader.read(fin):
                c.add(e)
                yield e

        with fin:
            findings = diagnose(events())
        c.finish()
    if out is not None:
        page.write(out, src.name, name, redacted, masked or 0, c, findings)
    else:
        assert dest is not None
        with new_output(dest, src, force) as f:
            page.write(f, src.name, name, redacted, masked or 0, c, findings)
    return Made(len(c.calls), c.failed_calls, len(findings), masked)
