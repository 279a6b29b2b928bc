"""Deploying the champions of every use case to Ray Serve, and waiting until they answer."""

from __future__ import annotations

import time
from typing import NoReturn

import httpx
from ray import serve
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import ApplicationStatus

from ml_platform.serving.app import Deployment, build_app
from ml_platform.serving.cluster import connect, metrics_dir
from ml_platform.serving.grpc_v2 import APP_NAME as GRPC_APP_NAME
from ml_platform.serving.grpc_v2 import build_grpc_app, env_fingerprint
from ml_platform.settings import Settings, SettingsError, settings_env
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
    models = champions(settings)
    env = replica_env(settings)
    app = serving_app(models, env, settings)
    connect(settings)
    serve.start(
        proxy_location=settings.serve_proxy_location,
        http_options={"host": settings.serve_host, "port": settings.serve_port, "request_timeout_s": 30},
        controller_options=controller_options(settings),
    )
    targets = [serve.RunTarget(app, name=APP_NAME, route_prefix="/")]
    if settings.grpc_port and (grpc := grpc_target(env)) is not None:
        targets.append(grpc)
    run_together(targets)
    return models


def run_together(targets: list[serve.RunTarget]) -> None:
    """The HTTP app and, when given, the gRPC service: their replicas start side by side. Serve
    waits for the HTTP app first, so when the run fails with the HTTP app running, it is the gRPC
    service that did not start."""
    try:
        serve.run_many(targets)
    except Exception as exc:
        if len(targets) == 1 or not running(APP_NAME):
            raise
        grpc_failed(exc)


def controller_options(settings: Settings) -> dict | None:
    """A proxy sends each request to a replica on its own node while one has room (Serve's
    locality routing), which suits a proxy on every node behind a load balancer. The one proxy of
    HeadOnly would then leave the other nodes' replicas idle until the head's are full, so it is
    told to choose among all of them (the controller's environment reaches the proxies it starts;
    Serve reads it when the controller is first started)."""
    if settings.serve_proxy_location != "HeadOnly":
        return None
    return {"runtime_env": {"env_vars": {"RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0"}}}


def autoscaling_config(settings: Settings) -> dict | None:
    """``ML_PLATFORM_SERVE_AUTOSCALING`` checked against Ray Serve's fields."""
    autoscaling = settings.serve_autoscaling_config
    if autoscaling:
        check_autoscaling(autoscaling, "ML_PLATFORM_SERVE_AUTOSCALING")
    return autoscaling


def check_autoscaling(autoscaling: dict, where: str) -> None:
    """Ray accepts an autoscaling field it does not know without a word, so a misspelt one is
    refused here, by name, as is a value Ray's own model refuses."""
    known = AutoscalingConfig.model_fields
    unknown = sorted(set(autoscaling) - set(known))
    if unknown:
        raise SettingsError(
            f"{where}: {', '.join(unknown)} not among Ray Serve's autoscaling fields ({', '.join(known)})"
        )
    try:
        AutoscalingConfig(**autoscaling)
    except ValueError as exc:  # pydantic's, naming each field and its rule
        errors = exc.errors() if hasattr(exc, "errors") else [{"loc": (), "msg": str(exc)}]
        said = "; ".join(f"{e['loc'][-1] if e['loc'] else ''} {e['msg']}".strip() for e in errors)
        raise SettingsError(f"{where}: {said}") from None


def own_deployments(settings: Settings) -> dict[str, Deployment]:
    """The use cases whose spec asks for a deployment of their own, and its size."""
    found = {}
    for name, spec in use_cases(settings).items():
        if spec.serving is not None:
            if spec.serving.autoscaling:
                check_autoscaling(spec.serving.autoscaling, f"use case {name}: serving.autoscaling")
            found[name] = Deployment(
                spec.serving.replicas, spec.serving.autoscaling or None, spec.serving.num_cpus
            )
    return found


def serving_app(models: dict[str, ModelRef], env: dict[str, str], settings: Settings):
    """The HTTP app: the shared deployment, fixed or autoscaled, and one per use case that asks."""
    shared = Deployment(settings.serve_replicas, autoscaling_config(settings))
    return build_app(models, env, shared, own_deployments(settings))


def grpc_target(env: dict[str, str]) -> serve.RunTarget | None:
    """The gRPC service beside the HTTP app, or None when the one running has these settings. It
    forwards to whatever the HTTP app serves, so a redeploy of the models leaves it (and its
    clients' connections) alone unless the settings changed."""
    if running(GRPC_APP_NAME):
        deployed = serve.get_app_handle(GRPC_APP_NAME).fingerprint.remote().result(timeout_s=30)
        if deployed == env_fingerprint(env):
            return None
    return serve.RunTarget(build_grpc_app(APP_NAME, env), name=GRPC_APP_NAME, route_prefix=None)


def running(app_name: str) -> bool:
    status = serve.status().applications.get(app_name)
    return status is not None and status.status == ApplicationStatus.RUNNING


def grpc_failed(exc: Exception) -> NoReturn:
    """A port the gRPC service cannot take fails the deploy, naming it, and the service is
    removed (the HTTP routes keep serving)."""
    # Serve's exception says only that the deployment failed; its status holds the replica's error.
    status = serve.status().applications.get(GRPC_APP_NAME)
    messages = [d.message for d in status.deployments.values()] if status else []
    lines = [line.strip() for text in (*messages, str(exc)) for line in text.splitlines()]
    reason = next((line for line in lines if "ML_PLATFORM_GRPC_PORT" in line), str(exc))
    serve.delete(GRPC_APP_NAME)
    raise RuntimeError(f"the gRPC service did not start: {reason}") from None


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
