"""Replacing days of warehouse tables: only those days, all tables or none."""

import datetime as dt

import duckdb
import polars as pl
import pytest

from ml_platform.tables import replace_range

D1, D2, D3 = (dt.date(2014, 3, d) for d in (1, 2, 3))


def frame(days: list[dt.date], value: float) -> pl.DataFrame:
    return pl.DataFrame({"day": days, "value": [value] * len(days)})


def test_only_the_given_days_are_replaced_and_a_missing_table_is_created():
    conn = duckdb.connect()
    replace_range(conn, "day", D1, D3, {"t": frame([D1, D2, D3], 1.0)})
    replace_range(conn, "day", D2, D2, {"t": frame([D2, D2], 2.0)})
    rows = conn.sql("SELECT day, value FROM t ORDER BY day, value").fetchall()
    assert rows == [(D1, 1.0), (D2, 2.0), (D2, 2.0), (D3, 1.0)]
    with pytest.raises(duckdb.CatalogException):  # the frames it registered are gone
        conn.sql("SELECT * FROM replacing_days_0").fetchall()


def test_a_failure_in_one_table_leaves_every_table_as_it_was():
    conn = duckdb.connect()
    replace_range(conn, "day", D1, D2, {"a": frame([D1, D2], 1.0), "b": frame([D1, D2], 1.0)})
    broken = pl.DataFrame({"day": [D1], "value": ["not a number"]})
    with pytest.raises(duckdb.Error):
        replace_range(conn, "day", D1, D2, {"a": frame([D1], 9.0), "b": broken})
    for table in ("a", "b"):
        assert conn.sql(f"SELECT day, value FROM {table} ORDER BY day").fetchall() == [(D1, 1.0), (D2, 1.0)]


def test_new_rows_may_be_a_select():
    conn = duckdb.connect()
    conn.sql("CREATE TABLE source (day DATE, value DOUBLE)")
    conn.sql("INSERT INTO source VALUES ('2014-03-01', 0), ('2014-03-02', 1), ('2014-03-03', 2)")
    replace_range(conn, "day", D1, D3, {"t": "SELECT * FROM source WHERE value > 0"})
    assert conn.sql("SELECT day FROM t ORDER BY day").fetchall() == [(D2,), (D3,)]
