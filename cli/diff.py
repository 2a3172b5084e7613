"""`p11spy diff GOOD BAD`: where a failing run parted from a working one (decoder/compare/).

Exit status as diff(1): 0 when the runs do the same, 1 when they differ, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys

from p11spy.decoder.formats import NAMES


def _diff(args: argparse.Namespace) -> int:
    from pathlib import Path

    from p11spy.decoder.compare.diff import compare, load, text

    d = compare(load(Path(args.good), args.good_format, args.max_calls),
                load(Path(args.bad), args.bad_format, args.max_calls))
    if args.json:
        sys.stdout.write(json.dumps(d.to_json(), ensure_ascii=False, default=str) + "\n")
    else:
        text(d, sys.stdout)
    return 1 if d.divergences else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diff", help="compare a working run with a failing one, call by call",
        description="Line up the calls of two traces (of any formats) and show where they part: "
                    "the first divergence first, then the rest. Handles, times, random data "
                    "and signatures are not compared; a PIN only by its length and class.")
    p.add_argument("good", metavar="GOOD", help="the trace of the run that works")
    p.add_argument("bad", metavar="BAD", help="the trace of the run that fails")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--good-format", choices=sorted(NAMES), help="GOOD's format (default: detect)")
    p.add_argument("--bad-format", choices=sorted(NAMES), help="BAD's format (default: detect)")
    p.add_argument("--max-calls", type=int, default=500_000, metavar="N",
                   help="refuse runs of more calls (both are held in memory; default 500000)")
    p.set_defaults(func=_diff)
