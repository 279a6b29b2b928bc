"""The Ray Serve application: one HTTP ingress scoring every use case's champion.

Models are given to replicas through ``user_config`` (version, artifact source and sha256), so a
promotion is a reconfigure: Ray Serve applies it to live replicas without dropping requests.
"""

import datetime as dt
import json
import logging
import math
import uuid
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from ml_platform.features.online_store import make_online_store
from ml_platform.serving.events import EventError, EventIngestor
from ml_platform.serving.log import PredictionLogWriter
from ml_platform.settings import load_settings
from ml_platform.training.evaluate import model_input
from ml_platform.training.model import anomaly_scores
from ml_platform.training.registry import ModelRef, load_verified_model
from ml_platform.usecases import USE_CASES

logger = logging.getLogger("ml_platform.serving")
api = FastAPI(title="ml_platform serving", version="0.1.0")


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


async def _json_body(request: Request) -> Any:
    body = await request.body()
    if not body:
        raise RequestError(422, "request body is empty; send a JSON object")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(422, f"request body is not valid JSON: {exc}") from None


def _instances(payload: Any, entity: str) -> tuple[list[dict[str, Any]], bool]:
    """The rows of a predict request and whether it was a single row (answered flat)."""
    if not isinstance(payload, dict):
        raise RequestError(422, "request body must be a JSON object")
    if "instances" in payload:
        rows = payload["instances"]
        if not isinstance(rows, list) or not rows:
            raise RequestError(422, "'instances' must be a non-empty list of objects")
        if not all(isinstance(r, dict) for r in rows):
            raise RequestError(422, "every item of 'instances' must be a JSON object")
        return rows, False
    if entity in payload:
        return [payload], True
    raise RequestError(422, f"request needs '{entity}' or 'instances'")


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=64,
    health_check_period_s=5,
)
@serve.ingress(api)
class ModelServer:
    def __init__(self) -> None:
        self.settings = load_settings()
        self.online_store = make_online_store(self.settings)
        self.log = PredictionLogWriter(self.settings.serving_log_dir)
        self.models: dict[str, tuple[ModelRef, Any]] = {}
        self.load_errors: dict[str, str] = {}
        self.ingestors = {
            name: EventIngestor(self.settings, spec, self.online_store) for name, spec in USE_CASES.items()
        }

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Load the models of ``config``; a model that fails its checks is refused and the model
        already served for that use case keeps serving (the refusal shows in its metadata)."""
        models = {}
        for use_case, ref in config.get("models", {}).items():
            model_ref = ModelRef(**ref)
            current = self.models.get(use_case)
            if current and current[0] == model_ref:
                models[use_case] = current
                continue
            try:
                models[use_case] = (
                    model_ref,
                    load_verified_model(model_ref, self.settings.run_dir / "model_cache"),
                )
                self.load_errors.pop(use_case, None)
            except Exception as exc:  # refuse this model, keep serving the previous one
                self.load_errors[use_case] = f"v{model_ref.version} refused: {exc}"
                logger.error("%s: %s", use_case, self.load_errors[use_case])
                if current:
                    models[use_case] = current
        self.models = models

    def _model(self, name: str) -> tuple[ModelRef, Any]:
        if name not in USE_CASES:
            raise RequestError(404, f"unknown model {name!r}; served: {sorted(self.models)}")
        if name not in self.models:
            reason = self.load_errors.get(name, "no champion deployed yet")
            raise RequestError(503, f"model {name!r} is not being served: {reason}")
        return self.models[name]

    def _feature_row(self, use_case: str, row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Feature values for one request row, and what to echo back about where they came from."""
        spec = USE_CASES[use_case]
        names = spec.features.feature_names()
        given = [n for n in names if n in row]
        if not given:
            entity_id = row.get(spec.entity)
            if not isinstance(entity_id, str) or not entity_id:
                raise RequestError(422, f"'{spec.entity}' must be a non-empty string")
            vector = self.online_store.get(use_case, entity_id)
            if vector is None:
                raise RequestError(404, f"unknown {spec.entity} {entity_id!r}: no online features")
            age = vector.age()
            if age > spec.features.ttl:
                raise RequestError(
                    409,
                    f"features of {spec.entity} {entity_id!r} are {age.total_seconds():.0f} s old, "
                    f"older than the use case's TTL of {spec.features.ttl.total_seconds():.0f} s",
                )
            return vector.features, {
                spec.entity: entity_id,
                "feature_event_timestamp": vector.event_timestamp.isoformat(),
                "feature_age_s": round(age.total_seconds(), 3),
            }
        missing = [n for n in names if n not in row]
        if missing:
            raise RequestError(422, f"feature row is missing field(s): {', '.join(missing)}")
        features = {}
        for name in names:
            value = row[name]
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            ):
                raise RequestError(422, f"field {name!r} must be a finite number or null")
            features[name] = value
        echo = {spec.entity: row[spec.entity]} if spec.entity in row else {}
        return features, echo

    @api.post("/v1/models/{model}/predict")
    async def predict(self, model: str, request: Request) -> JSONResponse:
        try:
            ref, pipeline = self._model(model)
            spec = USE_CASES[model]
            rows, single = _instances(await _json_body(request), spec.entity)
            prepared = [self._feature_row(model, row) for row in rows]
        except RequestError as exc:
            return _error(exc.status, exc.message)
        scores = anomaly_scores(
            pipeline, model_input((f for f, _ in prepared), spec.features.feature_names())
        )
        now = dt.datetime.now(dt.UTC).isoformat()
        predictions = [
            {
                "prediction_id": uuid.uuid4().hex,
                **echo,
                "anomaly_score": float(score),
                "is_anomaly": bool(score > 0),
            }
            for (_, echo), score in zip(prepared, scores, strict=True)
        ]
        self.log.append(
            model,
            [
                {**p, "model_version": ref.version, "requested_at": now, "features": f}
                for p, (f, _) in zip(predictions, prepared, strict=True)
            ],
        )
        if single:
            return JSONResponse({"model": model, "model_version": ref.version, **predictions[0]})
        return JSONResponse({"model": model, "model_version": ref.version, "predictions": predictions})

    @api.post("/v1/events/{use_case}", status_code=202)
    async def events(self, use_case: str, request: Request) -> JSONResponse:
        if use_case not in self.ingestors:
            return _error(404, f"unknown use case {use_case!r}; known: {sorted(self.ingestors)}")
        try:
            accepted = self.ingestors[use_case].ingest(await _json_body(request))
        except RequestError as exc:
            return _error(exc.status, exc.message)
        except EventError as exc:
            return _error(422, str(exc))
        return JSONResponse({"accepted": accepted}, status_code=202)

    @api.get("/v2/health/live")
    async def live(self) -> dict[str, bool]:
        return {"live": True}

    @api.get("/v2/health/ready")
    async def ready(self) -> JSONResponse:
        ready = bool(self.models)
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @api.get("/v2/models/{model}")
    async def metadata(self, model: str) -> JSONResponse:
        try:
            ref, _ = self._model(model)
        except RequestError as exc:
            return _error(exc.status, exc.message)
        spec = USE_CASES[model]
        return JSONResponse(
            {
                "name": model,
                "versions": [ref.version],
                "platform": "sklearn",
                "inputs": [
                    {"name": n, "datatype": "FP64", "shape": [-1]} for n in spec.features.feature_names()
                ],
                "outputs": [
                    {"name": "anomaly_score", "datatype": "FP64", "shape": [-1]},
                    {"name": "is_anomaly", "datatype": "BOOL", "shape": [-1]},
                ],
                **({"load_error": self.load_errors[model]} if model in self.load_errors else {}),
            }
        )


def build_app(models: dict[str, ModelRef], env: dict[str, str]):
    """The application to ``serve.run``; ``env`` reaches replicas (home, tracking URI, threads)."""
    config = {"models": {name: asdict(ref) for name, ref in models.items()}}
    return ModelServer.options(
        user_config=config,
        ray_actor_options={"num_cpus": 0.25, "runtime_env": {"env_vars": env}},
    ).bind()
