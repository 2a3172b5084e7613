"""The `p11spy` command: one argparse frame over the command modules of this package.

It sits on top of every part and nothing imports it. Command modules import the heavy parts of
the decoder and the viewer only when their command runs, so `p11spy --version` and `p11spy run`
start fast (`p11spy --version` imports no decoder module; tests/test_startup.py checks which
modules each command's start-up loads). The version is a constant of the package, not read from
the installed metadata, which costs a third of a fast start."""

from __future__ import annotations

import argparse
import signal
import sys

from p11spy import __version__
from p11spy.cli import (
    bundle,
    capture,
    decode,
    diagnose,
    diff,
    explain,
    export,
    query,
    redact,
    replay,
    report,
    show,
)
from p11spy.errors import UserError

# Each command module offers register(subparsers); the order is the order of `p11spy --help`.
COMMANDS = (capture, bundle, decode, explain, redact, diagnose, show, report, diff, export, query,
            replay)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p11spy",
        description="PKCS#11 traffic spy and trace decoder.",
    )
    parser.add_argument("--version", action="version", version=f"p11spy {__version__}")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def _terminated(signum: int, _frame: object) -> None:
    """SIGTERM ends the command as an exception does, so half-written outputs are removed."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"p11spy {args.subcommand}: {exc}", file=sys.stderr)
        return exc.status
    except BrokenPipeError:
        return 0
    except OSError as exc:  # a file the user named, that the system refused: one line
        if exc.filename is None:
            raise
        print(f"p11spy {args.subcommand}: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
