"""One PostgreSQL connection a serving replica's threads share, for what replicas write there."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class PostgresWriter:
    """Each write is one transaction, so its rows are in the database whole or not at all. A
    dropped connection is opened again once per write; ``prepare`` runs on each new connection
    (creating the tables), ``error`` turns the last failure into the caller's own error."""

    def __init__(
        self, url: str, prepare: Callable[[Any], None], error: Callable[[Exception], Exception]
    ) -> None:
        self.url = url
        self._prepare = prepare
        self._error = error
        self._connection = None
        self._lock = threading.Lock()  # the request path and the shadow scorer share the connection

    def write(self, work: Callable[[Any], None]) -> None:
        """``work(cursor)`` in a transaction."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    connection = self._connect()
                    with connection.transaction(), connection.cursor() as cursor:
                        work(cursor)
                    return
                except Exception as exc:  # psycopg's errors, and a closed connection's
                    self._drop()
                    if attempt == 2:
                        raise self._error(exc) from None

    def _connect(self):
        import psycopg

        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            self._prepare(self._connection)
        return self._connection

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = None

    def close(self) -> None:
        with self._lock:
            self._drop()


def create_table_once(connection, table: str, *statements: str) -> None:
    # Replicas start together: the lock keeps two CREATEs from racing on PostgreSQL's catalog.
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [table])
        for statement in statements:
            connection.execute(statement)
