"""What the shipped examples' scenarios share: clients calling the platform while a story unfolds,
waiting on what the platform alone does (runs, materializations, promotions), and the result.

A scenario only lands data, posts labels and watches; every decision is the platform's.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
import httpx

from ml_platform.metadata import describe_failed_check, failed_checks
from ml_platform.settings import Settings

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
    """Clients asking for predictions by entity until stopped; every outcome is counted.

    A steady trickle (at most ``clients / pause_s`` requests a second) shows a model switch in tens
    of answers without taking a core from the platform it watches (four clients pausing 50 ms kept
    a replica and the proxy at 70% of a core, and the scenario's runs waited for CPU)."""

    url: str
    entity: str
    ids: list[str]
    headers: dict[str, str] = field(default_factory=dict)
    clients: int = 2
    pause_s: float = 0.1
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
                entity = self.ids[i % len(self.ids)]
                i += 1
                try:
                    response = client.post(self.url, json={self.entity: entity})
                    body = response.json()
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code}: {body}")
                    self.outcomes[(response.status_code, body.get("model_version"))] += 1
                except (httpx.HTTPError, ValueError) as exc:
                    self.failures.append(repr(exc))
                time.sleep(self.pause_s)

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
    trigger: dict  # the metadata of what made the platform retrain (a drift report, live performance)
    retrain_runs: int
    requests: int
    failed_requests: list[str]
    versions_served: set[str]
    steps: list[str]


def wait(what: str, check: Callable[[], object], timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(2)
    raise ScenarioError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def latest(instance: dg.DagsterInstance, use_case: str, name: str, after: float) -> dict | None:
    """The metadata of ``use_case/name``'s latest materialization after ``after`` (epoch s)."""
    event = instance.get_latest_materialization_event(dg.AssetKey([use_case, name]))
    if event is None or event.timestamp < after:
        return None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def retrain_runs(instance: dg.DagsterInstance, use_case: str) -> list[dg.DagsterRun]:
    tags = {"ml_platform/trigger": "retrain", "ml_platform/use_case": use_case}
    return list(instance.get_runs(dg.RunsFilter(tags=tags)))


class Story:
    """Numbered, timestamped steps as the scenario prints them."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log, self.steps = log, []

    def __call__(self, message: str) -> None:
        self.steps.append(message)
        self.log(f"[{dt.datetime.now(dt.UTC):%H:%M:%S}] {message}")


def retrain_and_promotion(
    instance: dg.DagsterInstance,
    settings: Settings,
    use_case: str,
    champion: str,
    retrains_before: int,
    traffic: Traffic,
    step: Story,
    timeout_s: float,
) -> str:
    """Wait for the platform's retrain run, tell how it went and, when the gate promoted its
    candidate, for serving to answer with it; returns the champion's version afterwards."""
    from ml_platform.training import registry

    run = wait(
        "a retrain run",
        lambda: (runs := retrain_runs(instance, use_case)) and len(runs) > retrains_before and runs[0],
        timeout_s,
    )
    step(f"retrain run {run.run_id[:8]} started ({run.tags.get('ml_platform/reasons', '')})")
    finished = wait(
        "the retrain run to finish",
        lambda: (r := instance.get_run_by_id(run.run_id)) and r.is_finished and r,
        timeout_s,
    )
    step(f"retrain run finished: {finished.status.value}")
    for check in failed_checks(instance, run.run_id):
        step(describe_failed_check(check, EXPLAINING_FIELDS))
    after = registry.alias_ref(settings, use_case, registry.CHAMPION)
    if after.version != champion:
        wait(
            f"serving to switch to v{after.version}",
            lambda: any(version == after.version for (_, version) in traffic.outcomes),
            60,
        )
        step(f"the gate promoted v{after.version}; serving switched from v{champion}")
    else:
        step(f"the gate kept v{champion}")
    return after.version


def serving_champion(settings: Settings, use_case: str) -> tuple[str, list[str]]:
    """The use case's champion version and the versions serving answers with; a ScenarioError
    saying what to start when either is missing."""
    from ml_platform.training import registry

    champion = registry.alias_ref(settings, use_case, registry.CHAMPION)
    if champion is None:
        raise ScenarioError(f"no {use_case} champion yet: start the platform with `make demo` first")
    try:
        served = httpx.get(f"{settings.serve_url}/v2/models/{use_case}", timeout=5).json()["versions"]
    except (httpx.HTTPError, KeyError, ValueError):
        raise ScenarioError(
            f"serving does not answer at {settings.serve_url}: start `make demo` first"
        ) from None
    return champion.version, served


def finish(
    step: Story, traffic: Traffic, champion: str, after: str, trigger: dict, retrains: int
) -> ScenarioResult:
    """The story's outcome, also told as its last step."""
    result = ScenarioResult(
        champion_before=champion,
        champion_after=after,
        trigger=trigger,
        retrain_runs=retrains,
        requests=sum(traffic.outcomes.values()),
        failed_requests=traffic.failures,
        versions_served={v for (_, v) in traffic.outcomes if v},
        steps=step.steps,
    )
    step(
        f"{result.requests} requests, {len(result.failed_requests)} failed, versions served "
        f"{sorted(result.versions_served)}, {result.retrain_runs} retrain run(s)"
    )
    return result


def run_from_command(run: Callable[..., ScenarioResult], timeout_s: float) -> None:
    """A scenario as a command: its steps printed, a ScenarioError or a failed request an error."""
    import click

    from ml_platform.settings import load_settings

    try:
        result = run(load_settings(), timeout_s=timeout_s, log=click.echo)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from None
    if result.failed_requests:
        raise click.ClickException(
            f"{len(result.failed_requests)} request(s) failed: {result.failed_requests[:3]}"
        )
