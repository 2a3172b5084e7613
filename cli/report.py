"""`p11spy report TRACE -o report.html`: the trace as one self-contained HTML page
(decoder/report/), redacted unless --no-redact."""

from __future__ import annotations

import argparse
import sys

from p11spy.decoder.formats import NAMES


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from p11spy.decoder.masking import Options
    from p11spy.decoder.report import make_report
    from p11spy.errors import UserError

    if args.max_calls is not None and args.max_calls < 1:
        raise UserError("--max-calls must be at least 1")
    src = Path(args.file)
    limit = {} if args.max_calls is None else {"max_calls": args.max_calls}
    made = make_report(src, Path(args.output), args.format, redacted=not args.no_redact,
                       opts=Options(strict=args.strict), force=args.force, **limit)
    how = "NOT redacted" if made.masked is None else f"redacted, {made.masked} place(s) masked"
    print(f"p11spy report: {src} -> {args.output}: {made.calls} calls ({made.failed} failed), "
          f"{made.findings} finding(s), {how}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write a trace as one self-contained HTML page to share",
        description="Write one HTML file that opens in any browser with no server and no "
                    "network: the diagnosis, a timeline of the calls per thread with the APDUs "
                    "under them, the decoded calls (search, failures only), the APDUs with "
                    "their status words, and what every code means. Made from the redacted "
                    "trace (as `p11spy redact` writes it) unless --no-redact.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--output", metavar="FILE", required=True,
                   help="the HTML file to create (mode 0600)")
    p.add_argument("--force", action="store_true", help="replace the output if it exists")
    p.add_argument("--no-redact", action="store_true",
                   help="show the trace as recorded, PINs and key values included where the "
                        "trace has them (the page says so)")
    p.add_argument("--strict", action="store_true",
                   help="also mask serial numbers, labels, names and paths (as redact --strict)")
    p.add_argument("--max-calls", type=int, metavar="N",
                   help="past N calls keep only the failed ones (default 1,000,000)")
    p.add_argument("--format", choices=sorted(NAMES),
                   help="the trace's format (default: detect)")
    p.set_defaults(func=_report)
