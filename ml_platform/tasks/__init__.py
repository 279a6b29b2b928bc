"""Model tasks, one module each: what a model answers, how it is fit, scored and judged.

A spec names its task in ``model.task`` and an estimator of that task in ``model.algorithm``;
every other part of the platform asks the task (``task_of(spec)``) instead of naming an output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml_platform.tasks.anomaly import AnomalyDetection
from ml_platform.tasks.base import Estimator, Metric, Output, Task
from ml_platform.tasks.classification import BinaryClassification
from ml_platform.tasks.multiclass import MulticlassClassification
from ml_platform.tasks.regression import Regression

if TYPE_CHECKING:
    from ml_platform.spec import UseCaseSpec

TASKS: dict[str, Task] = {
    t.name: t for t in (AnomalyDetection(), BinaryClassification(), MulticlassClassification(), Regression())
}

__all__ = ["TASKS", "Estimator", "Metric", "Output", "Task", "selection_metric", "task_of"]


def task_of(spec: UseCaseSpec) -> Task:
    return TASKS[spec.model.task].for_spec(spec)


def selection_metric(spec: UseCaseSpec) -> str:
    """The metric the search compares trials on: the spec's, or its task's default."""
    return spec.model.selection_metric or task_of(spec).default_selection_metric
