"""`p11spy redact`: the command around decoder/redact.py.

Why so careful with files: the input is often the only copy of a trace that took a day to
catch. It is never written unless --in-place, the output never lands on it, and every output
is written to a temporary file (mode 0600: it may still hold what --strict would mask) in the
same directory and renamed over the target only once complete, so an error or an interrupt
leaves what was there before.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from . import redact as R
from . import secrets_search
from .cli import UserError
from .commands import detect, formats


def _format(path: Path, fmt: str | None) -> str:
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory")
    name = fmt or detect(path)
    if name not in R.MASKERS:
        raise UserError(f"{path}: p11spy cannot redact {name} traces "
                        f"(it can: {', '.join(R.MASKERS)})")
    return name


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror}") from exc


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


@contextlib.contextmanager
def atomic_output(target: Path) -> Iterator[BinaryIO]:
    """A file (mode 0600) that replaces target only when the block ends without error."""
    folder = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise UserError(f"{target}: cannot write there ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def redact_file(src: Path, dest: Path, fmt: str, opts: R.Options) -> list[R.Finding]:
    """Redacts src into dest (atomically); the places masked. For the TUI's export too."""
    if _same_file(src, dest):
        raise UserError(f"{dest}: is the input; use --in-place to replace it")
    with _open(src) as fin, atomic_output(dest) as fout:
        return R.redact(fmt, fin, fout, opts)


def _check(args: argparse.Namespace, opts: R.Options) -> int:
    status = 0
    for name in args.files:
        path = Path(name)
        fmt = _format(path, args.format)
        with _open(path) as f:
            found = R.check(fmt, f, opts)
        for pin in args.pin or []:
            with _open(path) as f:
                found += list(secrets_search.search(f, pin, binary=fmt == "p11spy"))
        for place in found:
            print(f"{path}: {place}")
        if found:
            status = 1
            print(f"p11spy redact: {path}: {len(found)} place(s) where a secret appears to "
                  f"remain", file=sys.stderr)
        else:
            print(f"{path}: no secret found")
    return status


def _redact(args: argparse.Namespace, opts: R.Options) -> int:
    if len(args.files) != 1:
        raise UserError("redact one file at a time (or use --check for several)")
    src = Path(args.files[0])
    fmt = _format(src, args.format)
    if args.in_place:
        if args.output:
            raise UserError("--in-place and --output exclude each other")
        with _open(src) as fin, atomic_output(src) as fout:
            found = R.redact(fmt, fin, fout, opts)
        dest = src
    elif args.output and args.output != "-":
        dest = Path(args.output)
        if dest.is_dir():
            raise UserError(f"{dest}: is a directory")
        found = redact_file(src, dest, fmt, opts)
    else:
        if fmt == "p11spy" and sys.stdout.isatty():
            raise UserError("a p11spy trace is binary: name an output with -o")
        with _open(src) as fin:
            found = R.redact(fmt, fin, sys.stdout.buffer, opts)
        sys.stdout.flush()
        dest = None
    where = f" -> {dest}" if dest is not None else ""
    print(f"p11spy redact: {src}{where}: {len(found)} place(s) masked", file=sys.stderr)
    status = 0
    if dest is not None:
        for pin in args.pin or []:
            with _open(dest) as f:
                left = list(secrets_search.search(f, pin, binary=fmt == "p11spy"))
            for place in left:
                print(f"{dest}: {place}")
                status = 1
    return status


def _run(args: argparse.Namespace) -> int:
    opts = R.Options(strict=args.strict, hide_lengths=args.hide_lengths)
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
    p.add_argument("--format", choices=sorted(set(formats()) & set(R.MASKERS)),
                   help="the trace's format (default: detect)")
    p.set_defaults(func=_run)
