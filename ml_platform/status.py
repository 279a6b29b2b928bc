"""`ml-platform status`: each part of the platform, its backend, whether it answers, its version.

Every probe returns a ``PartStatus`` and never raises: what went wrong is its detail. The parts every
run needs (the warehouse, Dagster's storage, MLflow tracking, the online store) are required, and so
is a Ray cluster named by ``RAY_ADDRESS``; serving, a local Ray head and the MQTT broker are services
one starts, so they are reported but not required. A part not created yet (a fresh home) is not down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from ml_platform.serving.cluster import reachable
from ml_platform.settings import Settings, without_password

UP, DOWN, NOT_CREATED, NOT_RUNNING = "up", "down", "not created", "not running"
TIMEOUT_S = 3.0


@dataclass(frozen=True)
class PartStatus:
    part: str
    backend: str
    state: str
    required: bool
    version: str = ""
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.required and self.state == DOWN

    def as_dict(self) -> dict:
        return asdict(self)


def _reason(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def warehouse(settings: Settings) -> PartStatus:
    import duckdb

    path = settings.warehouse_path
    status = PartStatus("warehouse", f"duckdb {path}", UP, True, duckdb.__version__)
    if not path.exists():
        return replace(status, state=NOT_CREATED, detail="written by the first ingestion run")
    try:
        # Read-only, never waiting: a writer (a Dagster run) holding the file means it is in use.
        with duckdb.connect(str(path), read_only=True) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database()"
            ).fetchone()[0]
        return replace(status, detail=f"{tables} tables")
    except duckdb.IOException as error:
        if "lock" in str(error).lower():
            return replace(status, detail="in use by a writer (a Dagster run)")
        return replace(status, state=DOWN, detail=_reason(error))
    except duckdb.Error as error:
        return replace(status, state=DOWN, detail=_reason(error))


def dagster_storage(settings: Settings) -> PartStatus:
    """What Dagster's runs use: the storage the home's dagster.yaml names."""
    import dagster as dg

    home = settings.dagster_home
    status = PartStatus("dagster storage", f"sqlite {home}", UP, True, dg.__version__)
    if not (home / "dagster.yaml").exists():
        return replace(status, state=NOT_CREATED, detail="run `ml-platform init`")
    if settings.dagster_storage_url:
        status = replace(status, backend=without_password(settings.dagster_storage_url))
        import psycopg2

        # Asked first, once: Dagster's own connection retries take seconds and log each try.
        dsn = settings.dagster_storage_url.replace("postgresql+psycopg2://", "postgresql://", 1)
        try:
            with psycopg2.connect(dsn, connect_timeout=int(TIMEOUT_S)) as conn, conn.cursor() as cursor:
                cursor.execute("SHOW server_version")
                server = cursor.fetchone()[0]
            conn.close()
        except psycopg2.Error as error:
            return replace(status, state=DOWN, detail=_reason(error))
        status = replace(status, version=f"{dg.__version__}, postgresql {server}")
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            runs = instance.get_runs_count()
            storage = type(instance.run_storage).__name__
    except Exception as error:  # any storage error: the part is down, the reason is shown
        return replace(status, state=DOWN, detail=_reason(error))
    if "Postgres" in storage and not settings.dagster_storage_url:
        status = replace(status, backend="postgresql (the home's dagster.yaml)")
    return replace(status, detail=f"{runs} runs ({storage})")


def mlflow_tracking(settings: Settings) -> list[PartStatus]:
    """Tracking and the registry, and where the use cases' artifacts are stored."""
    import mlflow

    uri = settings.mlflow_tracking_uri
    tracking = PartStatus("mlflow tracking", without_password(uri), UP, True, mlflow.__version__)
    artifacts = PartStatus("mlflow artifacts", str(settings.mlflow_artifacts_dir), NOT_CREATED, False)
    if uri.startswith(("http://", "https://")):
        import httpx

        try:
            httpx.get(f"{uri.rstrip('/')}/health", timeout=TIMEOUT_S).raise_for_status()
            server = httpx.get(f"{uri.rstrip('/')}/version", timeout=TIMEOUT_S).text.strip()
            tracking = replace(tracking, version=f"server {server}, client {mlflow.__version__}")
        except httpx.HTTPError as error:
            return [replace(tracking, state=DOWN, detail=_reason(error)), artifacts]
    elif uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return [replace(tracking, state=NOT_CREATED, detail="written by the first training run"), artifacts]
    try:
        client = mlflow.MlflowClient(uri)
        models = client.search_registered_models()
        # Where each experiment's artifacts go, by the folder (or bucket) holding them.
        locations = sorted(
            {e.artifact_location.rstrip("/").rsplit("/", 1)[0] for e in client.search_experiments()}
        )
    except Exception as error:  # the store's own errors: down, with the reason
        return [replace(tracking, state=DOWN, detail=_reason(error)), artifacts]
    described = ", ".join(
        f"{m.name} ({', '.join(f'{a} v{v}' for a, v in sorted(m.aliases.items())) or 'no alias'})"
        for m in models
    )
    tracking = replace(tracking, detail=f"{len(models)} registered models: {described}" if models else "")
    if locations:
        artifacts = replace(artifacts, backend=", ".join(locations), state=UP)
    return [tracking, artifacts]


def online_store(settings: Settings, use_cases: list[str]) -> PartStatus:
    import sqlite3

    from ml_platform.features.online_store import RedisOnlineStore, SqliteOnlineStore, make_online_store

    try:
        store = make_online_store(settings)
    except ValueError as error:
        return PartStatus("online store", str(settings.online_store_url), DOWN, True, detail=str(error))
    status = PartStatus("online store", store.describe(), UP, True)
    try:
        if isinstance(store, RedisOnlineStore):
            store.client.ping()
            status = replace(status, version=f"redis {store.client.info('server')['redis_version']}")
        elif isinstance(store, SqliteOnlineStore):
            status = replace(status, version=f"sqlite {sqlite3.sqlite_version}")
            if not store.path.exists():
                return replace(status, state=NOT_CREATED, detail="written by online_features")
        counts = ", ".join(f"{name} {len(store.entities(name))} entities" for name in use_cases)
    except Exception as error:  # a store that does not answer: down, with the reason
        return replace(status, state=DOWN, detail=_reason(error))
    return replace(status, detail=counts)


def ray_cluster(settings: Settings) -> PartStatus:
    """The configured cluster (required), or the local head ``ml-platform serve`` started."""
    import ray

    from ml_platform.serving.cluster import cluster_address, connect

    configured = settings.ray_address
    status = PartStatus("ray cluster", configured or "local head", UP, bool(configured), ray.__version__)
    address = cluster_address(settings)
    if address is None:
        return replace(status, state=NOT_RUNNING, detail="`ml-platform serve` starts a local head")
    host, _, port = address.rpartition(":")
    if port.isdigit() and not reachable(f"{host.split('://')[-1]}:{port}", TIMEOUT_S):
        return replace(status, backend=address, state=DOWN, detail=f"nothing answers at {address}")
    connected_before = ray.is_initialized()  # a driver already (a test, a bench): stay one
    try:
        connect(settings)
        nodes = [n for n in ray.nodes() if n["Alive"]]
        cpus = sum(n["Resources"].get("CPU", 0) for n in nodes)
    except Exception as error:  # Ray's own connection errors: down, with the reason
        return replace(status, backend=address, state=DOWN, detail=_reason(error))
    finally:
        if not connected_before:
            ray.shutdown()
    return replace(status, backend=address, detail=f"{len(nodes)} nodes alive, {cpus:g} CPUs")


def serving(settings: Settings, use_cases: list[str]) -> PartStatus:
    import httpx

    headers = {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}
    status = PartStatus("serving", settings.serve_url, UP, False)
    try:
        with httpx.Client(base_url=settings.serve_url, headers=headers, timeout=TIMEOUT_S) as client:
            server = client.get("/v2").json()
            served = []
            for name in use_cases:
                body = client.get(f"/v2/models/{name}").json()
                versions = body.get("versions") or []
                own = body.get("parameters", {}).get("deployment")  # a use case served apart
                said = f"{name} v{versions[0]}" if versions else f"{name} not served"
                served.append(f"{said} ({own})" if own else said)
    except httpx.ConnectError:
        return replace(status, state=NOT_RUNNING, detail="start it with `ml-platform serve`")
    except (httpx.HTTPError, ValueError) as error:
        return replace(status, state=DOWN, detail=_reason(error))
    grpc = settings.grpc_address if settings.grpc_port else None
    if grpc:
        served.append(f"gRPC {grpc} {'listening' if reachable(grpc, TIMEOUT_S) else 'not listening'}")
    return replace(status, version=f"{server.get('name')} {server.get('version')}", detail="; ".join(served))


def mqtt_broker(settings: Settings) -> PartStatus:
    """The broker the consumer reads events from; its version from Mosquitto's $SYS topic."""
    import paho.mqtt.client as paho

    url = urlsplit(settings.mqtt_url)
    host, port = url.hostname or "127.0.0.1", url.port or 1883
    status = PartStatus("mqtt broker", without_password(settings.mqtt_url), UP, False)
    if not reachable(f"{host}:{port}", TIMEOUT_S):
        return replace(status, state=NOT_RUNNING, detail=f"nothing answers at {host}:{port}")
    connected, received = threading.Event(), threading.Event()
    outcome: list = []
    version: list[str] = []

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        outcome.append(reason_code)
        connected.set()
        if not reason_code.is_failure:
            client.subscribe("$SYS/broker/version")

    def on_message(client, userdata, message) -> None:
        version.append(message.payload.decode(errors="replace"))
        received.set()

    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.on_connect, client.on_message = on_connect, on_message
    if url.username:
        client.username_pw_set(url.username, url.password)
    try:
        client.connect(host, port, keepalive=10)
        client.loop_start()
        if not connected.wait(TIMEOUT_S):
            return replace(status, state=DOWN, detail=f"no MQTT answer from {host}:{port}")
        if outcome[0].is_failure:
            return replace(status, state=DOWN, detail=f"connection refused: {outcome[0]}")
        received.wait(TIMEOUT_S)
    except (OSError, ValueError) as error:
        return replace(status, state=DOWN, detail=_reason(error))
    finally:
        client.loop_stop()
        client.disconnect()
    return replace(status, version=version[0] if version else "", detail="accepts connections")


def platform_status(settings: Settings, use_cases: list[str]) -> list[PartStatus]:
    """Every part, probed in the order a run meets them."""
    probes: list[Callable[[], PartStatus | list[PartStatus]]] = [
        lambda: warehouse(settings),
        lambda: dagster_storage(settings),
        lambda: mlflow_tracking(settings),
        lambda: online_store(settings, use_cases),
        lambda: ray_cluster(settings),
        lambda: serving(settings, use_cases),
        lambda: mqtt_broker(settings),
    ]
    found: list[PartStatus] = []
    for probe in probes:
        result = probe()
        found += result if isinstance(result, list) else [result]
    return found


def render(parts: list[PartStatus]) -> str:
    """A table: part, state, backend, version, detail (a required part is marked)."""
    rows = [("part", "state", "backend", "version", "detail")]
    rows += [(p.part + (" *" if p.required else ""), p.state, p.backend, p.version, p.detail) for p in parts]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, [*widths, 0], strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n* required: a run needs it"
