"""The ``ml-platform`` command line."""

from __future__ import annotations

import signal
import sys
import threading

import click

from ml_platform.settings import SettingsError, load_settings
from ml_platform.usecases.card_fraud import commands as fraud_commands
from ml_platform.usecases.sensor_anomaly import commands as example_commands


def _use_case(name: str):
    """The named use case's spec, or a message naming what is known (no traceback)."""
    from ml_platform.spec_file import UseCaseError
    from ml_platform.usecases import get_use_case

    try:
        return get_use_case(name)
    except (KeyError, UseCaseError) as error:
        raise click.ClickException(str(error).strip('"')) from None


def _found_use_cases(settings) -> dict:
    """Every use case found for ``settings``, or a message naming the spec's mistake."""
    from ml_platform.spec_file import UseCaseError
    from ml_platform.usecases import use_cases

    try:
        return use_cases(settings)
    except UseCaseError as error:
        raise click.ClickException(str(error)) from None


class _Commands(click.Group):
    """Every command: a setting that cannot be used is an error message, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SettingsError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_Commands, help="ml_platform: an end-to-end ML platform on Dagster, MLflow and Ray Serve.")
def main() -> None:
    pass


@main.command(
    help="Create the home: folders, Dagster's instance (DAGSTER_HOME) with its pools, and dbt models."
)
def init() -> None:
    from ml_platform.home import prepare_home
    from ml_platform.validation.dbt_assets import prepare_dbt_project
    from ml_platform.validation.dbt_runner import DbtCommandError

    settings = load_settings()
    prepare_home(settings)
    found = _found_use_cases(settings)
    try:
        prepare_dbt_project(found.values())
    except DbtCommandError as error:  # a model written by hand that dbt cannot parse, say
        raise click.ClickException(str(error)) from None
    click.echo(
        f"home {settings.home} ready (DAGSTER_HOME {settings.dagster_home}); use cases: {', '.join(found)}"
    )


@main.command("use-cases", help="List the use cases found (shipped, ML_PLATFORM_USE_CASES, entry points).")
def list_use_cases() -> None:
    from ml_platform.usecases import origins

    settings = load_settings()
    found = _found_use_cases(settings)
    where = origins(settings)
    for name, spec in found.items():
        click.echo(f"{name}\t{where[name]}\t{spec.description}")


@main.command(help="Each part of the platform: its backend, whether it answers, its version.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per part, a line each.")
def status(as_json: bool) -> None:
    import json

    from ml_platform.status import platform_status, render

    settings = load_settings()
    parts = platform_status(settings, list(_found_use_cases(settings)))
    if as_json:
        for part in parts:
            click.echo(json.dumps(part.as_dict()))
    else:
        click.echo(render(parts))
    if down := [p for p in parts if p.failed]:
        raise click.ClickException(
            "required part(s) down: " + "; ".join(f"{p.part} ({p.backend}): {p.detail}" for p in down)
        )


@main.group(help="Generate demo data into the landing zone.")
def generate() -> None:
    pass


generate.add_command(example_commands.generate_sensors)
generate.add_command(fraud_commands.generate_payments)


@main.group(help="Stories told on a running platform (`make demo`): data lands, the platform acts.")
def scenario() -> None:
    pass


scenario.add_command(example_commands.drift_scenario)
scenario.add_command(fraud_commands.concept_drift_scenario)


@main.command(help="Serve every use case's champion with Ray Serve until Ctrl-C.")
@click.option("--detach", is_flag=True, help="Deploy and return, leaving an existing cluster running.")
def serve(detach: bool) -> None:
    from ml_platform.serving.cluster import cluster_address, start_local_cluster, stop_local_cluster
    from ml_platform.serving.deploy import autoscaling_config, deploy, own_deployments

    settings = load_settings()
    # A mistake in either is said before a cluster is started.
    autoscaling_config(settings)
    own_deployments(settings)
    stop = threading.Event()

    def stop_on_signals() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())

    stop_on_signals()
    cluster = None
    if cluster_address(settings) is None:
        if detach:
            raise click.ClickException(
                "--detach needs a running cluster (RAY_ADDRESS or `ml-platform serve`)"
            )
        click.echo("starting a local Ray head (127.0.0.1, dashboard off)...")
        cluster = start_local_cluster(settings)
    try:
        try:
            models = deploy(settings)
        except SettingsError:
            raise  # names its variable; shown as one line
        except Exception as error:  # Ray's own errors: say what failed, without a traceback
            raise click.ClickException(
                f"serving did not start on {settings.serve_url}: {type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''} (a busy machine can delay Ray "
                f"Serve's proxy past its start timeout; try again; Ray's log: {settings.run_dir / 'ray.log'})"
            ) from None
        # Connecting as a Ray driver replaced our signal handlers with Ray's (which exit at once,
        # skipping the cleanup below): take them back.
        stop_on_signals()
        served = ", ".join(f"{name} v{ref.version}" for name, ref in models.items()) or "no champion yet"
        grpc = f" and gRPC {settings.grpc_address}" if settings.grpc_port else ""
        click.echo(f"serving on {settings.serve_url}{grpc} ({served})", err=False)
        sys.stdout.flush()
        if not detach:
            while not stop.wait(1):
                if cluster is not None and cluster.poll() is not None:
                    raise click.ClickException("the Ray head exited; see the home's run/ray.log")
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            stop_local_cluster(settings, cluster)


def _announce_move(settings, use_case: str, move: dict) -> None:
    """Show a hand-made move in Dagster (a materialization of the champion asset) and wait until
    serving answers with the new champion."""
    import dagster as dg

    from ml_platform.serving.cluster import cluster_address

    if move["alias"] == "champion" and settings.dagster_home.is_dir():
        with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    asset_key=[use_case, "champion"],
                    metadata={
                        "champion_version": move["to_version"],
                        "previous_version": move["from_version"] or "",
                        "moved": move["changed"],
                        "by": move["by"],
                        "reason": move["reason"],
                    },
                )
            )
    # Replicas follow the registry's aliases by themselves; redeploying from this shell would hand
    # them this shell's settings (a token not exported here would be dropped).
    if move["changed"] and move["alias"] == "champion" and cluster_address(settings) is not None:
        from ml_platform.serving.deploy import wait_until_serving

        wait_until_serving(settings, use_case, move["to_version"])
        click.echo(f"serving v{move['to_version']}")


def _actor() -> str:
    import getpass

    return f"ml-platform cli ({getpass.getuser()})"


@main.command(help="Point an alias (default: champion) at a model version, recorded like the gate's moves.")
@click.argument("use_case")
@click.option("--version", "version", default=None, help="Default: the newest version that passed the gate.")
@click.option("--alias", type=click.Choice(["champion", "challenger"]), default="champion", show_default=True)
@click.option("--reason", default="promoted by hand", show_default=True)
def promote(use_case: str, version: str | None, alias: str, reason: str) -> None:
    from ml_platform.training import registry
    from ml_platform.training.steps import GATE_PASSED_TAG

    _use_case(use_case)
    settings = load_settings()
    client = registry.configure(settings)
    if version is None:
        passed = [
            v
            for v in client.search_model_versions(f"name='{use_case}'")
            if v.tags.get(GATE_PASSED_TAG) == "true"
        ]
        if not passed:
            raise click.ClickException(f"{use_case}: no version has passed the gate; name one with --version")
        version = str(max(int(v.version) for v in passed))
    move = registry.move_alias(settings, use_case, version, alias, reason, _actor())
    click.echo(f"{use_case}: {alias} -> v{move['to_version']} (was {move['from_version']})")
    _announce_move(settings, use_case, move)


@main.command(help="Serve the previous champion again (or --version N), recorded like every move.")
@click.argument("use_case")
@click.option("--version", "version", default=None, help="Default: the version the `previous` alias names.")
@click.option("--reason", default="rolled back by hand", show_default=True)
def rollback(use_case: str, version: str | None, reason: str) -> None:
    from ml_platform.training import registry

    _use_case(use_case)
    settings = load_settings()
    try:
        if version is None:
            move = registry.rollback(settings, use_case, _actor(), reason)
        else:
            move = registry.move_alias(settings, use_case, version, registry.CHAMPION, reason, _actor())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{use_case}: champion -> v{move['to_version']} (was {move['from_version']})")
    _announce_move(settings, use_case, move)


@main.command(help="Send a share of traffic to the challenger (canary), or score it in the shadow.")
@click.argument("use_case")
@click.option(
    "--share", type=click.FloatRange(0, 1), default=None, help="Share of requests the challenger answers."
)
@click.option(
    "--shadow/--no-shadow", default=False, help="Challenger scores every request off the response path."
)
@click.option("--version", "version", default=None, help="Make this version the challenger first.")
def canary(use_case: str, share: float | None, shadow: bool, version: str | None) -> None:
    from ml_platform.serving.app import CANARY_TAG, SHADOW_TAG
    from ml_platform.training import registry

    _use_case(use_case)
    settings = load_settings()
    client = registry.configure(settings)
    if version is not None:
        registry.move_alias(settings, use_case, version, registry.CHALLENGER, "canary by hand", _actor())
    if registry.alias_ref(settings, use_case, registry.CHALLENGER) is None and (shadow or share):
        raise click.ClickException(f"{use_case}: no challenger; name one with --version")
    share = 0.0 if share is None else share
    client.set_registered_model_tag(use_case, CANARY_TAG, str(share))
    client.set_registered_model_tag(use_case, SHADOW_TAG, str(shadow).lower())
    state = "shadow" if shadow else (f"canary at {share:.0%}" if share else "ended")
    click.echo(f"{use_case}: challenger {state} (replicas apply it within seconds)")


@main.command(help="Consume events from MQTT into the landing zone and the online store until Ctrl-C.")
@click.option("--use-case", required=True, help="The use case whose events the topics carry.")
@click.option(
    "--topic",
    "topics",
    multiple=True,
    help="Repeatable. Default: ml_platform/<use case>/events and the spec's topic_aliases.",
)
@click.option("--client-id", default=None, help="Persistent session id; default: ml_platform-<use case>")
def consume(use_case: str, topics: tuple[str, ...], client_id: str | None) -> None:
    from ml_platform.serving.mqtt import MqttConsumer

    settings = load_settings()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    consumer = MqttConsumer(settings, _use_case(use_case), client_id or f"ml_platform-{use_case}", topics)
    consumer.start()
    click.echo(f"consuming {', '.join(consumer.topics)} from {settings.mqtt_url}")
    stop.wait()
    consumer.stop()
    click.echo(f"stopped after {consumer.processed} message(s)")


@main.command(help="Set up the home, generate data, start Dagster, MLflow and serving; Ctrl-C stops all.")
@click.option("--dagster-port", default=3000, show_default=True, type=int)
@click.option("--mlflow-port", default=5000, show_default=True, type=int)
def demo(dagster_port: int, mlflow_port: int) -> None:
    from ml_platform.demo import run_demo

    sys.exit(run_demo(load_settings(), dagster_port=dagster_port, mlflow_port=mlflow_port))


if __name__ == "__main__":
    main()
