"""Writing the warehouse: the rows of some days (or hours) of some tables replaced in one transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import duckdb
import polars as pl


def replace_range(
    conn: duckdb.DuckDBPyConnection,
    at: str,
    first: dt.date,
    last: dt.date,
    rows: Mapping[str, pl.DataFrame | str],
) -> None:
    """Replace the rows whose ``at`` lies in ``first..last`` of each table of ``rows`` with its new
    rows, all tables in one transaction: readers see the old rows or the new ones, never a mix, and
    a failure leaves the old. ``at`` is the SQL expression of a row's day or hour (a date or a
    timestamp, the same in every table); new rows are a polars frame or a SELECT. A missing table
    is created with the new rows' columns."""
    registered: list[str] = []
    selects: dict[str, str] = {}
    for index, (table, new) in enumerate(rows.items()):
        if isinstance(new, pl.DataFrame):
            name = f"replacing_days_{index}"
            conn.register(name, new.to_arrow())
            registered.append(name)
            selects[table] = f"SELECT * FROM {name}"
        else:
            selects[table] = new
    try:
        for table, select in selects.items():
            conn.sql(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM ({select}) LIMIT 0")
        conn.begin()
        try:
            for table, select in selects.items():
                conn.sql(f"DELETE FROM {table} WHERE {at} BETWEEN ? AND ?", params=[first, last])
                conn.sql(f"INSERT INTO {table} {select}")
            conn.commit()
        except Exception:
            conn.rollback()
            raise
    finally:
        for name in registered:
            conn.unregister(name)


def table_exists(conn: duckdb.DuckDBPyConnection, qualified: str) -> bool:
    """Whether ``schema.table`` exists (a table or a view)."""
    schema, name = qualified.split(".")
    query = "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?"
    return conn.sql(query, params=[schema, name]).fetchall()[0][0] > 0
