"""Use-case specs written as data (YAML, or any mapping), one to one onto ``UseCaseSpec``, and the
checks every spec passes when it is loaded, wherever it comes from.

The mapping's keys are the dataclass fields; durations are written ``30s``, ``15m``, ``6h``, ``3d``
(or seconds); a feature or a source is a mapping with its ``kind`` (``rolling``, ``diff_from_mean``,
``postgres_table``, ...) and that class's fields. Every problem names its field, so a message
reads ``spec.yaml: use case 'pumps': features.features[2].column: unknown column 'presure'``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ml_platform import spec as spec_module
from ml_platform.features import definitions
from ml_platform.spec import NUMBER_DTYPES, PARTITIONS, UseCaseSpec
from ml_platform.tasks import TASKS, Task
from ml_platform.tasks.classification import THRESHOLD_OBJECTIVES

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
DTYPES = ("string", "timestamp", "float", "integer", "boolean")
LABEL_MISSING = ("unlabelled", "negative")
# Columns a feature may read, by feature kind: numeric input only.
NUMERIC = ("float", "integer", "boolean")  # what features read (a boolean as 0 / 1)


class UseCaseError(ValueError):
    """A spec that cannot be used; the message names the file, the use case and the field."""


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


FEATURE_KINDS = {_snake(cls.__name__): cls for cls in typing.get_args(definitions.Feature)}
SOURCE_KINDS = {_snake(cls.__name__): cls for cls in typing.get_args(spec_module.Source)}


class _Problem(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")


def _duration(value: Any, field: str) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.timedelta(seconds=value)
    if isinstance(value, str):
        try:
            return definitions.period_timedelta(value.strip())
        except ValueError:
            pass
    raise _Problem(field, f"{value!r} is not a duration (write 30s, 15m, 6h or 3d)")


def _convert(value: Any, hint: Any, field: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        if value is None:
            return None
        if len(options) == 1 and dataclasses.is_dataclass(options[0]):
            return _dataclass(options[0], value, field)
        if all(dataclasses.is_dataclass(h) for h in options):
            return _tagged(value, options, field)
        return _convert(value, options[0], field)
    if hint is dt.timedelta:
        return _duration(value, field)
    if dataclasses.is_dataclass(hint):
        return _dataclass(hint, value, field)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Problem(field, f"expected a list, got {type(value).__name__}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_convert(v, item, f"{field}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Problem(field, f"expected a mapping, got {type(value).__name__}")
        _, item = typing.get_args(hint) or (str, Any)
        return {str(k): _convert(v, item, f"{field}.{k}") for k, v in value.items()}
    if hint is str:
        if isinstance(value, dt.date):
            return value.isoformat()  # YAML reads 2014-01-01 as a date
        if not isinstance(value, str):
            raise _Problem(field, f"expected text, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise _Problem(field, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Problem(field, f"expected a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Problem(field, f"expected a number, got {value!r}")
        return float(value)
    return value


def _tagged(value: Any, options: list[type], field: str) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value
    kinds = {_snake(cls.__name__): cls for cls in options}
    if not isinstance(value, Mapping) or "kind" not in value:
        raise _Problem(field, f"expected a mapping with a 'kind' (one of {', '.join(sorted(kinds))})")
    fields = dict(value)
    kind = fields.pop("kind")
    if kind not in kinds:
        raise _Problem(f"{field}.kind", f"unknown kind {kind!r} (one of {', '.join(sorted(kinds))})")
    return _dataclass(kinds[kind], fields, field)


def _dataclass(cls: type, value: Any, field: str) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise _Problem(field or cls.__name__, f"expected a mapping, got {type(value).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(known) - {"kind"})
    prefix = f"{field}." if field else ""
    if unknown:
        raise _Problem(f"{prefix}{unknown[0]}", f"unknown field (known: {', '.join(known)})")
    missing = [
        name
        for name, f in known.items()
        if name not in value and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise _Problem(f"{prefix}{missing[0]}", "missing")
    return cls(
        **{name: _convert(v, hints[name], f"{prefix}{name}") for name, v in value.items() if name != "kind"}
    )


def spec_from_mapping(data: Any, origin: str) -> UseCaseSpec:
    """A ``UseCaseSpec`` from its mapping form, validated; ``origin`` names where it came from."""
    name = data.get("name", "?") if isinstance(data, Mapping) else "?"
    try:
        spec = _dataclass(UseCaseSpec, data, "")
    except _Problem as problem:
        raise UseCaseError(f"{origin}: use case {name!r}: {problem}") from None
    except (TypeError, ValueError) as error:  # a constructor's own refusal
        raise UseCaseError(f"{origin}: use case {name!r}: {error}") from None
    validate(spec, origin)
    return spec


def read_spec_file(path: Path) -> list[UseCaseSpec]:
    """The use cases of a YAML file: one mapping, or a list of them."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UseCaseError(f"{path}: cannot be read as YAML: {error}") from None
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(i, Mapping) for i in items):
        raise UseCaseError(f"{path}: expected a use case (a mapping of its fields) or a list of them")
    return [spec_from_mapping(item, str(path)) for item in items]


def problems(spec: UseCaseSpec) -> list[str]:
    """Everything that makes ``spec`` unusable, each as ``field: what is wrong``."""
    found: list[str] = []

    def need(ok: bool, field: str, message: str) -> None:
        if not ok:
            found.append(f"{field}: {message}")

    need(bool(NAME.match(spec.name)), "name", f"{spec.name!r} must be lower case letters, digits and _")
    columns = {c.name: c for c in spec.columns}
    need(len(columns) == len(spec.columns), "columns", "a column is declared twice")
    for i, column in enumerate(spec.columns):
        need(
            column.dtype in DTYPES, f"columns[{i}].dtype", f"unknown type {column.dtype!r} (one of {DTYPES})"
        )
        need(
            column.dtype in NUMBER_DTYPES or (column.min_value is None and column.max_value is None),
            f"columns[{i}].min_value",
            f"bounds apply to float and integer columns, not to {column.dtype} column {column.name!r}",
        )
    need(spec.entity in columns, "entity", f"{spec.entity!r} is not among the columns")
    need(
        spec.timestamp in columns and columns[spec.timestamp].dtype == "timestamp",
        "timestamp",
        f"{spec.timestamp!r} must be a column of type timestamp",
    )
    for i, key in enumerate(spec.expectations.key):
        need(key in columns, f"expectations.key[{i}]", f"unknown column {key!r}")
    need(0 <= spec.expectations.max_bad_share <= 1, "expectations.max_bad_share", "must be within 0..1")
    names = [f.name for f in spec.features.features]
    need(len(set(names)) == len(names), "features.features", "two features have the same name")
    for i, feature in enumerate(spec.features.features):
        for attr in ("column", "numerator", "denominator"):
            column = getattr(feature, attr, None)
            if column is None:
                continue
            field = f"features.features[{i}].{attr}"
            if column not in columns:
                found.append(f"{field}: unknown column {column!r}")
            elif isinstance(feature, definitions.IsValue):
                allowed = columns[column].allowed_values
                if columns[column].dtype != "string":
                    found.append(
                        f"{field}: column {column!r} is {columns[column].dtype}; is_value reads text"
                    )
                elif allowed and feature.value not in allowed:
                    found.append(
                        f"features.features[{i}].value: {feature.value!r} is not among {column!r}'s "
                        f"allowed values {list(allowed)}"
                    )
            elif columns[column].dtype not in NUMERIC:
                found.append(
                    f"{field}: column {column!r} is {columns[column].dtype}; this feature reads numbers "
                    "(a text column takes is_value)"
                )
        if isinstance(feature, definitions.Rolling):
            aggs = ("mean", "std", "min", "max", "count")
            need(feature.agg in aggs, f"features.features[{i}].agg", f"{feature.agg!r} is not one of {aggs}")
        for attr in ("rows", "period"):
            if hasattr(feature, attr):
                need(
                    (getattr(feature, "rows", None) is None) != (getattr(feature, "period", None) is None),
                    f"features.features[{i}]",
                    "a window needs exactly one of rows or period",
                )
                break
    need(bool(spec.features.features), "features.features", "a use case needs at least one feature")
    model = spec.model
    task = TASKS.get(model.task)
    need(task is not None, "model.task", f"unknown task {model.task!r} (one of {', '.join(TASKS)})")
    if task is not None:
        found += _task_problems(spec, task)
    need(model.training_days > 0, "model.training_days", "must be positive")
    need(model.training_rows is None or model.training_rows > 0, "model.training_rows", "must be positive")
    entity_rows = model.min_entity_rows
    need(entity_rows is None or entity_rows > 0, "model.min_entity_rows", "must be positive")
    need(
        model.validation_fraction > 0
        and model.test_fraction > 0
        and model.validation_fraction + model.test_fraction < 1,
        "model",
        "validation_fraction and test_fraction must be positive and leave rows to train on",
    )
    gate = spec.gate
    for i, slice_ in enumerate(gate.slices):
        need(slice_.column in names, f"gate.slices[{i}].column", f"{slice_.column!r} is not a feature")
    need(gate.min_positive_events >= 1, "gate.min_positive_events", "must be at least 1")
    need(0 < gate.confidence < 1, "gate.confidence", "must be between 0 and 1")
    for i, column in enumerate(spec.drift.columns):
        need(column in names, f"drift.columns[{i}]", f"{column!r} is not a feature")
    need(0 < spec.drift.drift_share <= 1, "drift.drift_share", "must be within (0, 1]")
    if isinstance(spec.labels, spec_module.EventLabels):
        column = spec.labels.column
        need(
            bool(NAME.match(column)), "labels.column", f"{column!r} must be lower case letters, digits and _"
        )
        need(
            column not in (spec.entity, spec.timestamp),
            "labels.column",
            f"{column!r} is the entity or the timestamp; the label needs its own column",
        )
        need(
            spec.labels.missing in LABEL_MISSING,
            "labels.missing",
            f"{spec.labels.missing!r} is not one of {LABEL_MISSING}",
        )
        need(
            spec.labels.missing != "negative" or task is None or task.binary_labels,
            "labels.missing",
            f"'negative' needs 0 / 1 labels; a {model.task} label cannot default to one",
        )
    try:
        dt.date.fromisoformat(spec.partitions_start)
    except ValueError:
        found.append(f"partitions_start: {spec.partitions_start!r} is not a date (YYYY-MM-DD)")
    if spec.partitions not in PARTITIONS:
        found.append(f"partitions: {spec.partitions!r} is not one of {PARTITIONS}")
    if spec.serving is not None:
        need(spec.serving.replicas >= 1, "serving.replicas", "must be at least 1")
        need(spec.serving.num_cpus > 0, "serving.num_cpus", "must be above 0 (0.5: half a core)")
    return found


def _task_problems(spec: UseCaseSpec, task: Task) -> list[str]:
    """What ``spec`` asks of its task that the task does not have: estimator, metrics, labels."""
    found: list[str] = []
    model, gate, monitoring = spec.model, spec.gate, spec.monitoring
    if model.algorithm not in task.estimators:
        found.append(
            f"model.algorithm: {model.algorithm!r} is not an estimator of {task.name} "
            f"(one of {', '.join(task.estimators)})"
        )
    if task.name == "multiclass_classification":
        classes = model.classes
        if len(set(classes)) < 2 or len(set(classes)) != len(classes):
            found.append(f"model.classes: {list(classes)} must name at least two classes, each once")
        found += [
            f"model.classes[{i}]: {c!r} must be lower case letters, digits and _ (it names an output)"
            for i, c in enumerate(classes)
            if not NAME.match(str(c))
        ]
    elif model.classes:
        found.append(f"model.classes: only a multiclass_classification names classes, not {task.name}")
    names = task.metric_names
    selection = model.selection_metric
    if selection is not None and (selection not in names or not task.metric(selection).comparable):
        found.append(f"model.selection_metric: {selection!r} is not a metric of {task.name} (one of {names})")
    if model.threshold_objective not in THRESHOLD_OBJECTIVES:
        found.append(
            f"model.threshold_objective: {model.threshold_objective!r} is not one of {THRESHOLD_OBJECTIVES}"
        )
    if not 0 < model.threshold_floor < 1:
        found.append("model.threshold_floor: must be between 0 and 1")
    # Floors for metrics where higher is better, ceilings for errors.
    for group, higher in (
        ("gate.min_metrics", True),
        ("gate.max_metrics", False),
        ("gate.scope_min_metrics", True),
        ("gate.scope_max_metrics", False),
        ("monitoring.min_live_metrics", True),
        ("monitoring.max_live_metrics", False),
    ):
        section, key = group.split(".")
        for name in getattr(gate if section == "gate" else monitoring, key):
            metric = task.metric(name)
            if metric is None:
                found.append(f"{group}.{name}: unknown metric of {task.name} (one of {names})")
            elif metric.higher_is_better != higher:
                kind = "an error (lower is better)" if higher else "better when higher"
                other = f"{'max' if higher else 'min'}_{key.split('_', 1)[1]}"
                found.append(f"{group}.{name}: {name} is {kind}; give it under {section}.{other}")
    for name in gate.max_regression:
        metric = task.metric(name)
        if metric is None or not metric.comparable:
            comparable = [m.name for m in task.metrics if m.comparable]
            found.append(
                f"gate.max_regression.{name}: not a comparable metric of {task.name} (one of {comparable})"
            )
    baseline = gate.baseline
    if baseline is not None:
        if baseline.algorithm not in task.estimators:
            found.append(
                f"gate.baseline.algorithm: {baseline.algorithm!r} is not an estimator of {task.name} "
                f"(one of {', '.join(task.estimators)})"
            )
        declared = spec.features.feature_names()
        for i, name in enumerate(baseline.features):
            if name not in declared:
                found.append(f"gate.baseline.features[{i}]: {name!r} is not a feature of the use case")
    if isinstance(spec.labels, spec_module.AnomalyWindows) and not task.windows_allowed:
        found.append(f"labels: anomaly windows give 0 / 1 labels; a {task.name} use case needs event_labels")
    return found


def validate(spec: UseCaseSpec, origin: str) -> UseCaseSpec:
    """``spec`` itself, or a ``UseCaseError`` naming ``origin``, the use case and every bad field."""
    found = problems(spec)
    if found:
        raise UseCaseError(f"{origin}: use case {spec.name!r}: " + "; ".join(found))
    return spec
