"""Events and labels posted to serving replicas, held in PostgreSQL until the landing sensor
lands them as files.

With ``ML_PLATFORM_PREDICTION_LOG_URL`` set, a replica writes nothing under the home: its
prediction log is rows of that database (``serving/log.py``), and so is what it would have landed,
as rows of ``INBOX_TABLE``. The landing sensor, which runs beside the home, writes them into the
landing zone before it looks at the files, so everything after it is unchanged: posted events and
labels are files in the landing zone like those landed by hand.

A post is acknowledged once its row is committed. Delivery writes each file durably (temporary
name, fsync, rename), then deletes its rows: a crash between the two delivers those rows again in
another file, and the key's uniqueness makes the staged rows exactly-once, as for any repeated
event. A delivered file is never written again.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from ml_platform.errors import first_line
from ml_platform.serving.postgres import PostgresWriter, create_table_once
from ml_platform.settings import Settings, without_password

INBOX_TABLE = "ml_platform_landing_inbox"
EVENTS, LABELS = "events", "labels"
# Rows delivered per sensor tick: a backlog is landed over several ticks, in post order.
DELIVERY_ROWS = 10_000


class InboxError(OSError):
    """The inbox could not be written or read; a failed post left nothing in it."""


@dataclass(frozen=True)
class Delivered:
    path: Path
    rows: int  # posts held in it


def create_inbox_table(connection) -> None:
    create_table_once(
        connection,
        INBOX_TABLE,
        f"""CREATE TABLE IF NOT EXISTS {INBOX_TABLE} (
            id BIGSERIAL PRIMARY KEY, use_case TEXT NOT NULL, kind TEXT NOT NULL,
            name TEXT NOT NULL, body BYTEA NOT NULL, posted_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
        f"CREATE INDEX IF NOT EXISTS {INBOX_TABLE}_use_case ON {INBOX_TABLE} (use_case, id)",
    )


def _error(url: str, exc: Exception) -> InboxError:
    return InboxError(errno.EIO, f"landing inbox {without_password(url)}: {first_line(exc)}")


class PostgresInbox:
    """A replica's writer of posts into ``INBOX_TABLE``."""

    def __init__(self, url: str) -> None:
        self._db = PostgresWriter(url, create_inbox_table, lambda exc: _error(url, exc))

    def put(self, use_case: str, kind: str, name: str, body: bytes) -> None:
        """Hold ``body``: events are lines of the file ``name`` (``.jsonl`` added on delivery),
        labels the whole file ``name``."""
        insert = f"INSERT INTO {INBOX_TABLE} (use_case, kind, name, body) VALUES (%s, %s, %s, %s)"
        self._db.write(lambda cursor: cursor.execute(insert, [use_case, kind, name, body]))

    def close(self) -> None:
        self._db.close()


def landing_inbox(settings: Settings) -> PostgresInbox | None:
    """Where replicas hold posts, as the settings say: None lands them straight in the home."""
    return PostgresInbox(settings.prediction_log_url) if settings.prediction_log_url else None


def deliver(settings: Settings, use_case: str, limit: int = DELIVERY_ROWS) -> list[Delivered]:
    """Land what replicas posted for ``use_case`` as files, oldest first: the events of one
    writer as one new JSON-lines file in the landing folder, each labels post as its file in the
    labels folder; their rows are deleted once the files are on disk. Nothing to do without
    ``ML_PLATFORM_PREDICTION_LOG_URL``. Two sensors delivering at once take different rows."""
    if not settings.prediction_log_url:
        return []
    import psycopg

    url = settings.prediction_log_url
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
            create_inbox_table(connection)
            with connection.transaction():
                rows = connection.execute(
                    f"SELECT id, kind, name, body FROM {INBOX_TABLE} WHERE use_case = %s "
                    "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                    [use_case, limit],
                ).fetchall()
                delivered = _write_files(settings, use_case, rows)
                connection.execute(f"DELETE FROM {INBOX_TABLE} WHERE id = ANY(%s)", [[r[0] for r in rows]])
    except psycopg.Error as exc:
        raise _error(url, exc) from None
    return delivered


def _write_files(settings: Settings, use_case: str, rows: list[tuple]) -> list[Delivered]:
    events: dict[str, list[tuple[int, bytes]]] = {}
    delivered = []
    for row_id, kind, name, body in rows:
        if kind == EVENTS:
            events.setdefault(name, []).append((row_id, bytes(body)))
        else:
            path = settings.labels_dir_for(use_case) / plain_file_name(name)
            write_file(path, bytes(body))
            delivered.append(Delivered(path, 1))
    for name, posts in events.items():
        # The ids in the name: each delivery is a file of its own, never appended to.
        stem = plain_file_name(name)
        path = settings.landing_dir_for(use_case) / f"{stem}_rows_{posts[0][0]}_{posts[-1][0]}.jsonl"
        write_file(path, b"".join(body for _, body in posts))
        delivered.append(Delivered(path, len(posts)))
    return delivered


def plain_file_name(name: str) -> str:
    """``name`` as stored, made a visible file name of one folder: the table is writable by
    whoever holds the database's password, so a stored name never places a file elsewhere."""
    plain = name.replace("/", "_").replace("\\", "_").lstrip(".")
    return plain or "unnamed"


def write_file(path: Path, data: bytes) -> None:
    """``data`` as ``path``, whole or not at all: written under a hidden temporary name (which no
    sensor lists), fsynced, renamed, and the rename fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
