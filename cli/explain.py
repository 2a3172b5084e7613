"""`p11spy explain CODE...`: what a code means (decoder/explain.py), as text or JSON Lines."""

from __future__ import annotations

import argparse
import json
import sys


def _explain(args: argparse.Namespace) -> int:
    from p11spy.decoder import codes
    from p11spy.decoder.explain import SYSTEM_WORDS, reading_json, text

    out = sys.stdout
    status = 0
    first = True
    for query in args.codes:
        matches = codes.lookup(query)
        if not matches:
            print(f"p11spy explain: unknown code '{query}': not {SYSTEM_WORDS}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            out.write(json.dumps({"input": query, "readings": [reading_json(m) for m in matches]},
                                 ensure_ascii=False) + "\n")
            continue
        if not first:
            out.write("\n")
        first = False
        text(query, matches, out)
    return status


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain", help="what an error code means and what to check",
        description="Explain PKCS#11 return values (CKR_PIN_INCORRECT, 0xA0, 160), card status "
                    "words (63C2, '63 C2'), OpenSC errors (-1214), PC/SC codes (0x80100069), "
                    "GSKit return codes (gsk:408), runmqakm messages (CTGSK3026W), MQ messages "
                    "(AMQ9669E) and MQ reason codes (mqrc:2393). A bare number is shown in "
                    "every system it fits, likeliest first.")
    p.add_argument("codes", nargs="+", metavar="CODE")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per code and line, with the list of its readings")
    p.set_defaults(func=_explain)
