"""Traces in the tools people already use: rows of one documented schema (rows.py), written
as Parquet and queried with DuckDB (parquet.py), and Chrome trace-event JSON for Perfetto and
chrome://tracing (perfetto.py)."""
