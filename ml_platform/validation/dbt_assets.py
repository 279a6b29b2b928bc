"""The dbt project's models as Dagster assets; its tests become asset checks."""

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from dagster_duckdb import DuckDBResource

from ml_platform.resources.platform import WAREHOUSE_POOL
from ml_platform.settings import DBT_PROJECT_DIR

DBT_PROJECT = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


class UseCaseTranslator(DagsterDbtTranslator):
    """A model in ``models/<use case>/`` is the asset ``<use case>/<model>`` in group ``<use case>``."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "model":
            return dg.AssetKey([dbt_resource_props["fqn"][1], dbt_resource_props["name"]])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return dbt_resource_props["fqn"][1]


def dbt_cli_resource() -> DbtCliResource:
    # dbt lives next to this interpreter; the venv need not be on PATH (dagster dev, daemon, CI).
    return DbtCliResource(
        project_dir=str(DBT_PROJECT_DIR),
        profiles_dir=str(DBT_PROJECT_DIR),
        dbt_executable=str(Path(sys.executable).with_name("dbt")),
    )


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


def ensure_manifest() -> Path:
    """Parse the dbt project when its manifest is missing or older than the project's files."""
    manifest = DBT_PROJECT.manifest_path
    if not manifest.exists() or _sources_newer_than(manifest):
        dbt_cli_resource().cli(["--quiet", "parse"], target_path=DBT_PROJECT_DIR / "target").wait()
    return manifest


def build_dbt_assets() -> dg.AssetsDefinition:
    @dbt_assets(
        manifest=ensure_manifest(),
        project=DBT_PROJECT,
        dagster_dbt_translator=UseCaseTranslator(),
        pool=WAREHOUSE_POOL,
    )
    def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: DuckDBResource):
        # dbt reads the warehouse path from the environment (see dbt_project/profiles.yml).
        os.environ["ML_PLATFORM_WAREHOUSE"] = warehouse.database
        yield from dbt.cli(["build"], context=context).stream()

    return dbt_models
