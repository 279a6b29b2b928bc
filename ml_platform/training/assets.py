"""Training set -> candidate model -> held-out evaluation (the gate) -> champion alias."""

import hashlib
import subprocess

import dagster as dg
import pandas as pd
import polars as pl
from dagster_duckdb import DuckDBResource

from ml_platform.features.assets import read_features
from ml_platform.features.compute import EVENT_TIMESTAMP
from ml_platform.metadata import latest_metadata
from ml_platform.resources.platform import WAREHOUSE_POOL, PlatformResource
from ml_platform.settings import REPO_ROOT, Settings
from ml_platform.spec import UseCaseSpec
from ml_platform.training.dataset import LABEL, SPLIT, build_training_set, read_label_windows
from ml_platform.training.model import build_pipeline, evaluate

GATE_PASSED_TAG = "gate.passed"


def training_table(spec: UseCaseSpec) -> str:
    return f"{spec.name}.training_set"


def content_sha256(frame: pl.DataFrame) -> str:
    """A hash of the rows' values, independent of how the table is stored."""
    hashed = pd.util.hash_pandas_object(frame.to_pandas(), index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def read_split(warehouse: DuckDBResource, spec: UseCaseSpec, split: str) -> pl.DataFrame:
    with warehouse.get_connection() as conn:
        query = f"SELECT * FROM {training_table(spec)} WHERE {SPLIT} = ?"
        return conn.sql(f"{query} ORDER BY {spec.entity}, {EVENT_TIMESTAMP}", params=[split]).pl()


def mlflow_run_url(settings: Settings, experiment_id: str, run_id: str) -> str:
    return f"{settings.mlflow_ui_url}/#/experiments/{experiment_id}/runs/{run_id}"


def build_training_assets(spec: UseCaseSpec) -> list[dg.AssetsDefinition]:
    key = {
        name: dg.AssetKey([spec.name, name])
        for name in (
            "features",
            "training_set",
            "model",
            "model_evaluation",
            "champion",
        )
    }
    feature_names = spec.features.feature_names()

    @dg.asset(
        key=key["training_set"],
        group_name=spec.name,
        deps=[key["features"], dg.AssetKey([spec.name, "stg_readings"])],
        pool=WAREHOUSE_POOL,
        kinds={"polars", "duckdb"},
        description=f"Last {spec.model.training_days} days, point-in-time features, labelled, split by time.",
    )
    def training_set(warehouse: DuckDBResource, platform: PlatformResource) -> dg.MaterializeResult:
        windows = read_label_windows(platform.settings.labels_dir_for(spec.name), spec)
        with warehouse.get_connection() as conn:
            spine = conn.sql(f'SELECT {spec.entity}, "{spec.timestamp}" FROM {spec.name}.stg_readings').pl()
        frame = build_training_set(spine, read_features(warehouse, spec), windows, spec)
        with warehouse.get_connection() as conn:
            conn.register("training_rows", frame.to_arrow())
            conn.sql(f"CREATE OR REPLACE TABLE {training_table(spec)} AS SELECT * FROM training_rows")
            conn.unregister("training_rows")
        counts = dict(frame.group_by(SPLIT).len().iter_rows())
        test = frame.filter(pl.col(SPLIT) == "test")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(frame),
                "train_rows": counts.get("train", 0),
                "test_rows": counts.get("test", 0),
                "label_share": float(frame[LABEL].mean()),
                "first_event": str(frame[EVENT_TIMESTAMP].min()),
                "test_from": str(test[EVENT_TIMESTAMP].min()) if len(test) else "",
                "last_event": str(frame[EVENT_TIMESTAMP].max()),
                "content_sha256": content_sha256(frame.sort(spec.entity, EVENT_TIMESTAMP)),
            }
        )

    @dg.asset(
        key=key["model"],
        group_name=spec.name,
        deps=[key["training_set"]],
        pool=WAREHOUSE_POOL,
        kinds={"scikitlearn", "mlflow"},
        description="A candidate model trained on the train split, registered in MLflow.",
    )
    def model(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, platform: PlatformResource
    ) -> dg.MaterializeResult:
        from ml_platform.training import registry  # MLflow is slow to import: load it in runs only

        settings = platform.settings
        train = read_split(warehouse, spec, "train")
        identity = latest_metadata(context.instance, key["training_set"])
        features = train.select(feature_names).to_pandas()
        pipeline = build_pipeline(spec.model).fit(features)
        params = {
            "algorithm": spec.model.algorithm,
            **spec.model.params,
            "seed": spec.model.seed,
            "features": ",".join(feature_names),
            "training_days": spec.model.training_days,
        }
        tags = {
            "use_case": spec.name,
            "git_commit": git_commit(),
            "dagster_run_id": context.run_id,
            "training_rows": str(len(train)),
            "training_content_sha256": str(identity.get("content_sha256", "")),
            "training_first_event": str(identity.get("first_event", "")),
            "training_last_event": str(identity.get("last_event", "")),
        }
        ref = registry.log_candidate(
            settings,
            spec.name,
            pipeline,
            features.head(100),
            params,
            {"train_rows": len(train)},
            tags,
        )
        experiment_id = registry.ensure_experiment(settings, spec.name)
        return dg.MaterializeResult(
            metadata={
                "model_version": ref.version,
                "mlflow_run_id": ref.run_id,
                "mlflow_run": dg.MetadataValue.url(mlflow_run_url(settings, experiment_id, ref.run_id)),
                "artifact_sha256": ref.sha256,
                "train_rows": len(train),
            }
        )

    gate = spec.gate.min_metrics

    @dg.asset(
        key=key["model_evaluation"],
        group_name=spec.name,
        deps=[key["model"]],
        pool=WAREHOUSE_POOL,
        kinds={"mlflow"},
        description="Held-out metrics of the candidate against the labelled anomaly windows.",
        check_specs=[
            dg.AssetCheckSpec(
                f"gate_{metric}",
                asset=key["model_evaluation"],
                blocking=True,
                description=f"{metric} on the held-out split is at least {threshold}.",
            )
            for metric, threshold in gate.items()
        ],
    )
    def model_evaluation(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, platform: PlatformResource
    ) -> dg.MaterializeResult:
        from ml_platform.training import registry

        settings = platform.settings
        version = str(latest_metadata(context.instance, key["model"])["model_version"])
        ref = registry.model_ref(settings, spec.name, version)
        pipeline = registry.load_verified_model(ref, settings.run_dir / "model_cache")
        test = read_split(warehouse, spec, "test")
        metrics = evaluate(pipeline, test.select(feature_names).to_pandas(), test[LABEL].to_numpy())
        registry.log_evaluation(settings, ref, metrics)
        results = []
        for metric, threshold in gate.items():
            value = metrics.get(metric)
            results.append(
                dg.AssetCheckResult(
                    check_name=f"gate_{metric}",
                    passed=value is not None and value >= threshold,
                    metadata={
                        "value": value if value is not None else float("nan"),
                        "threshold": threshold,
                    },
                )
            )
        passed = all(r.passed for r in results)
        registry.configure(settings).set_model_version_tag(
            spec.name, version, GATE_PASSED_TAG, str(passed).lower()
        )
        return dg.MaterializeResult(
            metadata={"model_version": version, "gate_passed": passed, **metrics},
            check_results=results,
        )

    @dg.asset(
        key=key["champion"],
        group_name=spec.name,
        deps=[key["model_evaluation"]],
        kinds={"mlflow"},
        description="The `champion` alias; moved only to a candidate that passed the gate.",
    )
    def champion(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.MaterializeResult:
        from ml_platform.training import registry

        settings = platform.settings
        version = str(latest_metadata(context.instance, key["model_evaluation"])["model_version"])
        client = registry.configure(settings)
        if client.get_model_version(spec.name, version).tags.get(GATE_PASSED_TAG) != "true":
            raise dg.Failure(f"{spec.name} v{version} has not passed the gate; champion not moved")
        ref = registry.model_ref(settings, spec.name, version)
        previous = registry.move_champion(
            settings,
            ref,
            reason="passed the evaluation gate",
            actor=f"dagster run {context.run_id}",
        )
        return dg.MaterializeResult(
            metadata={
                "champion_version": version,
                "previous_version": previous or "",
                "mlflow_run_id": ref.run_id,
            }
        )

    return [training_set, model, model_evaluation, champion]
