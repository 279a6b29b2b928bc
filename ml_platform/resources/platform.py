"""Resources shared by every use case's assets."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from ml_platform.settings import Settings

WAREHOUSE_POOL = "warehouse"  # DuckDB has one writing process: every asset touching it queues here


def configure_connection(conn: duckdb.DuckDBPyConnection, memory_limit: str) -> None:
    """UTC everywhere (naive timestamps are UTC) and a memory cap above which DuckDB spills to disk.

    Set after connecting: as a connect-time option DuckDB cannot autoload ICU for the time zone.
    """
    conn.sql("SET TimeZone = 'UTC'")
    conn.sql(f"SET memory_limit = '{memory_limit}'")


class WarehouseResource(DuckDBResource):
    """The DuckDB warehouse, opened by Dagster runs only."""

    memory_limit: str = "1GB"

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with super().get_connection() as conn:
            configure_connection(conn, self.memory_limit)
            yield conn


class PlatformResource(dg.ConfigurableResource):
    """Where the platform keeps its state; built from ``Settings`` so paths come from one place."""

    home: str
    mlflow_tracking_uri: str
    ray_address: str = ""
    serve_host: str = "127.0.0.1"
    serve_port: int = 8000
    online_store_url: str = ""
    online_store_namespace: str = "mlp"

    @classmethod
    def from_settings(cls, settings: Settings) -> PlatformResource:
        return cls(
            home=str(settings.home),
            mlflow_tracking_uri=settings.mlflow_tracking_uri,
            ray_address=settings.ray_address or "",
            serve_host=settings.serve_host,
            serve_port=settings.serve_port,
            online_store_url=settings.online_store_url or "",
            online_store_namespace=settings.online_store_namespace,
        )

    @property
    def settings(self) -> Settings:
        return Settings(
            home=Path(self.home),
            mlflow_tracking_uri=self.mlflow_tracking_uri,
            ray_address=self.ray_address or None,
            serve_host=self.serve_host,
            serve_port=self.serve_port,
            api_token=None,
            online_store_url=self.online_store_url or None,
            online_store_namespace=self.online_store_namespace,
        )


def build_resources(settings: Settings) -> dict[str, object]:
    from ml_platform.validation.dbt_assets import dbt_cli_resource

    settings.home.mkdir(parents=True, exist_ok=True)
    return {
        "platform": PlatformResource.from_settings(settings),
        "warehouse": WarehouseResource(database=str(settings.warehouse_path)),
        "dbt": dbt_cli_resource(),
    }
