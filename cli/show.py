"""`p11spy show`: registered with the CLI without importing Textual.

Why the late import: the core (spy/, decoder/) and every other subcommand must work, and start
fast, on a machine where Textual is missing or broken; only `show` needs it.
"""

from __future__ import annotations

import argparse
import sys

from p11spy.decoder.formats import NAMES
from p11spy.errors import UserError


def _show(args: argparse.Namespace) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError("needs a terminal (use `p11spy decode` to print a trace)")
    try:
        from p11spy.tui.app import run_show
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith(("textual", "rich")):
            raise
        raise UserError(f"the viewer needs Textual ({exc}); pip install 'textual>=0.80'") \
            from exc
    return run_show(args.files, follow=args.follow, fmt=args.format)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="browse a trace in the terminal: find the failing call",
                       description="Browse traces in a terminal viewer: failed calls (e/E), "
                                   "search (/), filters (f), statistics (s), APDUs decoded.")
    p.add_argument("files", nargs="+", metavar="FILE", help="trace files (one tab each)")
    p.add_argument("--follow", action="store_true",
                   help="keep reading the files as they grow (like tail -f)")
    p.add_argument("--format", choices=sorted(NAMES),
                   help="the traces' format (default: detect)")
    p.set_defaults(func=_show)
