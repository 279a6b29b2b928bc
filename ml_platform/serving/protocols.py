"""Request bodies of the three protocols -> rows to score; model outputs -> response bodies.

Every row is either an entity lookup (``{"<entity>": "s-1"}``: features come from the online
store) or a full feature row checked against the model's signature. Anything else is a
``RequestError`` naming the field and the rule, answered 4xx by the app.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any

from ml_platform.features.definitions import source_columns
from ml_platform.spec import UseCaseSpec

MAX_ROWS = 1000


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Signature:
    """The features a model takes, in order, and the bounds declared for each (if any)."""

    names: tuple[str, ...]
    bounds: dict[str, tuple[float | None, float | None]]
    entity: str
    # Features built only from optional columns: a row may leave them out (they are missing).
    optional: frozenset[str] = frozenset()
    # The use case's input columns: a row of the entity and some of these is an event to score.
    columns: frozenset[str] = frozenset()

    @classmethod
    def of(cls, spec: UseCaseSpec) -> Signature:
        declared = {c.name: (c.min_value, c.max_value) for c in spec.numeric_columns}
        names = tuple(spec.features.feature_names())
        optional_columns = {c.name for c in spec.columns if not c.required}
        optional = frozenset(
            f.name
            for f in spec.features.features
            if (read := source_columns((f,))) and set(read) <= optional_columns
        )
        # A feature that is a raw column keeps that column's declared range.
        bounds = {n: declared[n] for n in names if n in declared}
        return cls(names, bounds, spec.entity, optional, frozenset(spec.column_names))


@dataclass(frozen=True)
class Row:
    """A row to score: features given directly, an entity whose features are looked up, or an
    event of an entity (its input columns, sent with the request) scored on the entity's online
    history as if it had just arrived, without storing it."""

    features: dict[str, float | None] | None = None
    entity: str | None = None
    event: dict[str, Any] | None = None


def _number(value: Any, field: str, where: str) -> float | None:
    if value is None:
        return None  # missing values are imputed inside the model, as in training
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(422, f"{where}: field '{field}' must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise RequestError(422, f"{where}: field '{field}' must be finite, got {value}")
    return number


def _entity(signature: Signature, item: dict, where: str) -> str:
    entity = item[signature.entity]
    if not isinstance(entity, str) or not entity:
        raise RequestError(422, f"{where}: field '{signature.entity}' must be a non-empty string")
    return entity


def feature_row(signature: Signature, item: Any, where: str) -> Row:
    if not isinstance(item, dict):
        raise RequestError(422, f"{where}: must be a JSON object")
    if signature.entity in item and not (set(item) - {signature.entity}):
        return Row(entity=_entity(signature, item, where))
    given = set(item) - {signature.entity}
    complete = all(n in item or n in signature.optional for n in signature.names)
    if signature.entity in item and given <= signature.columns and not complete:
        return Row(entity=_entity(signature, item, where), event=dict(item))
    unknown = sorted(set(item) - set(signature.names) - {signature.entity})
    if unknown:
        raise RequestError(
            422,
            f"{where}: unknown field(s) {', '.join(unknown)}; send '{signature.entity}' alone "
            "(features from the online store), with some of the use case's columns (an event to "
            "score on its history), or every feature of the model's signature",
        )
    missing = [n for n in signature.names if n not in item and n not in signature.optional]
    if missing:
        raise RequestError(422, f"{where}: missing field(s) {', '.join(missing)}")
    values = {n: _number(item.get(n), n, where) for n in signature.names}
    for name, (low, high) in signature.bounds.items():
        value = values[name]
        if value is not None and ((low is not None and value < low) or (high is not None and value > high)):
            raise RequestError(
                422, f"{where}: field '{name}' = {value} is outside the declared range [{low}, {high}]"
            )
    return Row(features=values, entity=item.get(signature.entity))


def _rows(signature: Signature, items: Any, where: str) -> tuple[list[Row], bool]:
    if not isinstance(items, list):
        raise RequestError(422, f"'{where}' must be a list")
    if not items:
        raise RequestError(422, f"'{where}' is empty: send at least one row")
    if len(items) > MAX_ROWS:
        raise RequestError(413, f"'{where}' has {len(items)} rows; at most {MAX_ROWS} per request")
    return [feature_row(signature, item, f"{where}[{i}]") for i, item in enumerate(items)], False


def predict_rows(signature: Signature, payload: Any) -> tuple[list[Row], bool]:
    """``/v1/.../predict``: one object (answered flat) or ``{"instances": [...]}``."""
    if not isinstance(payload, dict):
        raise RequestError(422, "request body must be a JSON object")
    if "instances" in payload:
        if set(payload) != {"instances"}:
            raise RequestError(
                422, f"unknown field(s) beside 'instances': {sorted(set(payload) - {'instances'})}"
            )
        return _rows(signature, payload["instances"], "instances")
    return [feature_row(signature, payload, "request")], True


def mlflow_rows(signature: Signature, payload: Any) -> list[Row]:
    """MLflow's scoring protocol: dataframe_split, dataframe_records, instances or inputs."""
    if not isinstance(payload, dict) or len(payload) != 1:
        raise RequestError(
            422, "send exactly one of 'dataframe_split', 'dataframe_records', 'instances', 'inputs'"
        )
    ((kind, body),) = payload.items()
    if kind == "dataframe_split":
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("columns"), list)
            or not isinstance(body.get("data"), list)
        ):
            raise RequestError(422, "'dataframe_split' needs 'columns' (a list) and 'data' (a list of rows)")
        columns = body["columns"]
        for i, values in enumerate(body["data"]):
            if not isinstance(values, list) or len(values) != len(columns):
                raise RequestError(422, f"dataframe_split.data[{i}] must be a list of {len(columns)} values")
        records = [dict(zip(columns, values, strict=True)) for values in body["data"]]
        return _rows(signature, records, "dataframe_split.data")[0]
    if kind in ("dataframe_records", "instances"):
        return _rows(signature, body, kind)[0]
    if kind == "inputs":
        if isinstance(body, dict):  # columnar: {"feature": [values...]}
            lengths = {len(v) if isinstance(v, list) else -1 for v in body.values()}
            if len(lengths) != 1 or -1 in lengths:
                raise RequestError(422, "'inputs' as an object needs lists of equal length per field")
            records = [dict(zip(body, values, strict=True)) for values in zip(*body.values(), strict=True)]
            return _rows(signature, records, "inputs")[0]
        return _rows(signature, body, "inputs")[0]
    raise RequestError(
        422, f"unknown field '{kind}': expected dataframe_split, dataframe_records, instances or inputs"
    )


def csv_rows(signature: Signature, text: str) -> list[Row]:
    """A ``text/csv`` body, as MLflow's scoring server takes it: a header row of column names, then
    one row per line; the entity stays text, features are numbers (an empty cell is missing)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise RequestError(422, "the CSV body is empty: send a header row of column names, then rows")
    records = []
    for number, values in enumerate(reader, start=2):
        if not values:
            continue
        if len(values) != len(header):
            raise RequestError(422, f"CSV line {number}: {len(values)} values for {len(header)} columns")
        record: dict[str, Any] = {}
        for name, value in zip(header, values, strict=True):
            if name == signature.entity or value == "":
                record[name] = value if name == signature.entity else None
                continue
            try:
                record[name] = float(value)
            except ValueError:
                raise RequestError(
                    422, f"CSV line {number}: field '{name}' must be a number, got {value!r}"
                ) from None
        records.append(record)
    return _rows(signature, records, "csv")[0]


def v2_rows(signature: Signature, payload: Any) -> list[Row]:
    """Open Inference Protocol v2 (JSON): one input per feature (shape [N] or [N, 1]), one 2-D
    input of shape [N, F] in signature order, or one BYTES input named after the entity."""
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list) or not payload["inputs"]:
        raise RequestError(422, "request needs 'inputs': a non-empty list of tensors")
    tensors = {}
    for i, tensor in enumerate(payload["inputs"]):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise RequestError(422, f"inputs[{i}] needs a 'name'")
        for field in ("shape", "datatype", "data"):
            if field not in tensor:
                raise RequestError(422, f"inputs[{i}] ('{tensor['name']}') needs '{field}'")
        if not isinstance(tensor["data"], list) or not isinstance(tensor["shape"], list):
            raise RequestError(422, f"inputs[{i}] ('{tensor['name']}'): 'shape' and 'data' must be lists")
        tensors[tensor["name"]] = tensor
    if set(tensors) == {signature.entity}:
        ids = _flat(tensors[signature.entity]["data"])
        return _rows(signature, [{signature.entity: v} for v in ids], f"inputs.{signature.entity}")[0]
    if len(tensors) == 1:
        ((name, tensor),) = tensors.items()
        shape = tensor["shape"]
        if len(shape) == 2 and shape[1] == len(signature.names):
            values = _flat(tensor["data"])
            if len(values) != shape[0] * shape[1]:
                raise RequestError(422, f"input '{name}': {len(values)} values do not fill shape {shape}")
            width = len(signature.names)
            records = [
                dict(zip(signature.names, values[r * width : (r + 1) * width], strict=True))
                for r in range(shape[0])
            ]
            return _rows(signature, records, f"inputs.{name}")[0]
    unknown = sorted(set(tensors) - set(signature.names))
    if unknown:
        raise RequestError(
            422, f"unknown input(s) {', '.join(unknown)}; expected the features {list(signature.names)}"
        )
    missing = [n for n in signature.names if n not in tensors]
    if missing:
        raise RequestError(422, f"missing input(s) {', '.join(missing)}")
    columns = {n: _flat(tensors[n]["data"]) for n in signature.names}
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise RequestError(422, "all inputs must hold the same number of values")
    records = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    return _rows(signature, records, "inputs")[0]


def _flat(data: list) -> list:
    out: list = []
    for item in data:
        if isinstance(item, list):
            out.extend(_flat(item))
        else:
            out.append(item)
    return out
