"""`p11spy redact`: the command around decoder/redact.py (which says why it is careful with
files): redact one file, or --check several."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from p11spy.decoder.formats import NAMES
from p11spy.errors import UserError

if TYPE_CHECKING:
    from p11spy.decoder import masking


def _open(path: Path, fmt: str | None, passes: int = 1) -> tuple[str, BinaryIO]:
    """The trace and its format; a pipe or standard input can be read only once."""
    from p11spy.decoder.formats.registry import open_trace, seekable

    if passes > 1 and not seekable(path):
        raise UserError(f"{path}: --pin reads the trace twice; save the stream to a file first")
    return open_trace(path, fmt)


def _check(args: argparse.Namespace, opts: masking.Options) -> int:
    from p11spy.decoder import redact
    from p11spy.decoder.formats.registry import open_file
    from p11spy.decoder.masking import search

    status = 0
    for name in args.files:
        path = Path(name)
        fmt, f = _open(path, args.format, 2 if args.pin else 1)
        with f:
            found = redact.check(fmt, f, opts)
        for pin in args.pin or []:
            with open_file(path) as f:
                found += list(search.search(f, pin, binary=fmt == "p11spy"))
        for place in found:
            print(f"{path}: {place}")
        if found:
            status = 1
            print(f"p11spy redact: {path}: {len(found)} place(s) where a secret appears to "
                  f"remain", file=sys.stderr)
        else:
            print(f"{path}: no secret found")
    return status


def _redact(args: argparse.Namespace, opts: masking.Options) -> int:
    from p11spy.decoder import redact
    from p11spy.decoder.formats.registry import open_file, seekable
    from p11spy.decoder.masking import search

    if len(args.files) != 1:
        raise UserError("redact one file at a time (or use --check for several)")
    src = Path(args.files[0])
    if args.in_place:
        if args.output:
            raise UserError("--in-place and --output exclude each other")
        if not seekable(src):
            raise UserError(f"{src}: --in-place needs a file, not a stream")
        owner = redact.in_place_owner(src)
        fmt, fin = _open(src, args.format)
        with fin, redact.atomic_output(src, owner) as fout:
            found = redact.redact(fmt, fin, fout, opts)
        dest = src
    elif args.output and args.output != "-":
        dest = Path(args.output)
        if dest.is_dir():
            raise UserError(f"{dest}: is a directory")
        fmt, fin = _open(src, args.format)
        found = redact.redact_stream(fin, src, dest, fmt, opts)
    else:
        fmt, fin = _open(src, args.format)
        if fmt == "p11spy" and sys.stdout.isatty():
            fin.close()
            raise UserError("a p11spy trace is binary: name an output with -o")
        with fin:
            found = redact.redact(fmt, fin, sys.stdout.buffer, opts)
        sys.stdout.flush()
        dest = None
    where = f" -> {dest}" if dest is not None else ""
    print(f"p11spy redact: {src}{where}: {len(found)} place(s) masked", file=sys.stderr)
    status = 0
    if dest is not None:
        for pin in args.pin or []:
            with open_file(dest) as f:
                left = list(search.search(f, pin, binary=fmt == "p11spy"))
            for place in left:
                print(f"{dest}: {place}")
                status = 1
    return status


def _run(args: argparse.Namespace) -> int:
    from p11spy.decoder import masking

    opts = masking.Options(strict=args.strict, hide_lengths=args.hide_lengths)
    return _check(args, opts) if args.check else _redact(args, opts)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "redact", help="mask PINs and key material in a trace before sharing it",
        description="Mask PINs (C_Login, C_SetPIN, ..., VERIFY and other PIN APDUs) and key "
                    "material (CKA_VALUE of keys, private key components) in a p11spy, "
                    "pkcs11-spy or OPENSC_DEBUG trace. The output keeps the input's lines "
                    "and lengths, masked bytes read as '*' (2A), and decodes to the same "
                    "calls. --check lists what remains (exit 1) or exits 0.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where the redacted trace goes (default: standard output)")
    p.add_argument("--in-place", action="store_true",
                   help="replace the input (atomically) with its redacted form")
    p.add_argument("--check", action="store_true",
                   help="write nothing: list each place a secret appears to remain, exit 1 "
                        "if any, 0 if none")
    p.add_argument("--pin", action="append", metavar="VALUE",
                   help="also look for this PIN as ASCII, hex, EBCDIC, BCD and UTF-16 "
                        "(repeatable)")
    p.add_argument("--strict", action="store_true",
                   help="also mask what identifies a person or device: serial numbers, "
                        "labels, certificate subjects, reader and user names, paths")
    p.add_argument("--hide-lengths", action="store_true",
                   help="make every PIN 8 marker bytes long (p11spy and pkcs11-spy traces; "
                        "in OpenSC logs the padding and logged lengths are masked)")
    p.add_argument("--format", choices=sorted(NAMES),
                   help="the trace's format (default: detect)")
    p.set_defaults(func=_run)
