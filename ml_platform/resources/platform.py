"""Resources shared by every use case's assets."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from ml_platform.resources.handoffs import HANDOFFS, HandoffIOManager
from ml_platform.settings import SECRET_VARS, Settings, load_settings, settings_env

TOKEN_VAR = "ML_PLATFORM_API_TOKEN"
STORAGE_VAR = "ML_PLATFORM_DAGSTER_STORAGE"
PREDICTION_LOG_VAR = "ML_PLATFORM_PREDICTION_LOG_URL"
WAREHOUSE_POOL = "warehouse"  # DuckDB has one writing process: every asset touching it queues here


def configure_connection(conn: duckdb.DuckDBPyConnection, memory_limit: str) -> None:
    """UTC everywhere (naive timestamps are UTC) and a memory cap above which DuckDB spills to disk.

    Set after connecting: as a connect-time option DuckDB cannot autoload ICU for the time zone.
    """
    conn.sql("SET TimeZone = 'UTC'")
    conn.sql(f"SET memory_limit = '{memory_limit}'")


class _FileLock:
    """An exclusive lock on a file, shared across processes (flock) and reentrant within one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._guard = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._acquired = 0.0  # monotonic time the lock was taken

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._guard:
            if self._depth == 0:
                self._acquire()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release()

    def _acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        started = time.monotonic()
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd, self._acquired = fd, time.monotonic()
        dg.get_dagster_logger().info(
            f"{WAREHOUSE_LOCKED} after waiting {self._acquired - started:.2f} s ({self.path.name})"
        )

    def _release(self) -> None:
        assert self._fd is not None
        held = time.monotonic() - self._acquired
        # Said before letting go, so the logged hold lies within the real one: the next
        # holder's "took" record can never carry an earlier time than this one.
        dg.get_dagster_logger().info(f"{WAREHOUSE_UNLOCKED} after holding it {held:.2f} s")
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


WAREHOUSE_LOCKED = "took the warehouse write lock"
WAREHOUSE_UNLOCKED = "releasing the warehouse write lock"
_locks: dict[str, _FileLock] = {}
_locks_guard = threading.Lock()


def warehouse_lock(database: str) -> _FileLock:
    """The one lock per warehouse file that every process opening it takes first."""
    with _locks_guard:
        if database not in _locks:
            _locks[database] = _FileLock(Path(database + ".writer.lock"))
        return _locks[database]


def _connect(database: str, config: dict, wait_s: float = 30.0) -> duckdb.DuckDBPyConnection:
    """Open the file, waiting while a process outside the platform (a person's DuckDB shell) holds it."""
    deadline = time.monotonic() + wait_s
    delay = 0.1
    while True:
        try:
            return duckdb.connect(database, config=config)
        except duckdb.IOException as error:
            if "lock" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class WarehouseResource(DuckDBResource):
    """The DuckDB warehouse, opened by Dagster runs only, by one process at a time.

    The `warehouse` pool queues the steps; the file lock makes the one-writer rule hold even when
    Dagster's pool slot claim races (on its SQLite storage the claim is a select then an update,
    so two processes starting together can both take the single slot).
    """

    memory_limit: str = "1GB"

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the warehouse for a whole step, e.g. while dbt (its own process) writes it."""
        with warehouse_lock(self.database).hold():
            yield

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        # Closed even when the step fails (the base class leaves the file open then).
        with self.exclusive():
            config = {"custom_user_agent": "dagster", **self.connection_config}
            conn = _connect(self.database, config)
            try:
                configure_connection(conn, self.memory_limit)
                yield conn
            finally:
                conn.close()


class PlatformResource(dg.ConfigurableResource):
    """Every setting, carried into each run as the environment variables that set them and read
    back by the one reader (``load_settings``); secrets (the API token, database URLs) through ``dg.EnvVar``,
    so they never appear in run config or the UI."""

    environment: dict[str, str]
    api_token: str = ""
    dagster_storage_url: str = ""
    prediction_log_url: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> PlatformResource:
        env = settings_env(settings)
        secrets = {name: env.pop(name) for name in SECRET_VARS}
        return cls(
            environment=env,
            api_token=dg.EnvVar(TOKEN_VAR) if secrets[TOKEN_VAR] else "",
            dagster_storage_url=dg.EnvVar(STORAGE_VAR) if secrets[STORAGE_VAR] else "",
            prediction_log_url=dg.EnvVar(PREDICTION_LOG_VAR) if secrets[PREDICTION_LOG_VAR] else "",
        )

    @property
    def settings(self) -> Settings:
        return load_settings(
            {
                **self.environment,
                TOKEN_VAR: self.api_token,
                STORAGE_VAR: self.dagster_storage_url,
                PREDICTION_LOG_VAR: self.prediction_log_url,
            }
        )


def build_resources(settings: Settings) -> dict[str, object]:
    settings.home.mkdir(parents=True, exist_ok=True)
    return {
        "platform": PlatformResource.from_settings(settings),
        "warehouse": WarehouseResource(database=str(settings.warehouse_path)),
        HANDOFFS: HandoffIOManager(),
    }
