"""`p11spy replay`: play a recorded trace back to a client, or against another module."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _lib(args: argparse.Namespace) -> int:
    from p11spy.decoder.replay import folder, script
    from p11spy.spy.shims import replay_module

    rec = script.load(args.trace, args.pid)
    for gap in rec.gaps:
        print(f"p11spy replay: {args.trace}: {gap}: the replay lacks what was there",
              file=sys.stderr)
    data = script.encode(rec)
    where = args.output or folder.default_folder(args.trace, data)
    path = folder.make(where, replay_module(rec.interfaces), data)
    secrets = "; secrets unavailable (masked in the recording)" if rec.secrets_masked else ""
    print(f"p11spy replay: {len(rec.calls)} calls of process {rec.pid} to {rec.module}{secrets}; "
          f"the replay's traces go to {where}/", file=sys.stderr)
    print(path)
    return 0


def _report(args: argparse.Namespace) -> int:
    from p11spy.decoder.replay import report

    return report.print_report(args.report)


def _against(args: argparse.Namespace) -> int:
    import json
    import os
    import tempfile

    from p11spy.decoder.compare.diff import text
    from p11spy.decoder.replay import against, compared, script
    from p11spy.spy.shims import shim_path

    rec = script.load(args.trace, args.pid)
    pin, so_pin = (_from_stdin(v) for v in (args.pin, args.so_pin))
    with tempfile.TemporaryDirectory(prefix="p11spy-against-") as tmp:
        # through the shim, which records the calls made again: compared as diff compares
        made = args.output or Path(tmp) / "against.p11"
        os.environ.update(P11SPY_MODULE=args.against, P11SPY_OUTPUT=str(made))
        played = against.run(rec, args.against, pin=pin, so_pin=so_pin,
                               load=str(shim_path(args.against)))
        d = compared.compare(args.trace, played, made,
                             None if args.output else args.against)
    if args.json:
        sys.stdout.write(json.dumps(d.to_json(), ensure_ascii=False, default=str) + "\n")
    else:
        text(d, sys.stdout)
    return 1 if d.divergences else 0


def _from_stdin(value: str | None) -> str | None:
    """`-`: a line of standard input (so the PIN is not in the process list)."""
    if value != "-":
        return value
    return sys.stdin.readline().rstrip("\r\n")


def _dispatch(args: argparse.Namespace) -> int:
    if args.report:
        return _report(args)
    if args.trace is None:
        from p11spy.errors import UserError

        raise UserError("name a trace: p11spy replay --lib TRACE, or --against MODULE TRACE")
    return _against(args) if args.against else _lib(args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="play a recorded trace back: a module that answers a client as the token did, "
             "or the recorded calls re-issued against another module",
        description=(
            "--lib TRACE prints the path of a PKCS#11 module that answers a client from the "
            "trace (give it wherever the client takes a module path); each replayed run writes "
            "its own trace and a .match file (how closely each call matched) beside the module. "
            "--against MODULE TRACE re-issues the recorded calls against MODULE and reports, as "
            "`p11spy diff` does, where its answers differ (exit 1 when they do). "
            "--report FOLDER says how each replayed call matched."
        ),
    )
    p.add_argument("trace", type=Path, nargs="?", metavar="TRACE", help="a p11spy trace")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--lib", action="store_true",
                      help="print the path of the replay module (the default)")
    mode.add_argument("--against", metavar="MODULE",
                      help="re-issue the recorded calls against this PKCS#11 module")
    mode.add_argument("--report", type=Path, metavar="PATH",
                      help="how each call of the replayed runs in this folder (or of this "
                           "replay trace) matched the recording")
    p.add_argument("--pid", type=int, help="the process of the trace to replay (default: the "
                                           "first with calls)")
    p.add_argument("-o", "--output", type=Path, metavar="PATH",
                   help="--lib: the folder for the module, its script and the replay's traces "
                        "(default /tmp/p11spy-<uid>/replay-<trace>-<digest>); --against: keep "
                        "the trace the shim records of the re-issued calls here")
    p.add_argument("--pin", help="--against: the user PIN, for a C_Login recorded masked "
                                 "(`-`: read a line of standard input)")
    p.add_argument("--json", action="store_true",
                   help="--against: one JSON object, as `p11spy diff --json` writes")
    p.add_argument("--so-pin", help="--against: the SO PIN, for a C_Login as CKU_SO recorded "
                                    "masked (`-`: the next line of standard input)")
    p.set_defaults(func=_dispatch)
