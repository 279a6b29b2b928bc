"""Deploying the champions of every use case to Ray Serve, and waiting until they answer."""

from __future__ import annotations

import time

import httpx
from ray import serve

from ml_platform.serving.app import build_app
from ml_platform.serving.cluster import connect, metrics_dir
from ml_platform.settings import Settings, settings_env
from ml_platform.training.registry import CHAMPION, ModelRef, alias_ref
from ml_platform.usecases import use_cases

APP_NAME = "ml_platform"


def champions(settings: Settings) -> dict[str, ModelRef]:
    found = {}
    for name in use_cases(settings):
        ref = alias_ref(settings, name, CHAMPION)
        if ref is not None:
            found[name] = ref
    return found


def replica_env(settings: Settings) -> dict[str, str]:
    """Every setting, so that a replica loads the same settings as the process deploying it."""
    metrics = metrics_dir(settings)
    metrics.mkdir(parents=True, exist_ok=True)
    return {
        **settings_env(settings),
        # One OpenMP thread per replica: on 2 cores, thread pools fight and latency explodes.
        "OMP_NUM_THREADS": "1",
        # Read when prometheus_client is imported, so it must be in the replica's environment.
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }


def deploy(settings: Settings) -> dict[str, ModelRef]:
    """(Re)deploy the serving app with the current champions; returns what was deployed."""
    connect(settings)
    models = champions(settings)
    serve.start(
        http_options={"host": settings.serve_host, "port": settings.serve_port, "request_timeout_s": 30}
    )
    serve.run(
        build_app(models, replica_env(settings), settings.serve_replicas), name=APP_NAME, route_prefix="/"
    )
    return models


def wait_until_serving(settings: Settings, use_case: str, version: str, timeout_s: float = 60) -> dict:
    """Poll the model metadata endpoint until it reports ``version``; return that metadata."""
    url = f"{settings.serve_url}/v2/models/{use_case}"
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=5)
            last = f"{response.status_code} {response.text[:200]}"
            if response.status_code == 200 and version in response.json()["versions"]:
                return response.json()
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not report version {version} within {timeout_s:.0f} s (last: {last})")
