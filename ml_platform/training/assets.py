"""Training assets per use case: training set -> candidate model (tuned) -> held-out evaluation
(the gate) -> champion alias, declared to Dagster; what each does is in ``steps``."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from ml_platform.resources.handoffs import HANDOFFS
from ml_platform.resources.platform import WAREHOUSE_POOL, PlatformResource
from ml_platform.spec import UseCaseSpec
from ml_platform.training import steps
from ml_platform.training.gate import check_names
from ml_platform.training.handoffs import Candidate, Champion, Evaluation, TrainingSetIdentity


def build_training_assets(spec: UseCaseSpec) -> list[dg.AssetsDefinition]:
    names = ("features", "raw_labels", "training_set", "model", "model_evaluation", "champion")
    key = {name: dg.AssetKey([spec.name, name]) for name in names}

    @dg.asset(
        key=key["training_set"],
        group_name=spec.name,
        deps=[key["features"], dg.AssetKey([spec.name, spec.staged_name]), key["raw_labels"]],
        pool=WAREHOUSE_POOL,
        kinds={"polars", "duckdb"},
        io_manager_key=HANDOFFS,
        description=(
            f"{steps.window_text(spec)} of {spec.table} with point-in-time features, labelled, "
            "split by time into train / validation / test."
        ),
    )
    def training_set(
        warehouse: DuckDBResource, platform: PlatformResource
    ) -> dg.MaterializeResult[TrainingSetIdentity]:
        return steps.write_training_set(spec, warehouse, platform.settings)

    @dg.asset(
        key=key["model"],
        group_name=spec.name,
        ins={"training_set": dg.AssetIn(key["training_set"])},
        pool=WAREHOUSE_POOL,
        kinds={"scikitlearn", "mlflow"},
        io_manager_key=HANDOFFS,
        code_version=steps.git_commit()[:12],
        description="A candidate: searched, fit on train, chosen on validation, registered in MLflow.",
    )
    def model(
        context: dg.AssetExecutionContext,
        training_set: TrainingSetIdentity,
        warehouse: DuckDBResource,
        platform: PlatformResource,
    ) -> dg.MaterializeResult[Candidate]:
        run = steps.RunInfo(context.run.run_id, context.assets_def.code_versions_by_key[key["model"]] or "")
        from ml_platform.training import registry  # MLflow: imported by the steps that use it

        with registry.tracking(platform.settings, f"training {spec.name}"):
            return steps.train_candidate(spec, warehouse, platform.settings, training_set, run)

    @dg.asset(
        key=key["model_evaluation"],
        group_name=spec.name,
        ins={"model": dg.AssetIn(key["model"])},
        pool=WAREHOUSE_POOL,
        kinds={"mlflow"},
        io_manager_key=HANDOFFS,
        dagster_type=Evaluation,  # not from the annotation: the checks make the op's outputs a tuple
        description="Held-out metrics (overall, per slice), behavioural tests, latency and size; the gate.",
        check_specs=[
            dg.AssetCheckSpec(name, asset=key["model_evaluation"], blocking=True)
            for name in check_names(spec)
        ],
    )
    def model_evaluation(
        model: Candidate, warehouse: DuckDBResource, platform: PlatformResource
    ) -> dg.MaterializeResult:
        from ml_platform.training import registry  # MLflow: imported by the steps that use it

        with registry.tracking(platform.settings, f"evaluating {spec.name} v{model.version}"):
            return steps.evaluate_candidate(spec, warehouse, platform.settings, model)

    @dg.asset(
        key=key["champion"],
        group_name=spec.name,
        ins={"model_evaluation": dg.AssetIn(key["model_evaluation"])},
        io_manager_key=HANDOFFS,
        kinds={"mlflow"},
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=spec.monitoring.champion_max_age),
        description="The `champion` alias; moved only to a candidate that passed the gate.",
    )
    def champion(
        context: dg.AssetExecutionContext, model_evaluation: Evaluation, platform: PlatformResource
    ) -> dg.MaterializeResult[Champion]:
        actor = f"dagster run {context.run.run_id}"
        moved = "the champion alias shows whether it moved"  # the alias is set before its history
        from ml_platform.training import registry  # MLflow: imported by the steps that use it

        with registry.tracking(platform.settings, f"promoting a {spec.name} candidate", moved):
            return steps.promote(spec, platform.settings, model_evaluation, actor=actor)

    return [training_set, model, model_evaluation, champion]
