"""MLflow tracking and registry: candidates, verified artifacts and the champion alias.

Aliases, not the deprecated stages: ``champion`` is served, ``previous`` is the rollback target,
``challenger`` marks a candidate under canary or shadow. Every model version carries the sha256
of its artifact files; nothing is deserialized before that hash is checked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import sklearn
import skops.io as sio
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from ml_platform.errors import first_line
from ml_platform.settings import ENV_VARS, Settings
from ml_platform.spec import UseCaseSpec
from ml_platform.tasks import Task, task_of

CHAMPION = "champion"
PREVIOUS = "previous"
CHALLENGER = "challenger"
SHA_TAG = "artifact_sha256"
TRACKING_URI_VAR = ENV_VARS["mlflow_tracking_uri"]
# skops refuses unknown types on load; each task lists the ones its artifacts hold
# (``Task.trusted_types``), never a list read from the artifact.
# Written by the registry after logging; not part of what is loaded.
_UNHASHED = {"registered_model_meta"}


class ArtifactIntegrityError(RuntimeError):
    """A model artifact whose content does not match the hash recorded at registration."""


class TrackingError(RuntimeError):
    """The tracking server failed (after MLflow's own retries) while a step used it."""


@contextlib.contextmanager
def tracking(
    settings: Settings, doing: str, outcome: str = "nothing was promoted, the champion is unchanged"
) -> Iterator[None]:
    """MLflow's failures as one message: what was being done, the tracking server, MLflow's own
    first line and what it means for the champion."""
    try:
        yield
    except MlflowException as exc:
        raise TrackingError(
            f"{doing}: the MLflow tracking server {settings.mlflow_tracking_uri} failed "
            f"({first_line(exc, 400)}); "
            f"{outcome}; run this again once the server answers"
        ) from None


@dataclass(frozen=True)
class ModelRef:
    use_case: str
    version: str
    source: str
    sha256: str
    run_id: str


def configure(settings: Settings) -> MlflowClient:
    prepare_local_store(settings)
    exported = os.environ.get(TRACKING_URI_VAR)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    # MLflow also exports the URI to this process's environment, where `load_settings` reads it:
    # a process that later loads the settings of another home (a test, a long-lived command)
    # would keep this home's tracking store. Put back what was set; MLflow keeps its own copy.
    if exported is None:
        os.environ.pop(TRACKING_URI_VAR, None)
    else:
        os.environ[TRACKING_URI_VAR] = exported
    return MlflowClient(settings.mlflow_tracking_uri)


def prepare_local_store(settings: Settings) -> None:
    """A home's new SQLite tracking store starts as a copy of an empty one made once per MLflow
    release: MLflow would otherwise run its schema migrations in every new home (1.3-2 s here).
    Its Default experiment keeps artifacts under the home (MLflow's own default is the current
    directory). A store that exists is never touched; where no cache can be written, MLflow
    creates the store itself."""
    uri = settings.mlflow_tracking_uri
    if not uri.startswith("sqlite:///") or "?" in uri:
        return
    path = Path(uri.removeprefix("sqlite:///"))
    if path.exists():
        return
    try:
        template = _empty_store()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, copy = tempfile.mkstemp(dir=path.parent, prefix=".mlflow-", suffix=".db")
        os.close(fd)
        try:
            shutil.copyfile(template, copy)
            with contextlib.closing(sqlite3.connect(copy)) as conn, conn:
                default_artifacts = (settings.mlflow_artifacts_dir / "0").as_uri()
                conn.execute(
                    "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                    [default_artifacts],
                )
            with contextlib.suppress(FileExistsError):  # another process made it first: theirs
                os.link(copy, path)
        finally:
            os.unlink(copy)
    except Exception:  # a shortcut only: MLflow then makes the store, and says what is wrong
        return


def _empty_store() -> Path:
    """An empty tracking store of this MLflow release, in the user's cache (made once)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ml_platform"
    template = cache / f"mlflow-{mlflow.__version__}.db"
    if not template.exists():
        cache.mkdir(parents=True, exist_ok=True)
        fd, made = tempfile.mkstemp(dir=cache, suffix=".db")
        os.close(fd)
        os.unlink(made)
        try:
            MlflowClient(f"sqlite:///{made}").search_experiments()
            os.replace(made, template)  # whole or not at all; a concurrent maker's is as good
        finally:
            Path(made).unlink(missing_ok=True)
    return template


def ensure_experiment(settings: Settings, use_case: str) -> str:
    client = configure(settings)
    experiment = client.get_experiment_by_name(use_case)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if settings.mlflow_tracking_uri.startswith(("sqlite:", "file:")):
        # A local store keeps artifacts under the home, not in the current directory.
        location = (settings.mlflow_artifacts_dir / use_case).as_uri()
    return client.create_experiment(use_case, artifact_location=location)


def artifact_digest(directory: Path) -> str:
    """sha256 over every artifact file's relative path and content, in path order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        if relative in _UNHASHED:
            continue
        digest.update(relative.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def log_candidate(
    settings: Settings,
    spec: UseCaseSpec,
    model: Any,
    example: pd.DataFrame,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
) -> ModelRef:
    """Log a trained model as a new run and a new registered version; return its reference.
    Its signature is the task's outputs."""
    task, use_case = task_of(spec), spec.name
    client = configure(settings)
    experiment_id = ensure_experiment(settings, use_case)
    with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(metrics)
        outputs = pd.DataFrame(task.columns(model, task.scores(model, example)))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(example, outputs),
            input_example=example.head(3),
            registered_model_name=use_case,
            skops_trusted_types=list(task.trusted_types),
            # Pinning requirements skips MLflow's slow import-time inference.
            pip_requirements=[
                f"scikit-learn=={sklearn.__version__}",
                f"mlflow=={mlflow.__version__}",
            ],
        )
    version = str(info.registered_model_version)
    source = client.get_model_version(use_case, version).source
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp))
        sha = artifact_digest(local)
    client.set_model_version_tag(use_case, version, SHA_TAG, sha)
    for key, value in tags.items():
        client.set_model_version_tag(use_case, version, key, value)
    return ModelRef(use_case, version, source, sha, run.info.run_id)


def model_ref(settings: Settings, use_case: str, version: str) -> ModelRef:
    client = configure(settings)
    mv = client.get_model_version(use_case, version)
    return ModelRef(use_case, str(mv.version), mv.source, mv.tags.get(SHA_TAG, ""), mv.run_id)


def alias_ref(settings: Settings, use_case: str, alias: str = CHAMPION) -> ModelRef | None:
    client = configure(settings)
    try:
        mv = client.get_model_version_by_alias(use_case, alias)
    except MlflowException:
        return None
    return ModelRef(use_case, str(mv.version), mv.source, mv.tags.get(SHA_TAG, ""), mv.run_id)


def _download(ref: ModelRef, target: Path) -> str:
    """Fetch the artifact and return its digest; it replaces ``target`` only if that digest is
    the recorded one. It lands in a folder of its own first and is renamed into place, so
    replicas sharing a cache (one per node) never read or delete each other's half-written copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fetched = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=ref.source, dst_path=str(fetched))
        digest = artifact_digest(fetched)
        if digest != ref.sha256:
            return digest
        if target.exists() and artifact_digest(target) != digest:
            shutil.rmtree(target)  # a cached copy that changed
        try:
            fetched.rename(target)
        except OSError:
            if artifact_digest(target) != digest:  # not another replica's copy landing first
                raise
        return digest
    finally:
        shutil.rmtree(fetched, ignore_errors=True)


def load_verified_model(ref: ModelRef, cache_dir: Path, task: Task) -> Any:
    """Download the artifact, check its sha256 against the registry's record, then load it with
    skops, trusting only the types ``task`` lists (never a list read from the artifact).

    Nothing in the artifact is deserialized before both checks pass.
    """
    name = f"{ref.use_case} v{ref.version}"
    if not ref.sha256:
        raise ArtifactIntegrityError(f"{name}: no {SHA_TAG} recorded at registration; refusing to load it")
    target = cache_dir / ref.use_case / ref.version
    found = artifact_digest(target) if target.exists() else ""
    if found != ref.sha256:  # absent, or a cached copy that changed: fetch it again
        found = _download(ref, target)
    if found != ref.sha256:
        raise ArtifactIntegrityError(
            f"{name}: artifact sha256 {found} does not match the recorded {ref.sha256}; refusing to load it"
        )
    flavor = yaml.safe_load((target / "MLmodel").read_text())["flavors"].get("sklearn", {})
    if flavor.get("serialization_format") != "skops":
        raise ArtifactIntegrityError(
            f"{name}: serialization format {flavor.get('serialization_format')!r} can run code on load;"
            " only skops artifacts are loaded"
        )
    model_file = (target / str(flavor.get("pickled_model", ""))).resolve()
    if model_file.parent != target.resolve() or model_file.suffix != ".skops":
        raise ArtifactIntegrityError(f"{name}: unexpected model file {flavor.get('pickled_model')!r}")
    trusted = list(task.trusted_types)
    untrusted = set(sio.get_untrusted_types(file=model_file)) - set(trusted)
    if untrusted:
        raise ArtifactIntegrityError(
            f"{name}: artifact holds types not trusted by the project for {task.name}: {sorted(untrusted)}"
        )
    return sio.load(model_file, trusted=trusted)


def log_evaluation(settings: Settings, ref: ModelRef, metrics: dict[str, float]) -> None:
    client = configure(settings)
    for name, value in metrics.items():
        client.log_metric(ref.run_id, f"test_{name}", value)
        client.set_model_version_tag(ref.use_case, ref.version, f"eval.{name}", f"{value:.6g}")


def _record(client: MlflowClient, use_case: str, record: dict[str, Any]) -> None:
    """Append a move to the registered model's history (one tag per move) and to the version."""
    stamp = dt.datetime.now(dt.UTC)
    record = {"at": stamp.isoformat(), **record}
    client.set_registered_model_tag(use_case, f"move.{stamp:%Y%m%dT%H%M%S%f}", json.dumps(record))
    client.set_model_version_tag(
        use_case, record["to_version"], f"{record['alias']}.moved", json.dumps(record)
    )


def move_alias(
    settings: Settings,
    use_case: str,
    version: str,
    alias: str,
    reason: str,
    actor: str,
    metrics: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Point ``alias`` at ``version``; moving ``champion`` also points ``previous`` at the old one.

    Returns the record of the move (also kept in the registry): who, why, from, to, metrics.
    """
    client = configure(settings)
    old = alias_ref(settings, use_case, alias)
    record = {
        "alias": alias,
        "by": actor,
        "reason": reason,
        "to_version": str(version),
        "from_version": old.version if old else None,
        "metrics": metrics or {},
    }
    if old is not None and old.version == str(version):
        return {**record, "changed": False}
    if alias == CHAMPION and old is not None:
        client.set_registered_model_alias(use_case, PREVIOUS, old.version)
    client.set_registered_model_alias(use_case, alias, str(version))
    _record(client, use_case, record)
    return {**record, "changed": True}


def rollback(settings: Settings, use_case: str, actor: str, reason: str = "rollback") -> dict[str, Any]:
    """Swap ``champion`` and ``previous``: the previous model serves again, and can be restored."""
    previous = alias_ref(settings, use_case, PREVIOUS)
    if previous is None:
        raise ValueError(f"{use_case}: no `previous` version to roll back to")
    return move_alias(settings, use_case, previous.version, CHAMPION, reason, actor)


def history(settings: Settings, use_case: str) -> list[dict[str, Any]]:
    """Every recorded move of the use case's aliases, oldest first."""
    tags = configure(settings).get_registered_model(use_case).tags
    return [json.loads(v) for k, v in sorted(tags.items()) if k.startswith("move.")]


def promoted_at(settings: Settings, use_case: str, version: str) -> dt.datetime | None:
    """When ``version`` last became the champion (None when the history does not say)."""
    moves = [m for m in history(settings, use_case) if m["alias"] == CHAMPION and m["to_version"] == version]
    return dt.datetime.fromisoformat(moves[-1]["at"]) if moves else None
