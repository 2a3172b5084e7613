"""`p11spy export --format perfetto|parquet TRACE...`: traces for Perfetto, DuckDB, Spark, ...

The work is in decoder/export/; DuckDB is imported only for parquet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from p11spy.decoder.formats import NAMES

EXPORTS = ("perfetto", "parquet")


def traces(files: list[str], fmt: str | None):
    """(name, format, events) of each trace, opened one after the other."""
    from p11spy.decoder.formats.registry import FORMATS, open_trace

    for name in files:
        fmt_name, f = open_trace(Path(name), fmt)
        with f:
            yield name, fmt_name, FORMATS[fmt_name].reader.read(f)


def all_rows(files: list[str], fmt: str | None, host: str | None):
    from p11spy.decoder.export.rows import Origin, rows

    for name, fmt_name, events in traces(files, fmt):
        yield from rows(events, Origin(name, fmt_name, host))


def _export(args: argparse.Namespace) -> int:
    from p11spy.errors import UserError

    if args.format == "parquet":
        from p11spy.decoder.export.parquet import to_parquet

        if not args.output or args.output == "-":
            raise UserError("--format parquet needs -o FILE")
        n = to_parquet(all_rows(args.files, args.input_format, args.host), Path(args.output))
        print(f"p11spy export: {n} rows to {args.output}", file=sys.stderr)
        return 0
    from p11spy.decoder.export import perfetto

    pairs = ((name, events) for name, _f, events in traces(args.files, args.input_format))
    if not args.output or args.output == "-":
        perfetto.write(pairs, sys.stdout)
        return 0
    import io

    from p11spy.decoder.redact import atomic_output

    with atomic_output(Path(args.output)) as raw, \
            io.TextIOWrapper(raw, encoding="utf-8") as out:
        n = perfetto.write(pairs, out)
    print(f"p11spy export: {n} slices to {args.output}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write traces for Perfetto (trace-event JSON) or as Parquet rows",
        description="perfetto: Chrome trace-event JSON for ui.perfetto.dev and chrome://tracing "
                    "(calls as slices per process and thread, APDUs and PC/SC calls nested). "
                    "parquet: one row per event in a documented schema, for DuckDB, Spark or "
                    "Trino. PINs are exported as their length and class only.")
    p.add_argument("files", nargs="+", metavar="TRACE")
    p.add_argument("--format", required=True, choices=EXPORTS, help="what to write")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="the file to write (perfetto: standard output if not given)")
    p.add_argument("--host", help="the host column of parquet rows (default: what the trace "
                                  "says, else empty)")
    p.add_argument("--input-format", choices=sorted(NAMES),
                   help="the traces' format (default: detect)")
    p.set_defaults(func=_export)
