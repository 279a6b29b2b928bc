"""The prediction log: append-only records written by serving replicas, ingested by an asset.

By default, JSON lines under the home: each replica process appends to its own file per day, so
writers never interleave and the ingesting asset can read files that are still growing (it keeps
only complete lines). With ``ML_PLATFORM_PREDICTION_LOG_URL``, rows of one PostgreSQL table
instead, so replicas on machines without the home's filesystem log there too.

A replica writes a prediction's record before it answers it, so a killed replica or head loses
no answered prediction (the kernel holds the written lines; a machine crash can lose the last few
seconds, as nothing is fsynced per request). Records that cannot be written (a full disk, a
database that does not answer) raise ``PredictionLogError`` and leave none of them behind.

A shadow challenger's score is scored off the response path and logged afterwards as its own
record (``shadow_of`` = the prediction id), merged into its prediction when the log is read.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import math
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from ml_platform.errors import first_line
from ml_platform.serving.postgres import PostgresWriter, create_table_once
from ml_platform.settings import Settings, without_password

SHADOW_OF = "shadow_of"
# The PostgreSQL log's table, in the database the URL names.
LOG_TABLE = "ml_platform_prediction_log"


class PredictionLogError(OSError):
    """The prediction log could not be written; nothing of the failed records is in it."""


class PredictionLog(Protocol):
    def append(self, use_case: str, records: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


class PredictionLogWriter:
    """One replica's JSON-lines files under a folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.writer_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._files: dict[tuple[str, str], int] = {}

    def append(self, use_case: str, records: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        day = dt.datetime.now(dt.UTC).date().isoformat()
        path = self.directory / use_case / day / f"{self.writer_id}.jsonl"
        try:
            fd = self._files.get((use_case, day))
            if fd is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                self._files[(use_case, day)] = fd
            start = os.lseek(fd, 0, os.SEEK_END)
        except OSError as exc:
            raise PredictionLogError(exc.errno, f"prediction log {path}: {exc.strerror}") from None
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError as exc:
            if written:
                os.ftruncate(fd, start)  # no partial line: the next record starts a line of its own
            raise PredictionLogError(exc.errno, f"prediction log {path}: {exc.strerror}") from None

    def close(self) -> None:
        """Close every file this writer has open (a later append opens its file again)."""
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()


class PostgresPredictionLog:
    """The log as rows of ``LOG_TABLE``: a batch of records is one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._db = PostgresWriter(url, create_log_table, lambda exc: _log_error(url, exc))

    def append(self, use_case: str, records: list[dict[str, Any]]) -> None:
        from psycopg.types.json import Jsonb

        rows = [(use_case, Jsonb(_json_safe(r))) for r in records]
        insert = f"INSERT INTO {LOG_TABLE} (use_case, record) VALUES (%s, %s)"
        self._db.write(lambda cursor: cursor.executemany(insert, rows))

    def close(self) -> None:
        self._db.close()


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as null: JSON in PostgreSQL has no token for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def create_log_table(connection) -> None:
    create_table_once(
        connection,
        LOG_TABLE,
        f"""CREATE TABLE IF NOT EXISTS {LOG_TABLE} (
            id BIGSERIAL PRIMARY KEY, use_case TEXT NOT NULL,
            logged_at TIMESTAMPTZ NOT NULL DEFAULT now(), record JSONB NOT NULL)""",
        f"CREATE INDEX IF NOT EXISTS {LOG_TABLE}_use_case ON {LOG_TABLE} (use_case, id)",
    )


def _log_error(url: str, exc: Exception) -> PredictionLogError:
    """The database's failure as the log's error: the URL without its password, the first line."""
    return PredictionLogError(errno.EIO, f"prediction log {without_password(url)}: {first_line(exc)}")


def prediction_log(settings: Settings) -> PredictionLog:
    """Where this process's replicas log, as the settings say."""
    if settings.prediction_log_url:
        return PostgresPredictionLog(settings.prediction_log_url)
    return PredictionLogWriter(settings.serving_log_dir)


def logged_predictions(settings: Settings, use_case: str) -> list[dict[str, Any]]:
    """Every complete record logged for ``use_case``, wherever the settings say the log is."""
    if settings.prediction_log_url:
        return read_postgres_prediction_log(settings.prediction_log_url, use_case)
    return read_prediction_log(settings.serving_log_dir, use_case)


def read_postgres_prediction_log(url: str, use_case: str) -> list[dict[str, Any]]:
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
            create_log_table(connection)
            rows = connection.execute(
                f"SELECT record FROM {LOG_TABLE} WHERE use_case = %s ORDER BY id", [use_case]
            ).fetchall()
    except psycopg.Error as exc:
        raise _log_error(url, exc) from None
    return _merged(record for (record,) in rows)


def read_prediction_log(directory: Path, use_case: str) -> list[dict[str, Any]]:
    """Every complete record logged for ``use_case`` in the files under ``directory``, in file order."""

    def lines() -> Iterable[dict[str, Any]]:
        for path in sorted((directory / use_case).glob("*/*.jsonl")):
            text = path.read_text(encoding="utf-8")
            complete = text[: text.rfind("\n") + 1]  # a line being written right now is skipped
            yield from (json.loads(line) for line in complete.splitlines() if line)

    return _merged(lines())


def _merged(logged: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The predictions, in logged order, each with its shadow score merged in."""
    records: list[dict[str, Any]] = []
    shadows: dict[str, dict[str, Any]] = {}
    for record in logged:
        if SHADOW_OF in record:
            shadows[record[SHADOW_OF]] = record["shadow"]
        else:
            records.append(record)
    for record in records:
        if record["prediction_id"] in shadows:
            record["shadow"] = shadows[record["prediction_id"]]
    return records
