"""The online store's two backends behave alike: atomic snapshots, atomic stream updates."""

import datetime as dt
import sqlite3
import threading
import uuid

import pytest
import redis

from ml_platform.features.online import EntityState, OnlineFeatures
from ml_platform.features.online_store import RedisOnlineStore, SqliteOnlineStore, make_online_store
from ml_platform.settings import load_settings
from ml_platform.usecases import get_use_case

SPEC = get_use_case("sensor_anomaly")
REDIS_URL = "redis://127.0.0.1:6379/0"
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield SqliteOnlineStore(tmp_path / "online.sqlite")
        return
    namespace = f"mlp-test-{uuid.uuid4().hex[:8]}"  # earlier runs may have left keys behind
    yield RedisOnlineStore(REDIS_URL, namespace)
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{namespace}:*"):
        client.delete(key)


def snapshot(version: int, entities: int = 50) -> dict[str, EntityState]:
    """Every entity's vector carries the snapshot's version, so a mixed read is visible."""
    return {
        f"s-{i}": EntityState(times=[version], values={}, vector={"version": float(version)})
        for i in range(entities)
    }


def test_readers_never_see_a_partial_snapshot(store):
    store.write_snapshot("uc", snapshot(0))
    entities = [f"s-{i}" for i in range(50)]
    mixed, reads, stop = [], [0], threading.Event()

    def read():
        while not stop.is_set():
            versions = {v.features["version"] for v in store.get_many("uc", entities)}
            reads[0] += 1
            if len(versions) != 1:
                mixed.append(versions)

    reader = threading.Thread(target=read)
    reader.start()
    for version in range(1, 60):
        store.write_snapshot("uc", snapshot(version))
    stop.set()
    reader.join()
    assert reads[0] > 10 and mixed == []
    assert store.get("uc", "s-7").features == {"version": 59.0}
    assert store.get("uc", "nobody") is None


def test_concurrent_stream_updates_lose_no_event(store):
    online = OnlineFeatures(SPEC)
    threads = []
    for t in range(4):

        def push(offset=t):
            for i in range(10):
                moment = START + dt.timedelta(minutes=4 * i + offset)
                reading = {"value": float(i), "temperature": 40.0, "vibration": 1.0}
                store.update("uc", "s-1", lambda s, m=moment, r=reading: online.apply(s, m, r))

        threads.append(threading.Thread(target=push))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    state = store.state("uc", "s-1")
    assert len(state.times) == 40 and state.times == sorted(state.times)
    vector = store.get("uc", "s-1")
    assert vector.event_timestamp == START + dt.timedelta(minutes=4 * 9 + 3)
    assert vector.features == state.vector


def test_a_new_sqlite_store_opens_while_another_connection_writes(tmp_path):
    """Switching a new file to WAL does not wait for other connections by itself (SQLite answers
    busy at once); the store must, or a replica opening it beside a writer fails."""
    path = tmp_path / "online.sqlite"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE other (i)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO other VALUES (1)")
    release = threading.Timer(0.3, lambda: writer.execute("COMMIT"))
    release.start()
    try:
        assert SqliteOnlineStore(path).get("uc", "s-1") is None
    finally:
        release.join()
        writer.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_backend_is_chosen_by_configuration_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("ML_PLATFORM_HOME", str(tmp_path))
    monkeypatch.delenv("ML_PLATFORM_ONLINE_STORE", raising=False)
    assert isinstance(make_online_store(load_settings()), SqliteOnlineStore)
    monkeypatch.setenv("ML_PLATFORM_ONLINE_STORE", REDIS_URL)
    assert isinstance(make_online_store(load_settings()), RedisOnlineStore)
    monkeypatch.setenv("ML_PLATFORM_ONLINE_STORE", "memcached://nope")
    with pytest.raises(ValueError, match="ML_PLATFORM_ONLINE_STORE"):
        make_online_store(load_settings())
