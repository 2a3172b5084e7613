"""`p11spy query "SQL" FILE...`: SQL over traces and exported Parquet files, with DuckDB.

The files are one table, `events`, with the columns of decoder/export/rows.py SCHEMA (traces are
read into it, Parquet files from `p11spy export --format parquet` added as they are).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from p11spy.decoder.formats import NAMES


def _cell(v: Any) -> str:
    return "NULL" if v is None else str(v)


def table(names: list[str], rows: list[tuple], out) -> None:
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
    out.write("  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for r in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def _query(args: argparse.Namespace) -> int:
    import tempfile

    from p11spy.cli.export import all_rows
    from p11spy.decoder.export.parquet import (
        duckdb_module,
        events_table,
        is_parquet,
        private_dir,
    )
    from p11spy.errors import UserError

    paths = [Path(f) for f in args.files]
    parquet = [p for p in paths if p.is_file() and is_parquet(p)]
    trace_files = [str(p) for p in paths if p not in parquet]
    with private_dir(Path(tempfile.gettempdir())) as scratch:
        rows = all_rows(trace_files, args.input_format, args.host) if trace_files else None
        con = events_table(rows, parquet, scratch)
        try:
            res = con.execute(args.sql)
        except duckdb_module().Error as exc:
            raise UserError(f"SQL: {str(exc).strip().splitlines()[0]}") from exc
        names = [d[0] for d in res.description or []]
        result = res.fetchall()
    out = sys.stdout
    if args.json:
        for r in result:
            out.write(json.dumps(dict(zip(names, r, strict=True)), default=str) + "\n")
    elif args.csv:
        import csv

        w = csv.writer(out)
        w.writerow(names)
        w.writerows(result)
    else:
        table(names, result, out)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "query", help="SQL over traces and Parquet exports (DuckDB); the table is `events`",
        description="Run SQL (DuckDB's dialect) over the events of traces and of Parquet files "
                    "written by `p11spy export --format parquet`, as one table named events.")
    p.add_argument("sql", metavar="SQL")
    p.add_argument("files", nargs="+", metavar="FILE", help="traces or Parquet files")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object per row")
    out.add_argument("--csv", action="store_true", help="CSV with a header line")
    p.add_argument("--host", help="the host column of the traces' rows")
    p.add_argument("--input-format", choices=sorted(NAMES),
                   help="the traces' format (default: detect)")
    p.set_defaults(func=_query)
