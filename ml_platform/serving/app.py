"""The Ray Serve application: every use case's champion behind one HTTP ingress.

- Protocols: ``/v1/models/{m}/predict``, Open Inference Protocol v2 (``/v2/...``), MLflow scoring
  (``/invocations``, ``/v1/models/{m}/invocations``), ``/v1/events/{use_case}``,
  ``/v1/labels/{use_case}``, ``/metrics``; v2 over gRPC reaches ``grpc_infer`` and the ``v2_*``
  methods through a deployment handle (``serving/grpc_v2.py``).
- One ingress deployment (``ModelServer``) answers every route. It scores the use cases without
  a ``serving:`` section itself; each that has one is scored by its own deployment
  (``ModelServer_<use case>``, sized and autoscaled apart), which the ingress calls through a
  deployment handle with the parsed rows.
- Concurrent requests are scored together (``@serve.batch``): one model call per batch.
- Each replica follows the registry: every ``WATCH_S`` seconds it reads the ``champion`` and
  ``challenger`` aliases and the canary/shadow settings. A new model is loaded, its sha256
  verified and warmed before it takes traffic; requests in flight finish on the model they
  started with; a model that fails to load or verify is never switched to.
- The prediction log: one line per answered prediction, written before the answer is sent (a
  prediction that cannot be logged is answered 503); shadow scores, when on, are scored off the
  response path and logged as lines of their own.
"""

import asyncio
import datetime as dt
import json
import logging
import os
import random
import threading
import time
import uuid
from dataclasses import asdict, dataclass, replace
from importlib.metadata import version as package_version
from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from ray import serve

from ml_platform.errors import first_line
from ml_platform.features.online_store import make_online_store, unavailable
from ml_platform.serving.cluster import bind_replica_grpc_to_node_address
from ml_platform.serving.compiled import compile_model
from ml_platform.serving.events import (
    EventError,
    EventIngestor,
    OnlineStoreDown,
    example_event,
    example_value,
)
from ml_platform.serving.inbox import landing_inbox
from ml_platform.serving.labels import LabelError, LabelLanding, example_labels
from ml_platform.serving.log import SHADOW_OF, PredictionLogError, prediction_log
from ml_platform.serving.protocols import (
    RequestError,
    Row,
    Signature,
    csv_rows,
    mlflow_rows,
    predict_rows,
    v2_rows,
)
from ml_platform.serving.v2_binary import HEADER as V2_BINARY_HEADER
from ml_platform.serving.v2_binary import decode_request, encode_response, requested_outputs
from ml_platform.settings import load_settings
from ml_platform.spec import UseCaseSpec
from ml_platform.tasks import Output, Task, task_of
from ml_platform.training.registry import (
    CHALLENGER,
    CHAMPION,
    ModelRef,
    alias_ref,
    configure,
    load_verified_model,
)
from ml_platform.usecases import use_cases

logger = logging.getLogger("ml_platform.serving")
MAX_BODY_BYTES = 1 << 20
PREDICTION_ID = Output("prediction_id", "BYTES", "the id the prediction log keeps it under")
WATCH_S = 2.0
CANARY_TAG = "serving.canary_share"
SHADOW_TAG = "serving.shadow"

api = FastAPI(
    title="ml_platform serving",
    version="0.2.0",
    description="Scores by entity id (online features) or by feature rows; see the README for each protocol.",
)


def _json_body() -> dict[str, Any]:
    """A JSON request body (one dict per route: `_openapi` adds each its own example)."""
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    }


def request_examples(spec: UseCaseSpec) -> dict[str, Any]:
    """One request body per route, written in ``spec``'s columns."""
    entity = {spec.entity: example_value(spec, next(c for c in spec.columns if c.name == spec.entity))}
    by_entity = {
        "inputs": [{"name": spec.entity, "shape": [1], "datatype": "BYTES", "data": [entity[spec.entity]]}]
    }
    return {
        "/v1/models/{model}/predict": entity,
        "/v2/models/{model}/infer": by_entity,
        "/invocations": {"dataframe_records": [entity]},
        "/v1/models/{model}/invocations": {"dataframe_records": [entity]},
        "/v1/events/{use_case}": example_event(spec),
        "/v1/labels/{use_case}": example_labels(spec, entity[spec.entity]),
    }


@dataclass(frozen=True)
class CsvBody:
    """A ``text/csv`` request body (MLflow's scoring protocol takes one)."""

    text: str


@dataclass(frozen=True)
class Served:
    ref: ModelRef
    pipeline: Any
    names: tuple[str, ...]
    task: Task
    # The pipeline compiled for few rows (serving/compiled.py), when it is one that compiles.
    compiled: Any = None

    def scores(self, rows: list[dict]) -> np.ndarray:
        if self.compiled is not None:
            matrix = np.array([[row.get(name) for name in self.names] for row in rows], dtype=float)
            return self.task.scores(self.compiled, matrix)
        frame = pd.DataFrame.from_records(rows, columns=list(self.names)).astype(float)
        return self.task.scores(self.pipeline, frame)


@dataclass(frozen=True)
class Refused:
    """A request a use case's own deployment refused, as the ingress answers it."""

    status: int
    message: str


@dataclass(frozen=True)
class ModelState:
    """What is served for a use case, as its readiness and metadata say."""

    champion: str | None
    challenger: str | None
    canary_share: float
    shadow: bool
    load_error: str | None


@dataclass(frozen=True)
class Deployment:
    """The size of a Serve deployment: fixed ``replicas``, or Ray Serve's ``autoscaling_config``."""

    replicas: int = 1
    autoscaling: dict[str, Any] | None = None
    num_cpus: float = 0.5

    def options(self) -> dict[str, Any]:
        scaling = (
            {"autoscaling_config": self.autoscaling} if self.autoscaling else {"num_replicas": self.replicas}
        )
        return {**scaling, "ray_actor_options": {"num_cpus": self.num_cpus}}


@dataclass(frozen=True)
class Routing:
    champion: Served | None = None
    challenger: Served | None = None
    canary_share: float = 0.0
    shadow: bool = False


def _error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(status_code=status, content={"error": message}, headers=headers)


def service_metrics(own: CollectorRegistry) -> CollectorRegistry:
    """Every replica's counters summed (their files in ``PROMETHEUS_MULTIPROC_DIR``), or this
    process's own when it runs alone. Defined above the deployment class: in a replica, a route
    was seen not to find a module function defined below it (NameError)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return own
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


class ModelReplica:
    """A serving replica: the routes, and the models it loads, watches and scores. As the HTTP
    ingress (``ModelServer``) it serves the models of the use cases without a deployment of their
    own; ``own`` holds a handle to each deployment that does (``build_app``). As that deployment
    (``UseCaseModels``, ``models_of`` one use case) it loads and scores only those models, for the
    ingress."""

    def __init__(self, own: dict[str, Any] | None = None, models_of: tuple[str, ...] = ()) -> None:
        bind_replica_grpc_to_node_address()
        self.settings = load_settings()
        self.use_cases = use_cases(self.settings)
        self.own = own or {}
        # The use cases whose models this replica loads, watches and scores.
        self.models_here = models_of or tuple(n for n in self.use_cases if n not in self.own)
        # `/invocations` names no model: it answers for the first use case.
        self.default_model = next(iter(self.use_cases))
        self.online_store = make_online_store(self.settings)
        self.signatures = {name: Signature.of(spec) for name, spec in self.use_cases.items()}
        # Posted events and labels reach the ingress only; a use case's own deployment reads the
        # features of its event rows and lands nothing.
        ingress = not models_of
        # Without the home's filesystem (a replica on another node), posts are held in PostgreSQL.
        self.inbox = landing_inbox(self.settings) if ingress else None
        self.ingestors = {
            name: EventIngestor(self.settings, self.use_cases[name], self.online_store, self.inbox)
            for name in (self.use_cases if ingress else models_of)
        }
        self.label_landings = (
            {name: LabelLanding(self.settings, spec, self.inbox) for name, spec in self.use_cases.items()}
            if ingress
            else {}
        )
        self.routing: dict[str, Routing] = {name: Routing() for name in self.models_here}
        self.load_errors: dict[str, str] = {}
        self.log = prediction_log(self.settings)
        self._stop = threading.Event()
        self.metrics = CollectorRegistry()
        self.requests = Counter(
            "ml_platform_requests",
            "Requests answered",
            ["model", "version", "route", "status"],
            registry=self.metrics,
        )
        self.errors = Counter(
            "ml_platform_errors",
            "Requests answered 4xx/5xx",
            ["model", "route", "status"],
            registry=self.metrics,
        )
        self.latency = Histogram(
            "ml_platform_request_latency_seconds",
            "Request latency",
            ["model", "version", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.metrics,
        )
        self.log_failures = Counter(
            "ml_platform_prediction_log_failures",
            "Predictions refused (503) or shadow scores dropped: the prediction log could not be written",
            ["model", "kind"],
            registry=self.metrics,
        )
        threading.Thread(target=self._watch_loop, daemon=True).start()

    # --- models -------------------------------------------------------------------------

    def reconfigure(self, config: dict[str, Any]) -> None:
        """The champions the deployment was given; the registry watcher takes over from there."""
        for use_case, ref in config.get("models", {}).items():
            if use_case in self.routing:
                self._adopt(use_case, CHAMPION, ModelRef(**ref))

    def _load(self, use_case: str, ref: ModelRef) -> Served:
        task = task_of(self.use_cases[use_case])
        pipeline = load_verified_model(ref, self.settings.model_cache, task)
        names = self.signatures[use_case].names
        served = Served(ref, pipeline, names, task, compile_model(task, pipeline, names))
        served.scores([{}])  # warm up
        return served

    def _adopt(self, use_case: str, role: str, ref: ModelRef | None) -> None:
        """Switch ``role`` of ``use_case`` to ``ref`` once it is loaded, verified and warm."""
        routing = self.routing[use_case]
        current = getattr(routing, role)
        if ref is None or (current is not None and current.ref == ref):
            if ref is None and current is not None and role == CHALLENGER:
                self.routing[use_case] = Routing(routing.champion, None, routing.canary_share, routing.shadow)
            return
        try:
            served = self._load(use_case, ref)
        except Exception as exc:  # refuse it; whatever serves now keeps serving
            self.load_errors[use_case] = f"v{ref.version} refused: {exc}"
            logger.error("%s: %s", use_case, self.load_errors[use_case])
            return
        self.load_errors.pop(use_case, None)
        routing = self.routing[use_case]
        if role == CHAMPION:
            self.routing[use_case] = Routing(served, routing.challenger, routing.canary_share, routing.shadow)
        else:
            self.routing[use_case] = Routing(routing.champion, served, routing.canary_share, routing.shadow)

    def _watch_loop(self) -> None:
        client = configure(self.settings)
        while not self._stop.wait(WATCH_S):
            for use_case in self.models_here:
                try:
                    tags = client.get_registered_model(use_case).tags
                except Exception:
                    continue  # not registered yet
                self._adopt(use_case, CHAMPION, alias_ref(self.settings, use_case, CHAMPION))
                self._adopt(use_case, CHALLENGER, alias_ref(self.settings, use_case, CHALLENGER))
                routing = self.routing[use_case]
                share = float(tags.get(CANARY_TAG, 0) or 0)
                shadow = tags.get(SHADOW_TAG) == "true"
                if (share, shadow) != (routing.canary_share, routing.shadow):
                    self.routing[use_case] = Routing(routing.champion, routing.challenger, share, shadow)

    # --- prediction log -----------------------------------------------------------------

    def _log(self, use_case: str, records: list[dict]) -> None:
        """Write before answering: an answered prediction is in the log, or it is not answered."""
        try:
            self.log.append(use_case, records)
        except PredictionLogError as exc:
            self.log_failures.labels(use_case, "served").inc(len(records))
            raise RequestError(
                503, f"{exc.strerror}: the prediction could not be recorded, so it is not answered"
            ) from None

    def __del__(self) -> None:
        self._stop.set()
        self.log.close()
        if self.inbox is not None:
            self.inbox.close()

    # --- request handling ---------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        self._check_token(request.headers.get("authorization"))

    def _check_token(self, authorization: str | None) -> None:
        token = self.settings.api_token
        if token and authorization != f"Bearer {token}":
            raise RequestError(401, "missing or wrong bearer token (Authorization: Bearer <token>)")

    async def _json(self, request: Request, csv: bool = False) -> Any:
        """The JSON body (or, where ``csv`` is allowed, a ``text/csv`` one as ``CsvBody``)."""
        self._authorize(request)
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        is_csv = csv and kind == "text/csv"
        if kind not in ("application/json", "") and not kind.endswith("+json") and not is_csv:
            accepted = "application/json or text/csv" if csv else "application/json"
            raise RequestError(415, f"content type {kind!r} is not supported: send {accepted}")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise RequestError(413, f"body of {declared} bytes is over the limit of {MAX_BODY_BYTES}")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise RequestError(413, f"body of {len(body)} bytes is over the limit of {MAX_BODY_BYTES}")
        if not body:
            raise RequestError(422, "request body is empty; send a JSON object")
        if is_csv:
            try:
                return CsvBody(body.decode("utf-8-sig"))
            except UnicodeDecodeError as exc:
                raise RequestError(422, f"the CSV body is not UTF-8: {exc}") from None
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise RequestError(422, f"request body is not valid JSON: {exc}") from None

    def _use_case(self, name: str) -> Signature:
        if name not in self.use_cases:
            raise RequestError(404, f"unknown model {name!r}; served: {sorted(self.use_cases)}")
        return self.signatures[name]

    def _features(self, use_case: str, rows: list[Row]) -> tuple[list[dict], list[dict]]:
        """Feature values per row and what to echo about their origin (entity, feature age)."""
        spec = self.use_cases[use_case]
        wanted = [r.entity for r in rows if r.features is None and r.event is None]
        try:
            vectors = self.online_store.get_many(use_case, wanted) if wanted else []
        except Exception as exc:  # down or locked: say which store; rows with features still answer
            raise RequestError(503, unavailable(self.online_store, exc)) from None
        found = dict(zip(wanted, vectors, strict=True))
        features, echoes = [], []
        for index, row in enumerate(rows):
            if row.features is not None:
                features.append(row.features)
                echoes.append({spec.entity: row.entity} if row.entity else {})
                continue
            if row.event is not None:
                moment, vector = self._event_features(use_case, row.event, f"row {index}")
                features.append(vector)
                echoes.append({spec.entity: row.entity, "feature_event_timestamp": moment.isoformat()})
                continue
            vector = found[row.entity]
            if vector is None:
                raise RequestError(404, f"unknown {spec.entity} {row.entity!r}: no online features")
            age = vector.age()
            if age > spec.features.ttl:
                raise RequestError(
                    409,
                    f"features of {spec.entity} {row.entity!r} are {age.total_seconds():.0f} s old, "
                    f"older than the use case's TTL of {spec.features.ttl.total_seconds():.0f} s",
                )
            features.append(vector.features)
            echoes.append(
                {
                    spec.entity: row.entity,
                    "feature_event_timestamp": vector.event_timestamp.isoformat(),
                    "feature_age_s": round(age.total_seconds(), 3),
                }
            )
        return features, echoes

    def _event_features(self, use_case: str, event: dict, where: str) -> tuple[dt.datetime, dict]:
        try:
            return self.ingestors[use_case].features_of_event(event, where)
        except EventError as exc:
            raise RequestError(422, str(exc)) from None
        except OnlineStoreDown as exc:
            raise RequestError(503, str(exc)) from None

    # No wait for more: a lone request is scored at once; under load, requests that arrived
    # while the previous batch was scored form the next one (measured: p50 at 1 client 18.9 -> 15.4 ms,
    # throughput at 32 clients unchanged).
    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0)
    async def _score_batch(self, items: list[tuple[Served, list[dict]]]) -> list[np.ndarray]:
        """Concurrent requests scored together: one model call per model in the batch."""
        results: list[np.ndarray | None] = [None] * len(items)
        by_model: dict[int, list[int]] = {}
        for i, (served, _) in enumerate(items):
            by_model.setdefault(id(served), []).append(i)
        for indexes in by_model.values():
            served = items[indexes[0]][0]
            scores = served.scores([row for i in indexes for row in items[i][1]])
            offset = 0
            for i in indexes:
                n = len(items[i][1])
                results[i] = scores[offset : offset + n]
                offset += n
        return results

    async def _score(
        self, use_case: str, rows: list[Row], route: str, started: float
    ) -> tuple[Served, str, list[dict]]:
        if use_case in self.own:
            try:
                scored = await self.own[use_case].score_rows.remote(
                    use_case, rows, route, time.perf_counter() - started
                )
            except Exception as exc:  # Serve's back-pressure, a replica lost mid-call
                raise RequestError(
                    503, f"{own_deployment(use_case)} did not answer: {first_line(exc)}"
                ) from None
            if isinstance(scored, Refused):
                raise RequestError(scored.status, scored.message)
            return scored
        routing = self.routing[use_case]
        if routing.champion is None:
            reason = self.load_errors.get(use_case, "no champion deployed yet")
            raise RequestError(503, f"model {use_case!r} is not being served: {reason}")
        served, role = routing.champion, CHAMPION
        if routing.challenger and not routing.shadow and random.random() < routing.canary_share:
            served, role = routing.challenger, CHALLENGER
        features, echoes = self._features(use_case, rows)
        scores = await self._score_batch((served, features))
        latency_ms = (time.perf_counter() - started) * 1000
        now = dt.datetime.now(dt.UTC).isoformat()
        outputs = [
            {"prediction_id": uuid.uuid4().hex, **echo, **answer}
            for echo, answer in zip(echoes, served.task.answers(served.pipeline, scores), strict=True)
        ]
        self._log(
            use_case,
            [
                {
                    **output,
                    "model_version": served.ref.version,
                    "served_by": role,
                    "route": route,
                    "requested_at": now,
                    "latency_ms": round(latency_ms, 3),
                    "features": row,
                }
                for row, output in zip(features, outputs, strict=True)
            ],
        )
        if routing.shadow and routing.challenger:
            asyncio.get_running_loop().create_task(
                self._shadow(use_case, routing.challenger, features, outputs)
            )
        return served, role, outputs

    async def score_rows(
        self, use_case: str, rows: list[Row], route: str, waited_s: float
    ) -> tuple[Served, str, list[dict]] | Refused:
        """``_score`` for the ingress, on a deployment of the use case's own: what is served comes
        back without its model, a refusal as a value (Ray would wrap a raised one)."""
        try:
            served, role, outputs = await self._score(use_case, rows, route, time.perf_counter() - waited_s)
        except RequestError as exc:
            return Refused(exc.status, exc.message)
        return replace(served, pipeline=None, compiled=None), role, outputs

    async def _shadow(self, use_case: str, shadow: Served, features: list[dict], outputs: list[dict]) -> None:
        """The challenger scores the same rows off the response path; logged as lines of their own."""
        scores = shadow.task.score_values(await self._score_batch((shadow, features)))
        score_output = shadow.task.score_output
        try:
            self.log.append(
                use_case,
                [
                    {
                        SHADOW_OF: output["prediction_id"],
                        "shadow": {"model_version": shadow.ref.version, score_output: float(score)},
                    }
                    for output, score in zip(outputs, scores, strict=True)
                ],
            )
        except PredictionLogError:
            self.log_failures.labels(use_case, "shadow").inc(len(outputs))

    async def _answer(
        self, model: str, route: str, request: Request | None, parse, shape, csv: bool = False, read=None
    ) -> Response:
        start = time.perf_counter()
        version = "none"
        try:
            signature = self._use_case(model)
            body = await (read(request) if read else self._json(request, csv))
            rows = parse(signature, body)
            served, role, outputs = await self._score(model, rows, route, start)
            version = served.ref.version
            answer = shape(model, served, role, outputs)
            response = answer if isinstance(answer, Response) else JSONResponse(answer)
        except RequestError as exc:
            self.errors.labels(model, route, str(exc.status)).inc()
            response = _error(exc.status, exc.message)
        self.requests.labels(model, version, route, str(response.status_code)).inc()
        self.latency.labels(model, version, route).observe(time.perf_counter() - start)
        return response

    @api.post("/v1/models/{model}/predict", openapi_extra=_json_body())
    async def predict(self, model: str, request: Request) -> Response:
        single: list[bool] = []

        def parse(signature, payload):
            rows, flat = predict_rows(signature, payload)
            single.append(flat)
            return rows

        def shape(name, served, role, outputs):
            head = {"model": name, "model_version": served.ref.version, "served_by": role}
            return {**head, **outputs[0]} if single[0] else {**head, "predictions": outputs}

        return await self._answer(model, "predict", request, parse, shape)

    def _v2_handlers(self, model: str):
        """How a v2 request to ``model`` is read into rows and its outputs shaped into an answer
        (binary outputs when the request asks for them): one pair for HTTP and gRPC."""
        request_id: list[Any] = []
        choice: list[tuple[list[str], set[str]]] = []

        def parse(signature, payload):
            if isinstance(payload, dict) and "id" in payload:
                request_id.append(payload["id"])
            rows = v2_rows(signature, payload)
            outputs = [o.name for o in (*task_of(self.use_cases[model]).outputs, PREDICTION_ID)]
            choice.append(requested_outputs(payload, outputs))
            return rows

        def shape(name, served, role, outputs):
            n = len(outputs)
            available = {o.name: o for o in (*served.task.outputs, PREDICTION_ID)}
            names, binary = choice[0]
            body = {
                "model_name": name,
                "model_version": served.ref.version,
                **({"id": request_id[0]} if request_id else {}),
                "parameters": {"served_by": role},
                "outputs": [
                    {
                        "name": o.name,
                        "datatype": o.datatype,
                        "shape": [n],
                        "data": [r[o.name] for r in outputs],
                    }
                    for o in (available[name] for name in names)
                ],
            }
            if not binary:
                return body
            content, header_length = encode_response(body, binary)
            return Response(
                content,
                media_type="application/octet-stream",
                headers={"Inference-Header-Content-Length": str(header_length)},
            )

        return parse, shape

    @api.post("/v2/models/{model}/infer", openapi_extra=_json_body())
    async def infer(self, model: str, request: Request) -> Response:
        parse, shape = self._v2_handlers(model)
        return await self._answer(model, "v2_infer", request, parse, shape, read=self._v2_body)

    async def grpc_infer(self, model: str, payload: dict, authorization: str | None) -> tuple[int, dict]:
        """A v2 request that came over gRPC (``serving/grpc_v2.py``), as its JSON form: the status and
        JSON answer, scored, logged and counted like ``/v2/models/{model}/infer``."""

        async def read(_: None) -> dict:
            self._check_token(authorization)
            return payload

        parse, shape = self._v2_handlers(model)
        response = await self._answer(model, "grpc_infer", None, parse, shape, read=read)
        return response.status_code, json.loads(response.body)

    async def _v2_body(self, request: Request) -> Any:
        """A v2 request in JSON, or in the binary tensor extension (decoded to its JSON form)."""
        header_length = request.headers.get(V2_BINARY_HEADER)
        if header_length is None:
            return await self._json(request)
        self._authorize(request)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise RequestError(413, f"body of {len(body)} bytes is over the limit of {MAX_BODY_BYTES}")
        return decode_request(body, header_length)

    def _mlflow_shape(self, name, served, role, outputs):
        return {"predictions": outputs, "model": name, "model_version": served.ref.version, "served_by": role}

    @staticmethod
    def _mlflow_rows(signature: Signature, payload: Any) -> list[Row]:
        if isinstance(payload, CsvBody):
            return csv_rows(signature, payload.text)
        return mlflow_rows(signature, payload)

    @api.post("/invocations", openapi_extra=_json_body())
    async def invocations(self, request: Request) -> Response:
        return await self._answer(
            self.default_model, "invocations", request, self._mlflow_rows, self._mlflow_shape, csv=True
        )

    @api.post("/v1/models/{model}/invocations", openapi_extra=_json_body())
    async def model_invocations(self, model: str, request: Request) -> Response:
        return await self._answer(
            model, "invocations", request, self._mlflow_rows, self._mlflow_shape, csv=True
        )

    # MLflow's scoring server: ping and health answer 200 once a model is loaded, 404 before.
    @api.get("/ping")
    @api.get("/health")
    async def ping(self) -> Response:
        loaded = any(r.champion for r in self.routing.values())
        return Response("\n", status_code=200 if loaded else 404, media_type="application/json")

    @api.get("/version")
    async def version(self) -> Response:
        return Response(package_version("mlflow"), media_type="application/json")

    # KServe v1: the model's readiness, and `{"instances": [...]}` -> `{"predictions": [...]}`.
    @api.get("/v1/models/{model}")
    async def kserve_model(self, model: str) -> JSONResponse:
        if model not in self.use_cases:
            return _error(404, f"unknown model {model!r}; served: {sorted(self.use_cases)}")
        return JSONResponse({"name": model, "ready": (await self._state(model)).champion is not None})

    @api.post("/v1/models/{model}:predict", openapi_extra=_json_body())
    async def kserve_predict(self, model: str, request: Request) -> Response:
        def parse(signature, payload):
            if not isinstance(payload, dict) or set(payload) != {"instances"}:
                raise RequestError(422, 'KServe v1 takes {"instances": [...]}')
            return predict_rows(signature, payload)[0]

        def shape(name, served, role, outputs):
            return {"predictions": outputs, "model_version": served.ref.version, "served_by": role}

        return await self._answer(model, "kserve_v1", request, parse, shape)

    @api.post("/v1/events/{use_case}", status_code=202, openapi_extra=_json_body())
    async def events(self, use_case: str, request: Request) -> Response:
        try:
            if use_case not in self.ingestors:
                raise RequestError(404, f"unknown use case {use_case!r}; known: {sorted(self.ingestors)}")
            payload = await self._json(request)
            ingested = self.ingestors[use_case].ingest(payload)
        except RequestError as exc:
            return _error(exc.status, exc.message)
        except EventError as exc:
            return _error(422, str(exc))
        except OSError as exc:  # a full disk, the inbox's database down: the caller sends it again
            return _error(503, f"the events were not landed ({exc.strerror}); none was kept, send them again")
        body: dict[str, Any] = {"accepted": ingested.accepted}
        if ingested.online_error:
            body["online_features"] = f"not updated ({ingested.online_error}); the batch path adds them"
        return JSONResponse(body, status_code=202)

    @api.post("/v1/labels/{use_case}", status_code=202, openapi_extra=_json_body())
    async def labels(self, use_case: str, request: Request) -> Response:
        try:
            if use_case not in self.label_landings:
                raise RequestError(
                    404, f"unknown use case {use_case!r}; known: {sorted(self.label_landings)}"
                )
            payload = await self._json(request)
            landed = self.label_landings[use_case].land(payload)
        except RequestError as exc:
            return _error(exc.status, exc.message)
        except LabelError as exc:
            return _error(422, str(exc))
        except OSError as exc:
            return _error(503, f"the labels were not landed ({exc.strerror}); none was kept, send them again")
        body = {
            "accepted": landed.accepted,
            "days": [landed.first_day.isoformat(), landed.last_day.isoformat()],
            "file": landed.file,
        }
        return JSONResponse(body, status_code=202)

    @api.get("/v2/health/live")
    async def live(self) -> dict[str, bool]:
        return {"live": True}

    def model_state(self, model: str) -> ModelState:
        """What this replica serves for ``model`` (one of ``models_here``)."""
        routing = self.routing[model]
        return ModelState(
            champion=routing.champion.ref.version if routing.champion else None,
            challenger=routing.challenger.ref.version if routing.challenger else None,
            canary_share=routing.canary_share,
            shadow=routing.shadow,
            load_error=self.load_errors.get(model),
        )

    async def _state(self, model: str) -> ModelState:
        if model not in self.own:
            return self.model_state(model)
        try:
            return await self.own[model].model_state.remote(model)
        except Exception as exc:
            return ModelState(
                None, None, 0.0, False, f"{own_deployment(model)} did not answer: {first_line(exc)}"
            )

    async def v2_ready(self) -> bool:
        for model in self.use_cases:
            if (await self._state(model)).champion is not None:
                return True
        return False

    @api.get("/v2/health/ready")
    async def ready(self) -> JSONResponse:
        ready = await self.v2_ready()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @api.get("/v2")
    async def server_metadata(self) -> dict[str, Any]:
        return {"name": "ml_platform", "version": api.version, "extensions": ["binary_tensor_data"]}

    async def v2_model_ready(self, model: str) -> tuple[int, dict[str, Any]]:
        if model not in self.use_cases:
            return 404, {"error": f"unknown model {model!r}; served: {sorted(self.use_cases)}"}
        ready = (await self._state(model)).champion is not None
        return (200 if ready else 503), {"name": model, "ready": ready}

    @api.get("/v2/models/{model}/ready")
    async def model_ready(self, model: str) -> JSONResponse:
        status, body = await self.v2_model_ready(model)
        return JSONResponse(body, status_code=status)

    async def v2_metadata(self, model: str) -> tuple[int, dict[str, Any]]:
        """The model's v2 metadata, 503 while no champion is served (the body says why)."""
        if model not in self.use_cases:
            return 404, {"error": f"unknown model {model!r}; served: {sorted(self.use_cases)}"}
        state = await self._state(model)
        signature = self.signatures[model]
        body = {
            "name": model,
            "versions": [state.champion] if state.champion else [],
            "platform": "sklearn",
            "inputs": [{"name": n, "datatype": "FP64", "shape": [-1]} for n in signature.names],
            "outputs": [
                {"name": o.name, "datatype": o.datatype, "shape": [-1]}
                for o in (*task_of(self.use_cases[model]).outputs, PREDICTION_ID)
            ],
            "parameters": {
                "challenger_version": state.challenger,
                "canary_share": state.canary_share,
                "shadow": state.shadow,
                **({"load_error": state.load_error} if state.load_error else {}),
                **({"deployment": own_deployment(model)} if model in self.own else {}),
            },
        }
        return (200 if state.champion else 503), body

    @api.get("/v2/models/{model}")
    async def metadata(self, model: str) -> JSONResponse:
        status, body = await self.v2_metadata(model)
        return JSONResponse(body, status_code=status)

    @api.get("/metrics")
    async def prometheus(self) -> Response:
        text = generate_latest(service_metrics(self.metrics))
        return Response(text, media_type="text/plain; version=0.0.4")


def own_deployment(use_case: str) -> str:
    """The name of the Serve deployment of a use case that declares ``serving:``."""
    return f"ModelServer_{use_case}"


REPLICA_OPTIONS: dict[str, Any] = {
    "max_ongoing_requests": 64,
    # Beyond this many waiting requests Serve answers 503 at once instead of growing latency.
    "max_queued_requests": 256,
    "health_check_period_s": 5,
    "graceful_shutdown_timeout_s": 10,
}


@serve.deployment(**REPLICA_OPTIONS)
@serve.ingress(api)
class ModelServer(ModelReplica):
    """The HTTP ingress (Serve takes one FastAPI deployment per application)."""


@serve.deployment(**REPLICA_OPTIONS)
class UseCaseModels(ModelReplica):
    """A use case's own deployment, reached by the ingress through a handle."""


def _openapi() -> dict[str, Any]:
    """The generated schema, with the served models listed in the path parameters that name them
    and request examples in the first use case's columns."""
    if api.openapi_schema is None:
        schema = get_openapi(
            title=api.title, version=api.version, description=api.description, routes=api.routes
        )
        known = use_cases()
        examples = request_examples(next(iter(known.values())))
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                for parameter in operation.get("parameters", []):
                    if parameter["name"] in ("model", "use_case"):
                        parameter["schema"]["enum"] = sorted(known)
                if path in examples and "requestBody" in operation:
                    operation["requestBody"]["content"]["application/json"]["example"] = examples[path]
        api.openapi_schema = schema
    return api.openapi_schema


api.openapi = _openapi


def build_app(
    models: dict[str, ModelRef],
    env: dict[str, str],
    shared: Deployment = Deployment(),
    own: dict[str, Deployment] | None = None,
):
    """The application to ``serve.run``; ``env`` reaches replicas (home, tracking URI, threads).
    ``shared`` sizes the ingress, which serves every use case not in ``own``; each use case in
    ``own`` gets a deployment of its own (``ModelServer_<use case>``) of that size."""

    def bound(deployment, size: Deployment, name: str, served: dict[str, ModelRef], **kwargs: Any):
        options = size.options()
        options["ray_actor_options"]["runtime_env"] = {"env_vars": env}
        config = {"models": {n: asdict(ref) for n, ref in served.items()}}
        return deployment.options(name=name, user_config=config, **options).bind(**kwargs)

    own = own or {}
    handles = {
        name: bound(
            UseCaseModels,
            size,
            own_deployment(name),
            {name: models[name]} if name in models else {},
            models_of=(name,),
        )
        for name, size in own.items()
    }
    shared_models = {n: r for n, r in models.items() if n not in own}
    return bound(ModelServer, shared, "ModelServer", shared_models, own=handles)
