"""`ml-platform scenario concept-drift`: frauds change while payments do not, the chargebacks that
say so arrive days later, and the platform alone sees its live performance fall, retrains, gates,
promotes and switches serving, while traffic keeps flowing.

It needs a running home whose payments history ends some days ago (``make demo`` lands one ending
15 days ago). It replays the days since, day by day: each payment is scored as it happens (sent
with its predict request, so it is scored on the card's history) and the day's export lands in
the landing zone; frauds follow a new pattern from the first replayed day (the generator's
concept-drift mode). Then the chargebacks of every payment older than the label lateness are
posted to ``/v1/labels/card_fraud``. Every decision after that is the platform's.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd
import polars as pl

from ml_platform.monitoring.performance import missed_live_slos
from ml_platform.settings import Settings
from ml_platform.usecases.card_fraud.generate import (
    PaymentsConfig,
    card_ids,
    generate_day,
    labelled_days,
)
from ml_platform.usecases.card_fraud.spec import SPEC
from ml_platform.usecases.scenarios import (
    ScenarioError,
    ScenarioResult,
    Story,
    Traffic,
    auth_headers,
    finish,
    latest,
    retrain_and_promotion,
    retrain_runs,
    serving_champion,
    wait,
)
from ml_platform.usecases.synthetic import landed_anchor, write_csv_atomically

USE_CASE = SPEC.name
MIN_REPLAYED_DAYS = 7
SCORED_PER_REQUEST = 500


def landed_history(landing: Path) -> tuple[list[dt.date], int]:
    """The days of landed payments and how many cards they hold (the highest card number)."""
    files = sorted(landing.glob("payments_????-??-??.csv"))
    if not files:
        return [], 0
    ids = pl.concat([pl.read_csv(f, columns=["card_id"]) for f in files[-3:]])["card_id"]
    cards = int(ids.str.strip_prefix("c-").cast(pl.Int64).max())
    return [dt.date.fromisoformat(f.stem.removeprefix("payments_")) for f in files], cards


def _events(frame: pd.DataFrame) -> list[dict]:
    """The day's payments as a payments system sends them (no label)."""
    events = frame.drop(columns="fraud").to_dict("records")
    for event in events:
        event["foreign"] = event["foreign"] == "true"
    return events


def _post(client: httpx.Client, url: str, body: dict, what: str, ok: int) -> httpx.Response:
    response = client.post(url, json=body)
    if response.status_code != ok:
        raise ScenarioError(f"{what}: {url} answered {response.status_code}: {response.text[:300]}")
    return response


def run_concept_drift_scenario(
    settings: Settings, timeout_s: float = 900, log: Callable[[str], None] = print
) -> ScenarioResult:
    step = Story(log)
    champion, served = serving_champion(settings, USE_CASE)
    predict_url = f"{settings.serve_url}/v1/models/{USE_CASE}/predict"
    landing = settings.landing_dir_for(USE_CASE)
    history, cards = landed_history(landing)
    today = dt.datetime.now(dt.UTC).date()
    replay = (
        [history[-1] + dt.timedelta(days=i) for i in range(1, (today - history[-1]).days)] if history else []
    )
    if len(replay) < MIN_REPLAYED_DAYS:
        raise ScenarioError(
            f"the payments history in {landing} ends on {history[-1] if history else 'no day'}: the scenario "
            f"replays the days since, and needs at least {MIN_REPLAYED_DAYS} of them (`make demo` lands a "
            "history ending 15 days ago)"
        )
    config = PaymentsConfig(cards=cards, anchor=landed_anchor(landing), concept_drift_from=replay[0])
    lateness = SPEC.monitoring.label_lateness
    headers = auth_headers(settings)
    step(f"champion v{champion} is serving ({served}); starting traffic")
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        started = time.time()
        retrains_before = len(retrain_runs(instance, USE_CASE))
        with (
            Traffic(predict_url, SPEC.entity, card_ids(cards)[:20], headers) as traffic,
            httpx.Client(timeout=120, headers=headers) as client,
        ):
            step(
                f"replaying {replay[0]}...{replay[-1]}: from {replay[0]} on, frauds are small payments at "
                "home, at groceries and fuel stations, at night; what payments look like does not change"
            )
            scored = 0
            for day in replay:
                frame = generate_day(day, config)
                events = _events(frame)
                for i in range(0, len(events), SCORED_PER_REQUEST):
                    chunk = events[i : i + SCORED_PER_REQUEST]
                    _post(client, predict_url, {"instances": chunk}, f"scoring the payments of {day}", 200)
                scored += len(events)
                write_csv_atomically(frame.drop(columns="fraud"), landing / f"payments_{day.isoformat()}.csv")
            step(f"scored {scored} payments as they happened; landed each day's export (payments_<day>.csv)")
            # Chargebacks take days; the exports reach the features well before (the landing
            # sensor ingests each day, automation stages and computes features).
            features = dg.AssetKey([USE_CASE, "features"])
            days = {d.isoformat() for d in replay}
            wait(
                "the replayed days' features",
                lambda: days <= instance.get_materialized_partitions(features),
                timeout_s,
            )
            step(f"the platform ingested the {len(replay)} days and computed their features")

            # Chargebacks arrive late: for every payment older than the lateness, history included.
            known = dt.datetime.now(dt.UTC) - lateness
            covered = labelled_days(landing / "labels")
            due = [d for d in (*history, *replay) if d not in covered and d <= known.date()]
            frauds = pd.concat([generate_day(d, config).query("fraud == 1") for d in due])
            labels = [
                {SPEC.entity: row.card_id, SPEC.timestamp: row.at, "fraud": 1}
                for row in frauds.itertuples()
                if dt.datetime.fromisoformat(row.at) <= known
            ]
            posted = _post(
                client,
                f"{settings.serve_url}/v1/labels/{USE_CASE}",
                {"labels": labels},
                "posting chargebacks",
                202,
            ).json()
            step(
                f"chargebacks arrived for payments up to {known:%Y-%m-%d %H:%M} "
                f"({lateness.total_seconds() / 86_400:g} days ago): "
                f"{posted['accepted']} frauds posted to /v1/labels/{USE_CASE}"
            )

            def below_slo() -> dict | None:
                found = latest(instance, USE_CASE, "live_performance", started)
                if not found:
                    return None
                live = {k.split("/", 1)[1]: v for k, v in found.items() if k.startswith("live/")}
                return (
                    {**live, "missed": missed_live_slos(SPEC, live)} if missed_live_slos(SPEC, live) else None
                )

            live = wait("live performance below its SLO", below_slo, timeout_s)
            step(
                "live performance below its SLO: "
                + ", ".join(
                    f"{m['metric']} {m['live']:.3f} (minimum {m['minimum']})" if "minimum" in m else str(m)
                    for m in live["missed"]
                )
                + f" on {live['rows']:.0f} labelled payments"
            )
            after = retrain_and_promotion(
                instance, settings, USE_CASE, champion, retrains_before, traffic, step, timeout_s
            )
            time.sleep(3)
        retrains = len(retrain_runs(instance, USE_CASE)) - retrains_before
    return finish(step, traffic, champion, after, live, retrains)
