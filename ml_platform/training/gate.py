"""The gate: what a candidate must show on the test window before it may become champion.

The test window is the most recent labelled data (see ``dataset.build_training_set``): after
drift it is the drifted data, and the champion is scored on exactly the same rows. The gate's
checks are computed here as plain values; the ``model_evaluation`` asset reports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ml_platform.features.compute import EVENT_TIMESTAMP
from ml_platform.metadata import markdown_table
from ml_platform.spec import GateSpec, UseCaseSpec
from ml_platform.tasks import Task, selection_metric, task_of
from ml_platform.training.compare import Comparison, Scored, evidence, paired_differences
from ml_platform.training.dataset import LABEL, WINDOW

if TYPE_CHECKING:
    from typing import Any

NOT_WORSE = "not_worse_than_champion"
# A row scored alone and in a batch may differ in the last bits (a batched matrix product sums in
# another order); anything above this is a real difference.
ROUNDING = 1e-9
PER_SCOPE = "gate_per_scope"
BASELINE = "better_than_baseline"
# A 0 / 1 task is judged where it decides: precision and recall at the threshold it serves with.
# Ranking metrics alone (ROC-AUC, average precision) passed a model none of whose flags was right.
OPERATING_POINT = "gate_operating_point"
OPERATING_METRICS = ("precision", "recall")


@dataclass(frozen=True)
class GateCheck:
    name: str
    passed: bool
    metadata: dict[str, object]


@dataclass(frozen=True)
class GateResult:
    overall: dict[str, float]
    slices: dict[str, dict[str, float]]
    behaviour: dict[str, float]
    comparisons: list[Comparison]
    checks: list[GateCheck]
    compared_on: dict[str, object]
    # The task's tables beside the metrics (a classifier's calibration curve), by name.
    diagnostics: dict[str, list[dict[str, object]]]
    # Metrics per slice group and per entity (when the gate judges entities).
    scopes: dict[str, dict[str, float]]
    baseline: dict[str, float]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def check(self, name: str) -> GateCheck:
        return next(c for c in self.checks if c.name == name)


def own_floors(spec: UseCaseSpec) -> dict[str, float]:
    """The ``min_metrics`` judged each by a check of its own: on a 0/1 task, precision and recall
    are judged together at the served threshold, by ``gate_operating_point``."""
    together = OPERATING_METRICS if task_of(spec).binary_labels else ()
    return {m: floor for m, floor in spec.gate.min_metrics.items() if m not in together}


def check_names(spec: UseCaseSpec) -> list[str]:
    gate = spec.gate
    names = [f"gate_{m}" for m in (*own_floors(spec), *gate.max_metrics)]
    if task_of(spec).binary_labels:
        names.append(OPERATING_POINT)
    if gate.scope_min_metrics or gate.scope_max_metrics:
        names.append(PER_SCOPE)
    if gate.baseline is not None:
        names.append(BASELINE)
    return [*names, NOT_WORSE, "behaviour_noise", "behaviour_invariance"]


def operating_point_check(overall: dict[str, float], window: dict[str, object], gate: GateSpec) -> GateCheck:
    """Precision and recall at the served threshold: each at least its floor in `gate.min_metrics`,
    or above zero where the spec gives none; not judged on fewer than `min_positive_events`."""
    values = {m: overall.get(m, float("nan")) for m in OPERATING_METRICS}
    floors = {m: gate.min_metrics.get(m) for m in OPERATING_METRICS}
    metadata = {
        **values,
        **{f"minimum/{m}": "above 0" if floors[m] is None else floors[m] for m in OPERATING_METRICS},
        **window,
    }
    events = int(window.get("compared_positive_events", 0))
    if events < gate.min_positive_events:
        verdict = f"not judged: {events} positive event(s) < {gate.min_positive_events}"
        return GateCheck(OPERATING_POINT, True, {**metadata, "verdict": verdict})
    missed = [
        m for m in OPERATING_METRICS if not (values[m] > 0 if floors[m] is None else values[m] >= floors[m])
    ]
    verdict = f"below the floor: {', '.join(missed)}" if missed else "met"
    return GateCheck(OPERATING_POINT, not missed, {**metadata, "verdict": verdict})


def scope_misses(scopes: dict[str, dict[str, float]], spec: UseCaseSpec) -> list[dict[str, object]]:
    """Every judged scope's metric below its floor (or an error above its ceiling); a scope with
    too little evidence is not judged."""
    gate, missed = spec.gate, []
    for scope, metrics in scopes.items():
        if metrics["evidence"] < gate.min_positive_events:
            continue
        for name, floor in gate.scope_min_metrics.items():
            if metrics.get(name, float("-inf")) < floor:
                missed.append({"scope": scope, "metric": name, "value": metrics.get(name), "minimum": floor})
        for name, ceiling in gate.scope_max_metrics.items():
            if metrics.get(name, float("inf")) > ceiling:
                missed.append(
                    {"scope": scope, "metric": name, "value": metrics.get(name), "maximum": ceiling}
                )
    return missed


def baseline_check(
    task: Task, candidate: Scored, baseline: Scored, test: pl.DataFrame, spec: UseCaseSpec
) -> GateCheck:
    """The candidate at least as good as the baseline on the selection metric, same test rows; the
    interval of the difference is shown (a paired bootstrap, as for the champion)."""
    metric = selection_metric(spec)
    labels, events = test[LABEL].to_numpy(), test[WINDOW].to_numpy()
    diff = paired_differences(
        task,
        candidate,
        baseline,
        labels,
        task.resampling_groups(labels, events),
        (metric,),
        seed=spec.model.seed,
        confidence=spec.gate.confidence,
    )[metric]
    higher = task.metric(metric).higher_is_better
    ahead = diff.value if higher else -diff.value
    return GateCheck(
        BASELINE,
        bool(ahead >= 0),
        {
            "metric": metric,
            "candidate": diff.candidate,
            "baseline": diff.baseline,
            "difference": diff.value,
            "interval": f"[{diff.low:.4f}, {diff.high:.4f}]",
            "baseline_model": f"{spec.gate.baseline.algorithm} on "
            + (", ".join(spec.gate.baseline.features) or "every feature"),
        },
    )


def test_window(test: pl.DataFrame, task: Task) -> dict[str, object]:
    """The rows the gate judges on: their time window and, for 0 / 1 labels, how many positives
    they hold."""
    labels, events = test[LABEL].to_numpy(), test[WINDOW].to_numpy()
    window: dict[str, object] = {
        "compared_rows_from": str(test[EVENT_TIMESTAMP].min()),
        "compared_rows_to": str(test[EVENT_TIMESTAMP].max()),
        "compared_rows": len(test),
    }
    if task.binary_labels:
        window["compared_positive_rows"] = int(np.nansum(labels))
        window["compared_positive_events"] = evidence(task.resampling_groups(labels, events))
    return window


def comparison_metadata(
    compared: list[Comparison], window: dict[str, object], champion_version: str | None
) -> dict[str, object]:
    """Metric by metric, the champion against the candidate on the same rows, with the interval
    of their difference and the verdict; the overall figures also as numbers (plotted by the UI)."""
    overall = [c for c in compared if c.scope == "overall"]
    return {
        "champion_version": champion_version or "none",
        **window,
        "comparison": markdown_table([c.as_row() for c in compared]),
        "regressions": markdown_table([c.as_row() for c in compared if c.regression]),
        **{f"champion/{c.metric}": c.champion for c in overall},
        **{f"candidate/{c.metric}": c.candidate for c in overall},
        **{f"difference/{c.metric}": c.difference for c in overall},
    }


def judge(
    candidate: Any,
    champion: Any | None,
    champion_version: str | None,
    test: pl.DataFrame,
    spec: UseCaseSpec,
    train: pl.DataFrame | None = None,
) -> GateResult:
    """Every gate check of ``candidate`` on the test rows; ``champion`` (when there is one other
    than the candidate) and the spec's baseline (fit on ``train``) are scored on the same rows."""
    gate, task = spec.gate, task_of(spec)
    # scikit-learn is imported when the gate runs, not when the definitions load.
    from ml_platform.training.evaluate import (
        baseline_metrics,
        behaviour,
        compare_with_champion,
        evaluate,
        features_of,
        scope_metrics,
        score,
    )

    overall, slices = evaluate(candidate, test, spec)
    diagnostics = task.diagnostics(task.scores(candidate, features_of(test, spec)), test[LABEL].to_numpy())
    behaved = behaviour(
        task,
        candidate,
        features_of(test, spec),
        gate,
        spec.entity,
        spec.model.seed,
        test[spec.entity].to_numpy(),
    )
    compared = compare_with_champion(candidate, champion, test, spec) if champion is not None else []
    window = test_window(test, task)
    checks = [
        GateCheck(
            f"gate_{metric}",
            overall.get(metric, float("-inf")) >= threshold,
            {"value": overall.get(metric, float("nan")), "threshold": threshold, **window},
        )
        for metric, threshold in own_floors(spec).items()
    ]
    if task.binary_labels:
        checks.append(operating_point_check(overall, window, gate))
    checks += [
        GateCheck(
            f"gate_{metric}",
            overall.get(metric, float("inf")) <= ceiling,
            {"value": overall.get(metric, float("nan")), "ceiling": ceiling, **window},
        )
        for metric, ceiling in gate.max_metrics.items()
    ]
    scopes = scope_metrics(candidate, test, spec)
    if gate.scope_min_metrics or gate.scope_max_metrics:
        missed = scope_misses(scopes, spec)
        judged = sum(m["evidence"] >= gate.min_positive_events for m in scopes.values())
        checks.append(
            GateCheck(
                PER_SCOPE,
                not missed,
                {"missed": markdown_table(missed), "judged_scopes": judged, "scopes": len(scopes)},
            )
        )
    baseline: dict[str, float] = {}
    if gate.baseline is not None:
        if train is None:
            raise ValueError("the gate needs the train rows to fit the spec's baseline")
        baseline, baseline_scored = baseline_metrics(train, test, spec)
        candidate_scored = score(task, candidate, features_of(test, spec))
        checks.append(baseline_check(task, candidate_scored, baseline_scored, test, spec))
    checks += [
        GateCheck(
            NOT_WORSE,
            not any(c.regression for c in compared),
            comparison_metadata(compared, window, champion_version),
        ),
        GateCheck(
            "behaviour_noise",
            behaved["noise_flip_rate"] <= gate.max_flip_rate,
            {"noise_flip_rate": behaved["noise_flip_rate"], "max_flip_rate": gate.max_flip_rate},
        ),
        GateCheck(
            "behaviour_invariance",
            behaved["irrelevant_fields_max_change"] <= ROUNDING
            and behaved["single_vs_batch_max_change"] <= ROUNDING,
            {**{k: v for k, v in behaved.items() if k != "noise_flip_rate"}, "tolerance": ROUNDING},
        ),
    ]
    return GateResult(overall, slices, behaved, compared, checks, window, diagnostics, scopes, baseline)
