"""Rows (rows.py) into DuckDB: Parquet files for fleets, and the `events` table of
`p11spy query`.

DuckDB is imported here only, when one of these runs (it is a large import). Rows reach it
through a CSV file of declared column types in a private temporary folder: DuckDB's CSV reader
is far faster than inserting row by row from Python, and memory stays flat whatever the size of
the traces. A Parquet file is written into a private folder beside its target and renamed over
the target when complete (mode 0600), so an interrupted export leaves what was there before.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p11spy.decoder.export.rows import COLUMNS, SCHEMA
from p11spy.errors import UserError

if TYPE_CHECKING:
    import duckdb

NULL = "\\N"  # how the CSV says NULL (an empty field is an empty string)


def duckdb_module() -> Any:
    try:
        import duckdb
    except ImportError as exc:  # an install without the dependency: one line, not a traceback
        raise UserError("DuckDB is not installed: pip install duckdb") from exc
    return duckdb


@contextlib.contextmanager
def private_dir(near: Path) -> Iterator[Path]:
    """A folder only we can use (0700), removed afterwards; beside `near` so that a file made
    in it can be renamed onto near's folder."""
    try:
        d = Path(tempfile.mkdtemp(prefix=".p11spy-export-", dir=near))
    except OSError as exc:
        raise UserError(f"{near}: cannot write there ({exc.strerror})") from exc
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def write_csv(rows: Iterable[tuple[Any, ...]], path: Path) -> int:
    """The rows as CSV (NULL as NULL), returning how many."""
    n = 0
    with path.open("w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        w = csv.writer(f)
        for r in rows:
            w.writerow([NULL if v is None else v for v in r])
            n += 1
    return n


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def read_csv_sql(path: Path) -> str:
    """The DuckDB expression reading write_csv's file with the schema's types."""
    cols = ", ".join(f"{_quote(c)}: {_quote(t)}" for c, t, _d in SCHEMA)
    return (f"read_csv({_quote(str(path))}, header=false, columns={{{cols}}}, "
            f"nullstr={_quote(NULL)}, quote='\"', escape='\"', delim=',', "
            "strict_mode=false, parallel=false)")


def to_parquet(rows: Iterable[tuple[Any, ...]], target: Path) -> int:
    """Write the rows as one Parquet file at target; returns how many rows."""
    duckdb = duckdb_module()
    folder = target.parent if str(target.parent) else Path(".")
    with private_dir(folder) as d:
        data = d / "rows.csv"
        n = write_csv(rows, data)
        tmp = d / "out.parquet"
        con = duckdb.connect()
        try:
            con.execute(f"COPY (SELECT * FROM {read_csv_sql(data)}) TO {_quote(str(tmp))} "
                        "(FORMAT parquet, COMPRESSION zstd)")
        finally:
            con.close()
        os.chmod(tmp, 0o600)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise UserError(f"{target}: cannot write it ({exc.strerror})") from exc
    return n


def is_parquet(path: Path) -> bool:
    """Parquet files start and end with PAR1."""
    try:
        with path.open("rb") as f:
            return f.read(4) == b"PAR1"
    except OSError:
        return False


def events_table(rows: Iterable[tuple[Any, ...]] | None, parquet: list[Path],
                 scratch: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB whose `events` holds the rows and the Parquet files' rows."""
    duckdb = duckdb_module()
    con = duckdb.connect()
    cols = ", ".join(f'"{c}" {t}' for c, t, _d in SCHEMA)
    con.execute(f"CREATE TABLE events ({cols})")
    if rows is not None:
        data = scratch / "rows.csv"
        if write_csv(rows, data):
            con.execute(f"INSERT INTO events SELECT * FROM {read_csv_sql(data)}")
    if parquet:
        files = "[" + ", ".join(_quote(str(p)) for p in parquet) + "]"
        names = ", ".join(f'"{c}"' for c in COLUMNS)
        try:
            con.execute(f"INSERT INTO events BY NAME SELECT {names} FROM "
                        f"read_parquet({files}, union_by_name=true)")
        except duckdb.Error as exc:
            raise UserError(f"cannot read the Parquet files: {_first_line(exc)}") from exc
    return con


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
