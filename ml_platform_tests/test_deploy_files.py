"""The deployment files in deploy/ carry the settings, names, ports and versions the platform
relies on. Nothing here runs a container: the files are parsed and checked."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ml_platform.settings import ENV_VARS, REPO_ROOT, load_settings

DEPLOY = REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
HELM_VALUES = DEPLOY / "k8s" / "dagster-values.yaml"
RAY_CLUSTER = DEPLOY / "k8s" / "raycluster.yaml"
PLATFORM_VARS = {"ML_PLATFORM_", "MLFLOW_TRACKING_URI", "RAY_ADDRESS", "DAGSTER_HOME"}
SECRET_NAME = re.compile(r"PASSWORD|TOKEN", re.IGNORECASE)
# user:password@ in a URL, unless the password is a ${...} reference.
INLINE_CREDENTIAL = re.compile(r"://[^/\s:@]+:(?!\$\{)[^@\s]+@")
EXAMPLE_VALUES = {"POSTGRES_PASSWORD": "example-password", "ML_PLATFORM_API_TOKEN": "example-token"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose_services() -> dict[str, dict]:
    return load(COMPOSE)["services"]


def substitute(value: str) -> str:
    """Compose's `${VAR:?message}` / `${VAR}` with the example values."""
    return re.sub(r"\$\{(\w+)[^}]*\}", lambda m: EXAMPLE_VALUES[m.group(1)], value)


def locked_versions() -> dict[str, str]:
    text = (REPO_ROOT / "requirements.lock").read_text()
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, flags=re.MULTILINE))


def env_names(node: Any) -> set[str]:
    """Every environment variable name set anywhere in a parsed file (mappings and k8s lists)."""
    if isinstance(node, list):
        return set().union(*(env_names(item) for item in node))
    if not isinstance(node, dict):
        return set()
    names = set().union(*(env_names(value) for value in node.values()))
    if isinstance(node.get("environment"), dict):
        names |= set(node["environment"])
    if isinstance(node.get("env"), list):
        names |= {item["name"] for item in node["env"]}
    return names


def grpc_module(args: list[str]) -> str:
    return args[args.index("-m") + 1]


def test_every_platform_variable_is_a_setting() -> None:
    known = set(ENV_VARS.values()) | {"DAGSTER_HOME"}
    documents = [load(COMPOSE), load(HELM_VALUES), *yaml.safe_load_all(RAY_CLUSTER.read_text())]
    used = {n for doc in documents for n in env_names(doc) if n.startswith(tuple(PLATFORM_VARS))}
    assert used, "no platform settings found in the deploy files"
    assert used <= known, f"not settings: {sorted(used - known)}"


def test_settings_load_from_the_compose_environment() -> None:
    for name in ("dagster-code", "dagster-webserver", "dagster-daemon"):
        env = {k: substitute(str(v)) for k, v in compose_services()[name]["environment"].items()}
        settings = load_settings(env)
        assert settings.dagster_storage_url and settings.dagster_storage_url.endswith(
            "@postgres:5432/dagster"
        )
        assert settings.mlflow_tracking_uri == "http://mlflow:5000"
        assert settings.ray_address == "ray-head:6379"
        assert settings.online_store_url == "redis://redis:6379/0"
        assert settings.api_token == EXAMPLE_VALUES["ML_PLATFORM_API_TOKEN"]
        # Replicas reach the prediction log and the landing inbox there, not the home.
        assert settings.prediction_log_url == "postgresql://postgres:example-password@postgres:5432/dagster"
        # dagster.yaml, written by `ml-platform init` into the home, is the one Dagster reads.
        assert Path(env["DAGSTER_HOME"]) == settings.dagster_home


def test_ray_nodes_mount_no_home() -> None:
    """Replicas write to PostgreSQL and read models through MLflow: only the code location, where
    the landing sensor and the runs write, holds the home."""
    services = compose_services()
    assert "home:/data/home" in services["dagster-code"]["volumes"]
    for name in ("ray-head", "ray-worker"):
        assert not any(str(v).startswith("home:") for v in services[name].get("volumes", [])), name
    ray_cluster = next(d for d in yaml.safe_load_all(RAY_CLUSTER.read_text()) if d["kind"] == "RayCluster")
    groups = [ray_cluster["spec"]["headGroupSpec"], *ray_cluster["spec"]["workerGroupSpecs"]]
    for group in groups:
        volumes = group["template"]["spec"].get("volumes", [])
        assert not any("persistentVolumeClaim" in v for v in volumes), group


def test_secrets_come_from_the_env_file() -> None:
    env = compose_services()["dagster-code"]["environment"]
    assert env["ML_PLATFORM_API_TOKEN"].startswith("${ML_PLATFORM_API_TOKEN:?")
    assert "${POSTGRES_PASSWORD:?" in env["ML_PLATFORM_DAGSTER_STORAGE"]
    assert "${POSTGRES_PASSWORD:?" in env["ML_PLATFORM_PREDICTION_LOG_URL"]


def test_published_ports_bind_loopback() -> None:
    published = [p for s in compose_services().values() for p in s.get("ports", [])]
    assert all(p.startswith("127.0.0.1:") for p in published), published
    host_ports = {int(p.split(":")[1]) for p in published}
    assert {3000, 5000, 8000, 8001} <= host_ports


def test_code_location_module_matches_the_workspace() -> None:
    module = load(REPO_ROOT / "workspace.yaml")["load_from"][0]["python_module"]["module_name"]
    code_server = shlex.split(compose_services()["dagster-code"]["command"][-1])
    assert grpc_module(code_server) == module
    deployment = load(HELM_VALUES)["dagster-user-deployments"]["deployments"][0]
    assert grpc_module(deployment["dagsterApiGrpcArgs"]) == module
    server = load(DEPLOY / "workspace.yaml")["load_from"][0]["grpc_server"]
    assert (server["host"], server["port"]) == ("dagster-code", 4000)
    assert f"--location-name {server['location_name']}" in " ".join(code_server)


def test_versions_match_the_lock() -> None:
    locked = locked_versions()
    ray_cluster = next(d for d in yaml.safe_load_all(RAY_CLUSTER.read_text()) if d["kind"] == "RayCluster")
    assert ray_cluster["spec"]["rayVersion"] == locked["ray"]
    values = load(HELM_VALUES)
    for component in ("dagsterWebserver", "dagsterDaemon"):
        assert str(values[component]["image"]["tag"]) == locked["dagster"]
    images = [s["image"] for s in compose_services().values()]
    assert {"postgres:16", "redis:7"} <= set(images)
    assert all(":" in image and not image.endswith(":latest") for image in images)


def test_image_installs_the_hashed_lock() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile
    assert "python -m compileall" in dockerfile
    assert re.search(r"^USER (?!root)", dockerfile, flags=re.MULTILINE)


def secret_settings(node: Any) -> Iterator[tuple[str, Any]]:
    """(name, value) of every key or k8s env entry named like a password or token."""
    if isinstance(node, list):
        for item in node:
            yield from secret_settings(item)
    elif isinstance(node, dict):
        if isinstance(node.get("name"), str) and "value" in node and SECRET_NAME.search(node["name"]):
            yield node["name"], node["value"]
        for key, value in node.items():
            if SECRET_NAME.search(str(key)) and not isinstance(value, dict | list):
                yield key, value
            yield from secret_settings(value)


def test_no_literal_secret_in_deploy_files() -> None:
    documents = [load(COMPOSE), load(HELM_VALUES), *yaml.safe_load_all(RAY_CLUSTER.read_text())]
    for name, value in (pair for doc in documents for pair in secret_settings(doc)):
        # A reference to the env file, or a chart switch (generatePostgresqlPasswordSecret).
        assert isinstance(value, bool) or str(value).startswith("${"), f"{name}: {value!r}"
    for path in (p for p in DEPLOY.rglob("*") if p.is_file()):
        text = path.read_text()
        assert not INLINE_CREDENTIAL.search(text), f"a password in a URL in {path.name}"
    assignments = re.findall(r"^(\w+)=(.*)$", (DEPLOY / ".env.example").read_text(), flags=re.MULTILINE)
    assert assignments and all(value == "" for _, value in assignments)
