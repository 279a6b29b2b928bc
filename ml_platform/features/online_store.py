"""The online store: each entity's latest feature vector (and the recent events behind it).

One interface, two backends chosen by configuration (``ML_PLATFORM_ONLINE_STORE``):

- embedded (default): one SQLite file in WAL mode under the home. Many processes read it while a
  Dagster run writes it; a snapshot is replaced in one transaction, so readers see the old
  snapshot or the new one, never a mix;
- ``redis://host:port/db``: one hash per use case for vectors and one for states; a snapshot is
  replaced in one MULTI/EXEC transaction.

Stream updates are read-modify-write of one entity's state, atomic per backend.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from ml_platform.features.online import EntityState
from ml_platform.settings import Settings

Updater = Callable[[EntityState | None], tuple[EntityState, bool]]


@dataclass(frozen=True)
class FeatureVector:
    entity: str
    event_timestamp: dt.datetime
    features: dict[str, float | None]

    def age(self, now: dt.datetime | None = None) -> dt.timedelta:
        return (now or dt.datetime.now(dt.UTC)) - self.event_timestamp


def _vector_json(state: EntityState) -> str:
    return json.dumps({"t": state.times[-1], "f": state.vector})


def _vector(entity: str, raw: str | bytes) -> FeatureVector:
    data = json.loads(raw)
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=data["t"])
    return FeatureVector(entity, moment, data["f"])


def unavailable(store: OnlineStore, error: Exception) -> str:
    """What to tell a caller when ``store`` failed: which store (no password), and why."""
    return f"online store {store.describe()} unavailable: {type(error).__name__}: {error}"


class OnlineStore(Protocol):
    def write_snapshot(self, use_case: str, states: dict[str, EntityState]) -> int: ...

    def get(self, use_case: str, entity: str) -> FeatureVector | None: ...

    def get_many(self, use_case: str, entities: list[str]) -> list[FeatureVector | None]: ...

    def update(self, use_case: str, entity: str, updater: Updater) -> EntityState: ...

    def state(self, use_case: str, entity: str) -> EntityState | None: ...

    def entities(self, use_case: str) -> list[str]: ...

    def describe(self) -> str: ...


BUSY_TIMEOUT_S = 30


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Put the store file in WAL mode (once per file; a no-op after).

    Switching needs the file to itself for a moment, and unlike other statements SQLite answers
    busy at once instead of waiting: connections opened together on a new store (serving replicas,
    the events endpoint) must retry, or one of them fails with "database is locked".
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SqliteOnlineStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            _enable_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                """CREATE TABLE IF NOT EXISTS online_features (
                    use_case TEXT, entity TEXT, vector TEXT, state TEXT,
                    PRIMARY KEY (use_case, entity))"""
            )
            self._local.conn = conn
        return conn

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def write_snapshot(self, use_case: str, states: dict[str, EntityState]) -> int:
        conn = self._conn()
        rows = [(use_case, e, _vector_json(s), json.dumps(s.to_json())) for e, s in states.items()]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM online_features WHERE use_case = ?", (use_case,))
            conn.executemany("INSERT INTO online_features VALUES (?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(rows)

    def get(self, use_case: str, entity: str) -> FeatureVector | None:
        row = (
            self._conn()
            .execute(
                "SELECT vector FROM online_features WHERE use_case = ? AND entity = ?", (use_case, entity)
            )
            .fetchone()
        )
        return _vector(entity, row[0]) if row else None

    def get_many(self, use_case: str, entities: list[str]) -> list[FeatureVector | None]:
        marks = ",".join("?" * len(entities))
        rows = dict(
            self._conn()
            .execute(
                f"SELECT entity, vector FROM online_features WHERE use_case = ? AND entity IN ({marks})",
                (use_case, *entities),
            )
            .fetchall()
        )
        return [_vector(e, rows[e]) if e in rows else None for e in entities]

    def state(self, use_case: str, entity: str) -> EntityState | None:
        row = (
            self._conn()
            .execute(
                "SELECT state FROM online_features WHERE use_case = ? AND entity = ?", (use_case, entity)
            )
            .fetchone()
        )
        return EntityState.from_json(json.loads(row[0])) if row else None

    def update(self, use_case: str, entity: str, updater: Updater) -> EntityState:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")  # one writer at a time: read-modify-write is atomic
        try:
            row = conn.execute(
                "SELECT state FROM online_features WHERE use_case = ? AND entity = ?", (use_case, entity)
            ).fetchone()
            state, changed = updater(EntityState.from_json(json.loads(row[0])) if row else None)
            if changed:
                conn.execute(
                    "INSERT OR REPLACE INTO online_features VALUES (?, ?, ?, ?)",
                    (use_case, entity, _vector_json(state), json.dumps(state.to_json())),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return state

    def entities(self, use_case: str) -> list[str]:
        rows = (
            self._conn()
            .execute("SELECT entity FROM online_features WHERE use_case = ? ORDER BY entity", (use_case,))
            .fetchall()
        )
        return [r[0] for r in rows]


class RedisOnlineStore:
    def __init__(self, url: str, namespace: str) -> None:
        import redis

        self.url = url
        self.namespace = namespace
        self.client = redis.Redis.from_url(url)

    def describe(self) -> str:
        """The store's address without its password (the description reaches error messages)."""
        parts = urlsplit(self.url)
        host = parts.netloc.rpartition("@")[2]
        user = parts.username + "@" if parts.username else ""
        return f"{parts.scheme}://{user}{host}{parts.path} (keys {self.namespace}:*)"

    def _keys(self, use_case: str) -> tuple[str, str]:
        return f"{self.namespace}:{use_case}:vectors", f"{self.namespace}:{use_case}:states"

    def write_snapshot(self, use_case: str, states: dict[str, EntityState]) -> int:
        vectors, kept = self._keys(use_case)
        pipe = self.client.pipeline(transaction=True)  # MULTI/EXEC: readers see old or new
        pipe.delete(vectors, kept)
        if states:
            pipe.hset(vectors, mapping={e: _vector_json(s) for e, s in states.items()})
            pipe.hset(kept, mapping={e: json.dumps(s.to_json()) for e, s in states.items()})
        pipe.execute()
        return len(states)

    def get(self, use_case: str, entity: str) -> FeatureVector | None:
        raw = self.client.hget(self._keys(use_case)[0], entity)
        return _vector(entity, raw) if raw is not None else None

    def get_many(self, use_case: str, entities: list[str]) -> list[FeatureVector | None]:
        raws = self.client.hmget(self._keys(use_case)[0], entities)
        return [_vector(e, r) if r is not None else None for e, r in zip(entities, raws, strict=True)]

    def state(self, use_case: str, entity: str) -> EntityState | None:
        raw = self.client.hget(self._keys(use_case)[1], entity)
        return EntityState.from_json(json.loads(raw)) if raw is not None else None

    def update(self, use_case: str, entity: str, updater: Updater) -> EntityState:
        import redis

        vectors, kept = self._keys(use_case)
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(kept)  # retried if another writer changes the states meanwhile
                    raw = pipe.hget(kept, entity)
                    state, changed = updater(EntityState.from_json(json.loads(raw)) if raw else None)
                    pipe.multi()
                    if changed:
                        pipe.hset(vectors, entity, _vector_json(state))
                        pipe.hset(kept, entity, json.dumps(state.to_json()))
                    pipe.execute()
                    return state
                except redis.WatchError:
                    continue

    def entities(self, use_case: str) -> list[str]:
        return sorted(k.decode() for k in self.client.hkeys(self._keys(use_case)[0]))


def make_online_store(settings: Settings) -> OnlineStore:
    """The configured backend: the embedded store under the home, or Redis for a redis:// URL."""
    url = settings.online_store_url
    if not url or url == "embedded":
        return SqliteOnlineStore(settings.online_store_dir / "online.sqlite")
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisOnlineStore(url, settings.online_store_namespace)
    raise ValueError(f"ML_PLATFORM_ONLINE_STORE={url!r}: expected 'embedded' or a redis:// URL")
