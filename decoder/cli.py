"""The `p11spy` command: one argparse frame, subcommands registered by the modules that own them."""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

# Each module exposes register(subparsers); a subcommand exists only once its module does.
COMMAND_MODULES = (
    "p11spy.spy.commands",
    "p11spy.decoder.commands",
    "p11spy.decoder.explain",
    "p11spy.decoder.redact_command",
    "p11spy.decoder.diagnose_command",
    "p11spy.tui.commands",
)


class UserError(Exception):
    """A problem the user can fix: printed as one line, exit status 2 unless given."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def _version() -> str:
    try:
        return version("p11spy")
    except PackageNotFoundError:  # running from a checkout without installing
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p11spy",
        description="PKCS#11 traffic spy and trace decoder.",
    )
    parser.add_argument("--version", action="version", version=f"p11spy {_version()}")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
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
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
