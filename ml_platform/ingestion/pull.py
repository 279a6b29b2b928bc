"""Pulling rows for a time window from remote sources: a PostgreSQL table or query, a JSON API."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from typing import Any

import httpx
import pyarrow as pa

from ml_platform.errors import first_line
from ml_platform.spec import HttpJsonApi, PostgresTable, Source, UseCaseSpec


class SourceError(RuntimeError):
    """A remote source that could not be read; the message names the source."""


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def _as_table(records: list[dict[str, Any]], columns: list[str]) -> pa.Table:
    """Records as text columns (typing is a validation rule) plus their 1-based order."""
    data = {c: pa.array([_text(r.get(c)) for r in records], pa.string()) for c in columns}
    data["source_row"] = pa.array(range(1, len(records) + 1), pa.int64())
    return pa.table(data)


def content_sha256(table: pa.Table) -> str:
    """A hash of what was pulled, the counterpart of a landed file's sha256."""
    digest = hashlib.sha256()
    for batch in table.to_batches():
        for column in batch.columns:
            digest.update(str(column.to_pylist()).encode())
    return digest.hexdigest()


def pull_postgres(source: PostgresTable, start: dt.datetime, end: dt.datetime) -> tuple[str, pa.Table]:
    import psycopg
    from psycopg import sql

    dsn = os.environ.get(source.dsn_env)
    if not dsn:
        raise SourceError(f"PostgreSQL source: environment variable {source.dsn_env} is not set")
    if (source.table is None) == (source.query is None):
        raise SourceError("PostgreSQL source: declare exactly one of `table` or `query`")
    relation = (
        sql.SQL("({}) AS q").format(sql.SQL(source.query))
        if source.query
        else sql.Identifier(*source.table.split("."))
    )
    ts = sql.Identifier(source.timestamp_column)
    statement = sql.SQL("SELECT * FROM {} WHERE {} >= %s AND {} < %s ORDER BY {}").format(
        relation, ts, ts, ts
    )
    name = f"postgresql:{source.table or 'query'}"
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn, conn.cursor() as cursor:
            cursor.execute(statement, (start, end))
            columns = [d.name for d in cursor.description]
            records = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    except psycopg.Error as exc:
        raise SourceError(f"{name}: {first_line(exc)}") from None
    return name, _as_table(records, columns)


def pull_http(source: HttpJsonApi, start: dt.datetime, end: dt.datetime) -> tuple[str, pa.Table]:
    records: list[dict[str, Any]] = []
    columns: dict[str, None] = {}
    page = source.first_page
    with httpx.Client(timeout=30) as client:
        while True:
            params = {
                source.start_param: start.isoformat(),
                source.end_param: end.isoformat(),
                source.page_param: page,
                source.page_size_param: source.page_size,
            }
            try:
                response = client.get(source.url, params=params)
                response.raise_for_status()
                items = response.json()[source.items_field]
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                raise SourceError(f"{source.url} page {page}: {type(exc).__name__}: {exc}") from None
            if not isinstance(items, list):
                raise SourceError(f"{source.url} page {page}: '{source.items_field}' is not a list")
            for item in items:
                record = item if isinstance(item, dict) else {}
                columns.update(dict.fromkeys(record))
                records.append(record)
            if len(items) < source.page_size:
                break
            page += 1
    return source.url, _as_table(records, list(columns))


def pull(source: Source, spec: UseCaseSpec, start: dt.datetime, end: dt.datetime) -> tuple[str, pa.Table]:
    if isinstance(source, PostgresTable):
        return pull_postgres(source, start, end)
    if isinstance(source, HttpJsonApi):
        return pull_http(source, start, end)
    raise SourceError(f"{spec.name}: no puller for source {source!r}")
