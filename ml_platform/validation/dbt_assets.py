"""The dbt project's models as Dagster assets; its tests become asset checks."""

import contextlib
import functools
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtProject, dbt_assets
from dagster_dbt.asset_utils import get_updated_cli_invocation_params_for_context
from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage
from dagster_duckdb import DuckDBResource

from ml_platform.automation.conditions import follow_upstream
from ml_platform.locks import file_lock
from ml_platform.partitions import grain, partition_grains, time_partitions
from ml_platform.resources.platform import WAREHOUSE_POOL, WarehouseResource
from ml_platform.settings import DBT_PROJECT_DIR
from ml_platform.spec import UseCaseSpec
from ml_platform.upstream import unbuilt_partitions
from ml_platform.validation.dbt_runner import invoke_dbt
from ml_platform.validation.staging import PARTITION_ENV, model_paths, write_staging_models

DBT_PROJECT = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
PARTIAL_PARSE = "partial_parse.msgpack"


class UseCaseTranslator(DagsterDbtTranslator):
    """A model is the asset ``<schema>/<table>`` (its use case and relation name), in group ``<schema>``."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "model":
            table = dbt_resource_props.get("alias") or dbt_resource_props["name"]
            return dg.AssetKey([dbt_resource_props["schema"], table])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return dbt_resource_props["schema"]

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition | None:
        # Staging follows its raw partitions as they land (old days included).
        return follow_upstream()


def _sources_newer_than(manifest: Path) -> bool:
    built = manifest.stat().st_mtime
    return (
        any(
            p.stat().st_mtime > built
            for folder in ("models", "macros", "tests")
            for p in (DBT_PROJECT_DIR / folder).rglob("*")
            if p.is_file()
        )
        or (DBT_PROJECT_DIR / "dbt_project.yml").stat().st_mtime > built
    )


def prepare_dbt_project(specs: Iterable[UseCaseSpec]) -> dict[str, Any]:
    """Write the use cases' generated staging models, parse the project when its manifest is
    missing or older than its files, and return the manifest.

    All of it under one lock on the project: processes loading the definitions together (code
    server, daemon, a CLI run) would otherwise parse at once, or read a manifest dbt is rewriting.
    """
    target = DBT_PROJECT_DIR / "target"
    with file_lock(target / ".prepare.lock"):
        write_staging_models(list(specs))
        manifest = DBT_PROJECT.manifest_path
        if not manifest.exists() or _sources_newer_than(manifest):
            invoke_dbt(["--quiet", "parse"], target).raise_on_error()
        return _read_manifest(manifest)


def _read_manifest(path: Path) -> dict[str, Any]:
    """The manifest as it is on disk now. (dagster-dbt caches a manifest by its path for the
    life of the process; a spec added since would be missing from the definitions.)"""
    return _parsed(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _parsed(path: Path, mtime_ns: int) -> dict[str, Any]:
    return json.loads(path.read_text())


def partition_env(context: dg.AssetExecutionContext, spec: UseCaseSpec) -> dict[str, str]:
    """This run's first and last grain (days, or hours), as the generated staging models read them."""
    first, last = partition_grains(context, spec)
    unit = grain(spec)
    low, high = PARTITION_ENV
    return {low: unit.text(first), high: unit.text(last)}


@contextlib.contextmanager
def home_partial_parse(warehouse: WarehouseResource, run_id: str) -> Iterator[Path]:
    """A dbt target folder for one invocation in Dagster run ``run_id``, seeded with the state of
    dbt's last parse for this home, which is kept after a successful invocation. dbt parses the
    whole project again when the profile changes, and the profile names the home's warehouse: the
    project's own ``target/partial_parse.msgpack`` (what dagster-dbt would copy) is another home's.
    """
    kept = Path(warehouse.database).with_name("dbt_partial_parse.msgpack")
    target = DBT_PROJECT_DIR / "target" / f"run-{run_id[:8]}-{uuid.uuid4().hex[:8]}"
    target.mkdir(parents=True)
    if kept.exists():
        shutil.copyfile(kept, target / PARTIAL_PARSE)
    yield target
    if (target / PARTIAL_PARSE).exists():
        shutil.copyfile(target / PARTIAL_PARSE, kept.with_suffix(".tmp"))
        os.replace(kept.with_suffix(".tmp"), kept)


def table_metadata(warehouse: DuckDBResource, table: str) -> dict[str, object]:
    """Row count and column schema of a table dbt built, read through our own short connection.

    (dagster-dbt's fetch_column_metadata would open the file through the dbt adapter and keep it
    open in this process, holding DuckDB's single-writer lock.)
    """
    with warehouse.get_connection() as conn:
        columns = conn.sql(f"DESCRIBE {table}").fetchall()
        rows = conn.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    return {
        "dagster/row_count": rows,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name, str(dtype).lower()) for name, dtype, *_ in columns]
        ),
    }


def unbuilt_upstream(context: dg.AssetExecutionContext, specs: list[UseCaseSpec]) -> list[str]:
    """For each staging model of this run: its raw and quarantine partitions never materialized,
    each with the command that builds them (dbt alone would fail on a missing table, or stage
    the bad rows of days whose quarantine was never written)."""
    problems = []
    for spec in specs:
        staged = dg.AssetKey([spec.name, spec.staged_name])
        if staged in context.selected_asset_keys:
            upstream = [dg.AssetKey([spec.name, n]) for n in (spec.raw_name, spec.quarantine_name)]
            problems += unbuilt_partitions(context.instance, staged, upstream, context.partition_keys)
    return problems


def build_selected_models(
    context: dg.AssetExecutionContext, warehouse: DuckDBResource, target: Path
) -> Iterator[Any]:
    """``dbt build`` of the models and tests this step selected, in this process; dbt's results as
    Dagster outputs and check results, each model's with its table's row count and schema."""
    # The selection and the translation of dbt's events are dagster-dbt's own, as `dbt.cli` does them.
    params = get_updated_cli_invocation_params_for_context(
        context, manifest={}, dagster_dbt_translator=UseCaseTranslator()
    )
    indirect = ["--indirect-selection", params.indirect_selection] if params.indirect_selection else []
    build = invoke_dbt(
        ["build", *params.selection_args, *indirect],
        target,
        project_dir=Path(params.dbt_project.project_dir) if params.dbt_project else DBT_PROJECT_DIR,
    )
    for raw in build.events:
        message = DbtCoreCliEventMessage(raw_event=raw, event_history_metadata={})
        for event in message.to_default_asset_events(
            manifest=params.manifest,
            dagster_dbt_translator=params.dagster_dbt_translator,
            context=context,
            target_path=target,
            project=params.dbt_project,
        ):
            if isinstance(event, dg.Output):
                # A model's asset key is its schema and table (UseCaseTranslator).
                table = ".".join(context.asset_key_for_output(event.output_name).path)
                event = event.with_metadata({**event.metadata, **table_metadata(warehouse, table)})
            yield event
    if build.error:
        raise dg.Failure(build.error)


def build_dbt_assets(specs: list[UseCaseSpec]) -> list[dg.AssetsDefinition]:
    """The dbt models of each use case (its generated staging model and any written by hand), on
    the use case's own daily partitions: a use case from 2013 and one from 2025 each run dbt for
    their own days."""
    manifest = prepare_dbt_project(specs)
    return [_use_case_dbt_assets(manifest, spec) for spec in specs]


def _use_case_dbt_assets(manifest: dict[str, Any], spec: UseCaseSpec) -> dg.AssetsDefinition:
    specs = [spec]

    @dbt_assets(
        manifest=manifest,
        select=" ".join(model_paths(specs)),
        name=f"{spec.name}_dbt_models",
        project=DBT_PROJECT,
        dagster_dbt_translator=UseCaseTranslator(),
        partitions_def=time_partitions(spec),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
    )
    def dbt_models(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        # dbt reads the warehouse path from the environment (see dbt_project/profiles.yml).
        os.environ["ML_PLATFORM_WAREHOUSE"] = warehouse.database
        if problems := unbuilt_upstream(context, specs):
            raise dg.Failure("; ".join(problems))
        os.environ.update(partition_env(context, spec))
        with warehouse.exclusive(), home_partial_parse(warehouse, context.run.run_id) as target:
            yield from build_selected_models(context, warehouse, target)

    return dbt_models
