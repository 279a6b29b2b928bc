"""The example's own command, added to ``ml-platform generate``: its synthetic payments."""

from __future__ import annotations

import click

from ml_platform.cli_types import day
from ml_platform.settings import load_settings


@click.command(
    "payments", help="Seeded synthetic card payments and chargebacks (and optional concept drift)."
)
@click.option("--cards", default=300, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--days", default=21, show_default=True, type=click.IntRange(1, 3650))
@click.option("--start", default=None, help="First day (YYYY-MM-DD); default: DAYS days ending yesterday.")
@click.option("--seed", default=7, show_default=True, type=int)
@click.option(
    "--concept-drift-from",
    default=None,
    help="From this day (YYYY-MM-DD) frauds look different while payments do not.",
)
def generate_payments(cards, days, start, seed, concept_drift_from) -> None:
    from ml_platform.home import prepare_home
    from ml_platform.usecases.card_fraud.generate import PaymentsConfig, write_payments
    from ml_platform.usecases.card_fraud.spec import SPEC

    settings = load_settings()
    prepare_home(settings)
    config = PaymentsConfig(
        cards=cards, days=days, start=day(start), seed=seed, concept_drift_from=day(concept_drift_from)
    )
    landing = settings.landing_dir_for(SPEC.name)
    written = write_payments(landing, config)
    click.echo(f"wrote {len(written)} file(s) to {landing}")


@click.command(
    "concept-drift",
    help=(
        "On a running platform (`make demo`): replay the days since the payments history ends, with "
        "frauds of a new kind, post their chargebacks, and watch the platform retrain."
    ),
)
@click.option("--timeout", default=900, show_default=True, help="Seconds to wait for each step.")
def concept_drift_scenario(timeout: int) -> None:
    from ml_platform.usecases.card_fraud.scenario import run_concept_drift_scenario
    from ml_platform.usecases.scenarios import run_from_command

    run_from_command(run_concept_drift_scenario, timeout)
