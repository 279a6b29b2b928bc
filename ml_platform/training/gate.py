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
from ml_platform.spec import UseCaseSpec
from ml_platform.training.compare import Comparison, positive_events
from ml_platform.training.dataset import LABEL, WINDOW

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

NOT_WORSE = "not_worse_than_champion"


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

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def check(self, name: str) -> GateCheck:
        return next(c for c in self.checks if c.name == name)


def check_names(spec: UseCaseSpec) -> list[str]:
    return [f"gate_{m}" for m in spec.gate.min_metrics] + [
        NOT_WORSE,
        "behaviour_noise",
        "behaviour_invariance",
    ]


def test_window(test: pl.DataFrame) -> dict[str, object]:
    """The rows the gate judges on: their time window and how many positives they hold."""
    labels, events = test[LABEL].to_numpy(), test[WINDOW].to_numpy()
    return {
        "compared_rows_from": str(test[EVENT_TIMESTAMP].min()),
        "compared_rows_to": str(test[EVENT_TIMESTAMP].max()),
        "compared_rows": len(test),
        "compared_positive_rows": int(np.nansum(labels)),
        "compared_positive_events": positive_events(labels, events),
    }


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
    candidate: Pipeline,
    champion: Pipeline | None,
    champion_version: str | None,
    test: pl.DataFrame,
    spec: UseCaseSpec,
) -> GateResult:
    """Every gate check of ``candidate`` on the test rows; ``champion`` (when there is one other
    than the candidate) is scored on the same rows."""
    gate = spec.gate
    # scikit-learn is imported when the gate runs, not when the definitions load.
    from ml_platform.training.evaluate import behaviour, compare_with_champion, evaluate, model_input

    overall, slices = evaluate(candidate, test, spec)
    names = spec.features.feature_names()
    features = model_input(test.select(names).to_pandas(), names)
    behaved = behaviour(candidate, features, gate, spec.entity, spec.model.seed, test[spec.entity].to_numpy())
    compared = compare_with_champion(candidate, champion, test, spec) if champion is not None else []
    window = test_window(test)
    checks = [
        GateCheck(
            f"gate_{metric}",
            overall.get(metric, float("-inf")) >= threshold,
            {"value": overall.get(metric, float("nan")), "threshold": threshold, **window},
        )
        for metric, threshold in gate.min_metrics.items()
    ]
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
            behaved["irrelevant_fields_max_change"] == 0 and behaved["single_vs_batch_max_change"] == 0,
            {k: v for k, v in behaved.items() if k != "noise_flip_rate"},
        ),
    ]
    return GateResult(overall, slices, behaved, compared, checks, window)
