"""Training assets per use case: training set -> candidate model (tuned) -> held-out evaluation
(the gate) -> champion alias, declared to Dagster; what each does is in ``steps``."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from ml_platform.metadata import latest_metadata
from ml_platform.resources.platform import WAREHOUSE_POOL, PlatformResource
from ml_platform.spec import UseCaseSpec
from ml_platform.training import steps
from ml_platform.training.gate import check_names


def build_training_assets(spec: UseCaseSpec) -> list[dg.AssetsDefinition]:
    key = {
        name: dg.AssetKey([spec.name, name])
        for name in (
            "features",
            "raw_labels",
            "training_set",
            "model",
            "model_evaluation",
            "champion",
        )
    }

    @dg.asset(
        key=key["training_set"],
        group_name=spec.name,
        deps=[key["features"], dg.AssetKey([spec.name, spec.staged_name]), key["raw_labels"]],
        pool=WAREHOUSE_POOL,
        kinds={"polars", "duckdb"},
        description=(
            f"{steps.window_text(spec)} of {spec.table} with point-in-time features, labelled, "
            "split by time into train / validation / test."
        ),
    )
    def training_set(warehouse: DuckDBResource, platform: PlatformResource) -> dg.MaterializeResult:
        return steps.write_training_set(spec, warehouse, platform.settings)

    @dg.asset(
        key=key["model"],
        group_name=spec.name,
        deps=[key["training_set"]],
        pool=WAREHOUSE_POOL,
        kinds={"scikitlearn", "mlflow"},
        code_version=steps.git_commit()[:12],
        description="A candidate: searched, fit on train, chosen on validation, registered in MLflow.",
    )
    def model(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, platform: PlatformResource
    ) -> dg.MaterializeResult:
        run = steps.RunInfo(context.run.run_id, context.assets_def.code_versions_by_key[key["model"]] or "")
        identity = latest_metadata(context.instance, key["training_set"])
        from ml_platform.training import registry  # MLflow: imported by the steps that use it

        with registry.tracking(platform.settings, f"training {spec.name}"):
            return steps.train_candidate(spec, warehouse, platform.settings, identity, run)

    @dg.asset(
        key=key["model_evaluation"],
        group_name=spec.name,
        deps=[key["model"]],
        pool=WAREHOUSE_POOL,
        kinds={"mlflow"},
        description="Held-out metrics (overall, per slice), behavioural tests, latency and size; the gate.",
        check_specs=[
            dg.AssetCheckSpec(name, asset=key["model_evaluation"], blocking=True)
            for name in check_names(spec)
        ],
    )
    def model_evaluation(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, platform: PlatformResource
    ) -> dg.MaterializeResult:
        version = str(latest_metadata(context.instance, key["model"])["model_version"])
        from ml_platform.training import registry  # MLflow: imported by the steps that use it

        with registry.tracking(platform.settings, f"evaluating {spec.name} v{version}"):
            return steps.evaluate_candidate(spec, warehouse, platform.settings, version)

    @dg.asset(
        key=key["champion"],
        group_name=spec.name,
        deps=[key["model_evaluation"]],
        kinds={"mlflow"},
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=spec.monitoring.champion_max_age),
        description="The `champion` alias; moved only to a candidate that passed the gate.",
    )
    def champion(context: dg.AssetExecutionContext, platform: PlatformResource) -> dg.MaterializeResult:
        evaluation = latest_metadata(context.instance, key["model_evaluation"])
        actor = f"dagster run {context.run.run_id}"
        moved = "the champion alias shows whether it moved"  # the alias is set before its history
        from ml_platform.training import registry  # MLflow: imported by the steps that use it

        with registry.tracking(platform.settings, f"promoting a {spec.name} candidate", moved):
            return steps.promote(spec, platform.settings, evaluation, actor=actor)

    return [training_set, model, model_evaluation, champion]
