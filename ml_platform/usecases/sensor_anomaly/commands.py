"""The example's own commands, added to ``ml-platform``: its synthetic data and its drift story."""

from __future__ import annotations

import click

from ml_platform.cli_types import day
from ml_platform.settings import load_settings


@click.command("sensors", help="Seeded synthetic sensor readings with anomalies (and optional drift).")
@click.option("--sensors", default=10, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--days", default=14, show_default=True, type=click.IntRange(1, 3650))
@click.option("--start", default=None, help="First day (YYYY-MM-DD); default: DAYS days ending yesterday.")
@click.option("--interval-minutes", default=5, show_default=True, type=click.IntRange(1, 1440))
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--drift-from", default=None, help="Shift the distribution from this day on (YYYY-MM-DD).")
@click.option("--drift-shift", default=3.0, show_default=True, type=float)
def generate_sensors(sensors, days, start, interval_minutes, seed, drift_from, drift_shift) -> None:
    from ml_platform.home import prepare_home
    from ml_platform.usecases.sensor_anomaly.generate import SensorDataConfig, write_sensor_data
    from ml_platform.usecases.sensor_anomaly.spec import SPEC

    settings = load_settings()
    prepare_home(settings)
    config = SensorDataConfig(
        sensors=sensors,
        days=days,
        start=day(start),
        interval_minutes=interval_minutes,
        seed=seed,
        drift_from=day(drift_from),
        drift_shift=drift_shift,
    )
    landing = settings.landing_dir_for(SPEC.name)
    written = write_sensor_data(landing, config)
    click.echo(f"wrote {len(written)} file(s) to {landing}")


@click.command(
    "drift",
    help="On a running platform (`make demo`): land drifted readings and watch the platform retrain.",
)
@click.option("--timeout", default=900, show_default=True, help="Seconds to wait for each step.")
def drift_scenario(timeout: int) -> None:
    from ml_platform.usecases.scenarios import run_from_command
    from ml_platform.usecases.sensor_anomaly.scenario import run_drift_scenario

    run_from_command(run_drift_scenario, timeout)
