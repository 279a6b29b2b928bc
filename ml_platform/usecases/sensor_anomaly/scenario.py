"""`ml-platform scenario drift`: drifted data lands on a running platform, and the platform alone
notices, retrains, gates, promotes and switches serving, while traffic keeps flowing.

It needs a running home (``make demo``: Dagster daemon, serving, a champion). It only lands data
and watches; every decision is taken by the platform's sensors, automation and gate.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import httpx
import polars as pl

from ml_platform.metadata import describe_failed_check, failed_checks
from ml_platform.settings import Settings
from ml_platform.usecases.sensor_anomaly.generate import SensorDataConfig, redeliver_drifted

USE_CASE = "sensor_anomaly"
# What a failed gate check shows of itself: the rows it judged on and metric by metric figures.
EXPLAINING_FIELDS = (
    "champion_version",
    "compared_rows_from",
    "compared_rows_to",
    "compared_rows",
    "compared_positive_events",
    "value",
    "threshold",
    "comparison",
)


class ScenarioError(RuntimeError):
    pass


def auth_headers(settings: Settings) -> dict[str, str]:
    """What a client of this platform sends: the bearer token, when one is configured."""
    return {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}


@dataclass
class Traffic:
    """Clients calling the predict endpoint until stopped; every outcome is counted."""

    url: str
    sensors: list[str]
    headers: dict[str, str] = field(default_factory=dict)
    clients: int = 4
    outcomes: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.clients)
        ]

    def _run(self, index: int) -> None:
        with httpx.Client(timeout=30, headers=self.headers) as client:
            i = index
            while not self._stop.is_set():
                sensor = self.sensors[i % len(self.sensors)]
                i += 1
                try:
                    response = client.post(self.url, json={"sensor_id": sensor})
                    body = response.json()
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code}: {body}")
                    self.outcomes[(response.status_code, body.get("model_version"))] += 1
                except (httpx.HTTPError, ValueError) as exc:
                    self.failures.append(repr(exc))
                time.sleep(0.05)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


@dataclass
class ScenarioResult:
    champion_before: str
    champion_after: str
    drift_report: dict
    retrain_runs: int
    requests: int
    failed_requests: list[str]
    versions_served: set[str]
    steps: list[str]


def _wait(what: str, check: Callable[[], object], timeout_s: float, log: Callable[[str], None]):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(2)
    raise ScenarioError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _latest(instance: dg.DagsterInstance, name: str, after: float) -> dict | None:
    event = instance.get_latest_materialization_event(dg.AssetKey([USE_CASE, name]))
    if event is None or event.timestamp < after:
        return None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _retrain_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(tags={"ml_platform/trigger": "retrain"})))


def land_drifted_days(landing: Path, days: int = 2) -> list[Path]:
    """Re-deliver the last ``days`` landed days with shifted readings (new versions of the files)."""
    files = sorted(landing.glob("readings_????-??-??.csv"))[-days:]
    if len(files) < days:
        raise ScenarioError(f"{landing} holds fewer than {days} days of readings")
    sensors = pl.read_csv(files[-1], columns=["sensor_id"])["sensor_id"].n_unique()
    chosen = [dt.date.fromisoformat(path.stem.removeprefix("readings_")) for path in files]
    return redeliver_drifted(landing, chosen, SensorDataConfig(sensors=sensors))


def run_drift_scenario(
    settings: Settings, timeout_s: float = 900, log: Callable[[str], None] = print
) -> ScenarioResult:
    from ml_platform.training import registry

    steps: list[str] = []

    def step(message: str) -> None:
        steps.append(message)
        log(f"[{dt.datetime.now(dt.UTC):%H:%M:%S}] {message}")

    champion = registry.alias_ref(settings, USE_CASE, registry.CHAMPION)
    if champion is None:
        raise ScenarioError("no champion yet: start the platform with `make demo` first")
    predict_url = f"{settings.serve_url}/v1/models/{USE_CASE}/predict"
    try:
        served = httpx.get(f"{settings.serve_url}/v2/models/{USE_CASE}", timeout=5).json()["versions"]
    except (httpx.HTTPError, KeyError, ValueError):
        raise ScenarioError(
            f"serving does not answer at {settings.serve_url}: start `make demo` first"
        ) from None
    step(f"champion v{champion.version} is serving ({served}); starting traffic")
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        started = time.time()
        retrains_before = len(_retrain_runs(instance))
        sensors = [f"s-{i}" for i in range(1, 4)]
        with Traffic(predict_url, sensors, auth_headers(settings)) as traffic:
            landed = land_drifted_days(settings.landing_dir_for(USE_CASE))
            step(f"landed drifted versions of {', '.join(p.name for p in landed)}")
            report = _wait(
                "a drift report showing drift",
                lambda: (r := _latest(instance, "drift_report", started)) and r.get("dataset_drift") and r,
                timeout_s,
                log,
            )
            step(
                f"drift report {report['report_id']}: drift share {report['drift_share']:.2f}, "
                f"drifted {', '.join(report['drifted_columns'])}"
            )
            run = _wait(
                "a retrain run",
                lambda: (runs := _retrain_runs(instance)) and len(runs) > retrains_before and runs[0],
                timeout_s,
                log,
            )
            step(f"retrain run {run.run_id[:8]} started ({run.tags.get('ml_platform/reasons', '')})")
            finished = _wait(
                "the retrain run to finish",
                lambda: (r := instance.get_run_by_id(run.run_id)) and r.is_finished and r,
                timeout_s,
                log,
            )
            step(f"retrain run finished: {finished.status.value}")
            for check in failed_checks(instance, run.run_id):
                step(describe_failed_check(check, EXPLAINING_FIELDS))
            after = registry.alias_ref(settings, USE_CASE, registry.CHAMPION)
            if after.version != champion.version:
                _wait(
                    f"serving to switch to v{after.version}",
                    lambda: any(version == after.version for (_, version) in traffic.outcomes),
                    60,
                    log,
                )
                step(f"the gate promoted v{after.version}; serving switched from v{champion.version}")
            else:
                step(f"the gate kept v{champion.version}")
            time.sleep(3)
        retrains = len(_retrain_runs(instance)) - retrains_before
    result = ScenarioResult(
        champion_before=champion.version,
        champion_after=after.version,
        drift_report=report,
        retrain_runs=retrains,
        requests=sum(traffic.outcomes.values()),
        failed_requests=traffic.failures,
        versions_served={v for (_, v) in traffic.outcomes if v},
        steps=steps,
    )
    step(
        f"{result.requests} requests, {len(result.failed_requests)} failed, versions served "
        f"{sorted(result.versions_served)}, {result.retrain_runs} retrain run(s)"
    )
    return result
