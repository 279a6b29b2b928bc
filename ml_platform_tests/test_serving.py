"""Serving through Ray Serve: each protocol spoken by a real client, bad input answered 4xx,
canary and shadow, and no failed request while the champion changes under load."""

import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families

from ml_platform.serving.app import CANARY_TAG, SHADOW_TAG
from ml_platform.serving.deploy import APP_NAME, deploy, wait_until_serving
from ml_platform.serving.log import read_prediction_log
from ml_platform.serving.processes import descendants, processes
from ml_platform.settings import REPO_ROOT
from ml_platform.tasks import task_of
from ml_platform.training import registry
from ml_platform.usecases import get_use_case

from .conftest import DAYS, FIRST_DAY, USE_CASE, land_days, make_platform
from .disks import fill, small_disk
from .listening import listeners, process_tree

SPEC = get_use_case(USE_CASE)
NAMES = SPEC.features.feature_names()
# Per operation and phase; with the routes of /openapi.json, over 2,000 requests in all.
FUZZ_EXAMPLES_PER_OPERATION = 220


@pytest.fixture(scope="module")
def platform(tmp_path_factory, ray_cluster):
    platform = make_platform(tmp_path_factory.mktemp("serving-home"))
    land_days(platform, FIRST_DAY, DAYS)
    platform.ingest(FIRST_DAY, FIRST_DAY + dt.timedelta(days=DAYS - 1))
    platform.materialize(
        ["online_features", "training_set", "model", "model_evaluation", "champion", "deployment"]
    )
    return platform


def url(platform, path: str) -> str:
    return f"{platform.settings.serve_url}{path}"


def feature_rows(platform, n: int = 3) -> list[dict]:
    with platform.defs.resources["warehouse"].get_connection() as conn:
        frame = conn.sql(f"SELECT * FROM {USE_CASE}.features ORDER BY event_timestamp DESC LIMIT {n}").pl()
    return frame.select(NAMES).fill_null(0.0).to_dicts()


def champion_version(platform) -> str:
    return registry.alias_ref(platform.settings, USE_CASE, registry.CHAMPION).version


def test_open_inference_protocol_v2_with_tritons_client(platform):
    client = triton.InferenceServerClient(url=platform.settings.serve_url.removeprefix("http://"))
    assert client.is_server_live() and client.is_model_ready(USE_CASE)
    metadata = client.get_model_metadata(USE_CASE)
    assert metadata["versions"] == [champion_version(platform)]
    assert [i["name"] for i in metadata["inputs"]] == NAMES

    by_entity = triton.InferInput("sensor_id", [2], "BYTES")
    by_entity.set_data_from_numpy(np.array([b"s-1", b"s-2"], dtype=object), binary_data=False)
    outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("anomaly_score", "is_anomaly")]
    result = client.infer(USE_CASE, [by_entity], outputs=outputs)
    assert result.as_numpy("anomaly_score").shape == (2,)
    assert result.get_response()["model_version"] == champion_version(platform)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["anomaly_score", "is_anomaly"]
    # The client's defaults: binary tensors in, every output in binary out.
    by_entity.set_data_from_numpy(np.array([b"s-1", b"s-2"], dtype=object))
    binary = client.infer(USE_CASE, [by_entity])
    np.testing.assert_array_equal(binary.as_numpy("anomaly_score"), result.as_numpy("anomaly_score"))
    np.testing.assert_array_equal(binary.as_numpy("is_anomaly"), result.as_numpy("is_anomaly"))
    assert all(len(i) == 32 for i in binary.as_numpy("prediction_id"))
    assert all("binary_data_size" in o["parameters"] for o in binary.get_response()["outputs"])

    rows = feature_rows(platform, 2)
    tensors = []
    for name in NAMES:
        tensor = triton.InferInput(name, [2], "FP64")
        tensor.set_data_from_numpy(np.array([r[name] for r in rows], dtype=np.float64))
        tensors.append(tensor)
    by_features = client.infer(USE_CASE, tensors, outputs=outputs[:1])
    expected = httpx.post(url(platform, f"/v1/models/{USE_CASE}/predict"), json={"instances": rows}).json()
    np.testing.assert_allclose(
        by_features.as_numpy("anomaly_score"), [p["anomaly_score"] for p in expected["predictions"]]
    )
    assert by_features.as_numpy("is_anomaly") is None  # only what was asked for

    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "sensor_id",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 9},
                }
            ]
        }
    ).encode()
    short = httpx.post(
        url(platform, f"/v2/models/{USE_CASE}/infer"),
        content=header + b"\x03\0\0\0s-1",
        headers={"Inference-Header-Content-Length": str(len(header))},
        timeout=30,
    )
    assert short.status_code == 400 and "declares 9 bytes but only 7 remain" in short.json()["error"]


def grpc_client(platform):
    import tritonclient.grpc as triton_grpc

    return triton_grpc.InferenceServerClient(platform.settings.grpc_address)


def grpc_status(call) -> str:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as refused:
        call()
    return f"{refused.value.status()} {refused.value.message()}"


def test_open_inference_protocol_v2_over_grpc_with_tritons_client(platform):
    import grpc
    import tritonclient.grpc as triton_grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    client = grpc_client(platform)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(USE_CASE)
    metadata = client.get_model_metadata(USE_CASE, as_json=True)
    assert metadata["versions"] == [champion_version(platform)]
    assert [i["name"] for i in metadata["inputs"]] == NAMES
    outputs = [o.name for o in task_of(SPEC).outputs]

    # The client's defaults: raw tensor contents in and out.
    by_entity = triton_grpc.InferInput(SPEC.entity, [2], "BYTES")
    by_entity.set_data_from_numpy(np.array([b"s-1", b"s-2"], dtype=object))
    result = client.infer(USE_CASE, [by_entity], request_id="grpc-1")
    answer = result.get_response(as_json=True)
    assert answer["model_version"] == champion_version(platform) and answer["id"] == "grpc-1"
    expected = httpx.post(
        url(platform, f"/v1/models/{USE_CASE}/predict"),
        json={"instances": [{SPEC.entity: "s-1"}, {SPEC.entity: "s-2"}]},
        timeout=30,
    ).json()["predictions"]
    for name in outputs:
        np.testing.assert_allclose(result.as_numpy(name), [p[name] for p in expected])
    ids = [i.decode() for i in result.as_numpy("prediction_id")]
    assert len(set(ids)) == 2 and all(len(i) == 32 for i in ids)

    rows = feature_rows(platform, 2)
    tensors = []
    for name in NAMES:
        tensor = triton_grpc.InferInput(name, [2], "FP64")
        tensor.set_data_from_numpy(np.array([r[name] for r in rows], dtype=np.float64))
        tensors.append(tensor)
    asked = [triton_grpc.InferRequestedOutput(outputs[0])]
    by_features = client.infer(USE_CASE, tensors, outputs=asked)
    expected = httpx.post(
        url(platform, f"/v1/models/{USE_CASE}/predict"), json={"instances": rows}, timeout=30
    ).json()["predictions"]
    np.testing.assert_allclose(by_features.as_numpy(outputs[0]), [p[outputs[0]] for p in expected])
    assert by_features.as_numpy("prediction_id") is None  # only what was asked for

    # Typed contents (what KServe's clients may send instead of raw bytes) score alike.
    request = service_pb2.ModelInferRequest(model_name=USE_CASE)
    for name in NAMES:
        tensor = request.inputs.add(name=name, datatype="FP64", shape=[2])
        tensor.contents.fp64_contents.extend(r[name] for r in rows)
    with grpc.insecure_channel(platform.settings.grpc_address) as channel:
        typed = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    index = [o.name for o in typed.outputs].index(outputs[0])
    np.testing.assert_allclose(
        np.frombuffer(typed.raw_output_contents[index], dtype="<f8"), [p[outputs[0]] for p in expected]
    )

    # Every answer is in the prediction log under its own route and counted in /metrics.
    deadline = time.monotonic() + 15
    while True:
        logged = {
            r["prediction_id"]: r
            for r in read_prediction_log(platform.settings.serving_log_dir, USE_CASE)
            if r["route"] == "grpc_infer"
        }
        if set(ids) <= set(logged) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(ids) <= set(logged)
    assert logged[ids[0]]["model_version"] == champion_version(platform)
    assert 'route="grpc_infer",status="200"' in httpx.get(url(platform, "/metrics"), timeout=30).text

    # Bad requests are refused with the status and message HTTP gives them.
    assert grpc_status(lambda: client.infer("no_such_model", [by_entity])).startswith(
        "StatusCode.NOT_FOUND unknown model 'no_such_model'"
    )
    wrong = triton_grpc.InferInput("nonsense", [1], "FP64")
    wrong.set_data_from_numpy(np.array([1.0]))
    refused = grpc_status(lambda: client.infer(USE_CASE, [wrong]))
    assert refused.startswith("StatusCode.INVALID_ARGUMENT") and "nonsense" in refused
    unknown = triton_grpc.InferInput(SPEC.entity, [1], "BYTES")
    unknown.set_data_from_numpy(np.array([b"no-such-entity"], dtype=object))
    refused = grpc_status(lambda: client.infer(USE_CASE, [unknown]))
    assert refused.startswith("StatusCode.NOT_FOUND") and "no-such-entity" in refused
    assert grpc_status(lambda: client.is_model_ready("no_such_model")).startswith("StatusCode.NOT_FOUND")


def test_mlflow_scoring_formats_agree(platform):
    rows = feature_rows(platform, 3)
    bodies = {
        "dataframe_split": {
            "dataframe_split": {"columns": NAMES, "data": [[r[n] for n in NAMES] for r in rows]}
        },
        "dataframe_records": {"dataframe_records": rows},
        "instances": {"instances": rows},
        "inputs": {"inputs": {n: [r[n] for r in rows] for n in NAMES}},
    }
    scores = {}
    for kind, body in bodies.items():
        for path in ("/invocations", f"/v1/models/{USE_CASE}/invocations"):
            response = httpx.post(url(platform, path), json=body, timeout=30)
            assert response.status_code == 200, (kind, path, response.text)
            assert response.json()["model_version"] == champion_version(platform)
            scores[(kind, path)] = [p["anomaly_score"] for p in response.json()["predictions"]]
    first = next(iter(scores.values()))
    assert all(np.allclose(s, first) for s in scores.values())


def test_mlflows_own_scoring_client_pings_invokes_and_a_csv_body_scores_alike(platform):
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    host, port = platform.settings.serve_url.removeprefix("http://").rsplit(":", 1)
    client = ScoringServerClient(host, int(port))
    client.wait_server_ready(timeout=30)  # polls GET /ping as MLflow's tooling does
    assert httpx.get(url(platform, "/health"), timeout=30).status_code == 200
    assert client.get_version() == importlib.metadata.version("mlflow")
    rows = feature_rows(platform, 3)
    invoked = client.invoke(pd.DataFrame(rows, columns=NAMES))
    lines = [
        ",".join(NAMES),
        *(",".join(repr(r[n]) if r[n] is not None else "" for n in NAMES) for r in rows),
    ]
    by_csv = httpx.post(
        url(platform, "/invocations"),
        content="\n".join(lines),
        headers={"content-type": "text/csv"},
        timeout=30,
    )
    assert by_csv.status_code == 200, by_csv.text
    expected = [p["anomaly_score"] for p in invoked["predictions"]]
    np.testing.assert_allclose([p["anomaly_score"] for p in by_csv.json()["predictions"]], expected)
    bad = httpx.post(
        url(platform, "/invocations"), content=f"{NAMES[0]}\nhigh", headers={"content-type": "text/csv"}
    )
    assert (
        bad.status_code == 422 and f"CSV line 2: field '{NAMES[0]}' must be a number" in bad.json()["error"]
    )


def test_kserve_v1_model_and_predict(platform):
    described = httpx.get(url(platform, f"/v1/models/{USE_CASE}"), timeout=30)
    assert described.json() == {"name": USE_CASE, "ready": True}
    assert httpx.get(url(platform, "/v1/models/nope"), timeout=30).status_code == 404
    rows = feature_rows(platform, 2)
    answer = httpx.post(url(platform, f"/v1/models/{USE_CASE}:predict"), json={"instances": rows}, timeout=30)
    assert answer.status_code == 200, answer.text
    expected = httpx.post(url(platform, f"/v1/models/{USE_CASE}/predict"), json={"instances": rows}).json()
    np.testing.assert_allclose(
        [p["anomaly_score"] for p in answer.json()["predictions"]],
        [p["anomaly_score"] for p in expected["predictions"]],
    )
    by_entity = httpx.post(
        url(platform, f"/v1/models/{USE_CASE}:predict"),
        json={"instances": [{SPEC.entity: "s-1"}]},
        timeout=30,
    )
    assert by_entity.status_code == 200 and by_entity.json()["predictions"][0][SPEC.entity] == "s-1"


BAD = [
    (
        "missing field",
        {"instances": [{n: 1.0 for n in NAMES[1:]}]},
        None,
        422,
        f"missing field(s) {NAMES[0]}",
    ),
    (
        "extra field",
        {"instances": [{**{n: 1.0 for n in NAMES}, "colour": 1.0}]},
        None,
        422,
        "unknown field(s) colour",
    ),
    (
        "wrong type",
        {"instances": [{**{n: 1.0 for n in NAMES}, "value": "high"}]},
        None,
        422,
        "'value' must be a number",
    ),
    (
        "infinity",
        json.dumps({"instances": [{**{n: 1.0 for n in NAMES}, "value": math.inf}]}).encode(),
        None,
        422,
        "must be finite",
    ),
    (
        "NaN",
        json.dumps({"instances": [{**{n: 1.0 for n in NAMES}, "value": math.nan}]}).encode(),
        None,
        422,
        "must be finite",
    ),
    (
        "out of range",
        {"instances": [{**{n: 1.0 for n in NAMES}, "value": 1e9}]},
        None,
        422,
        "outside the declared range",
    ),
    ("empty batch", {"instances": []}, None, 422, "is empty"),
    ("oversized batch", {"instances": [{"sensor_id": "s-1"}] * 1001}, None, 413, "at most 1000"),
    (
        "body over the limit",
        b'{"instances": [' + b'{"sensor_id": "s-1"},' * 60000 + b'{"sensor_id": "s-1"}]}',
        None,
        413,
        "over the limit",
    ),
    (
        "wrong content type",
        b"value=1",
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        "content type",
    ),
    ("not JSON", b"{not json", None, 422, "not valid JSON"),
    ("not an object", [1, 2, 3], None, 422, "JSON object"),
    ("unknown sensor", {"sensor_id": "no-such-sensor"}, None, 404, "no-such-sensor"),
]


@pytest.mark.parametrize(("case", "body", "headers", "status", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_answered_4xx_naming_the_problem(platform, case, body, headers, status, words):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = httpx.post(
        url(platform, f"/v1/models/{USE_CASE}/predict"), headers=headers, timeout=30, **kwargs
    )
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_bad_v2_and_mlflow_bodies_are_4xx(platform):
    cases = [
        (f"/v2/models/{USE_CASE}/infer", {"inputs": []}),
        (f"/v2/models/{USE_CASE}/infer", {"inputs": [{"name": "value", "shape": [1], "datatype": "FP64"}]}),
        (
            f"/v2/models/{USE_CASE}/infer",
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]},
        ),
        ("/invocations", {"dataframe_split": {"columns": ["value"], "data": [[1, 2]]}}),
        ("/invocations", {"records": []}),
        ("/v2/models/nope/infer", {"inputs": []}),
    ]
    for path, body in cases:
        response = httpx.post(url(platform, path), json=body, timeout=30)
        assert 400 <= response.status_code < 500, (path, body, response.text)
        assert response.json()["error"]


def test_openapi_fuzzing_never_gets_a_5xx(platform, tmp_path):
    """Schemathesis generates valid and invalid requests for every operation of /openapi.json:
    at least 2,000 of them, none answered 5xx or with a traceback."""
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        url(platform, "/openapi.json"),
        "--checks",
        "not_a_server_error,no_traceback",
        "--max-examples",
        str(FUZZ_EXAMPLES_PER_OPERATION),
        "--request-timeout",
        "30",
        "--phases",
        "examples,coverage,fuzzing",
        "--generation-deterministic",
    ]
    env = os.environ | {
        "SCHEMATHESIS_HOOKS": "ml_platform_tests.schemathesis_hooks",
        "PYTHONPATH": str(REPO_ROOT),
    }
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # An unknown check name is a usage error (exit 2): passing means the hook's check ran too.
    cases = re.search(r"Test cases:\s*(\d+) generated", result.stdout)
    assert cases and int(cases.group(1)) >= 2000, result.stdout[-3000:]


class FailingServe:
    """Ray Serve's calls as ``run_together`` makes them, with the run failing and each app in
    the given status (the replica's message as Serve reports it)."""

    def __init__(self, statuses: dict[str, tuple[str, str]]) -> None:
        self.statuses, self.deleted = statuses, []

    def run_many(self, targets) -> None:
        raise RuntimeError("Deploying an application failed; see its status.")

    def status(self):
        ns = types.SimpleNamespace
        return ns(
            applications={
                name: ns(status=status, deployments={"ingress": ns(message=message)})
                for name, (status, message) in self.statuses.items()
            }
        )

    def delete(self, name: str) -> None:
        self.deleted.append(name)


TAKEN = (
    "The deployment failed to start 3 times in a row.\nRuntimeError: gRPC could not listen on "
    "127.0.0.1:8001 (Failed to bind): the port is in use; set ML_PLATFORM_GRPC_PORT to a free "
    "port, or to 0 to serve HTTP only"
)


def test_a_grpc_service_that_cannot_start_is_named_and_removed_while_http_serves(monkeypatch):
    from ray.serve.schema import ApplicationStatus

    from ml_platform.serving import deploy as deploying
    from ml_platform.serving.grpc_v2 import APP_NAME as GRPC_APP_NAME

    both = [types.SimpleNamespace(name=APP_NAME), types.SimpleNamespace(name=GRPC_APP_NAME)]
    serve = FailingServe(
        {APP_NAME: (ApplicationStatus.RUNNING, ""), GRPC_APP_NAME: (ApplicationStatus.DEPLOY_FAILED, TAKEN)}
    )
    monkeypatch.setattr(deploying, "serve", serve)
    with pytest.raises(
        RuntimeError,
        match=r"^the gRPC service did not start: .*gRPC could not listen on 127.0.0.1:8001 .*GRPC_PORT",
    ):
        deploying.run_together(both)
    assert serve.deleted == [GRPC_APP_NAME]

    # The HTTP app's own failure is Serve's, as it said it; nothing is removed.
    for failed, targets in (
        ({APP_NAME: (ApplicationStatus.DEPLOY_FAILED, "bad model")}, both),
        ({}, both[:1]),
    ):
        serve = FailingServe(failed)
        monkeypatch.setattr(deploying, "serve", serve)
        with pytest.raises(RuntimeError, match="^Deploying an application failed"):
            deploying.run_together(targets)
        assert serve.deleted == []


def test_openapi_examples_are_requests_in_the_first_use_cases_columns():
    """The documented examples come from the spec and each passes its route's validation."""
    from ml_platform.serving.app import api
    from ml_platform.serving.events import validate_event
    from ml_platform.serving.labels import window_labels
    from ml_platform.serving.protocols import Signature, mlflow_rows, predict_rows, v2_rows

    paths = api.openapi()["paths"]

    def example(path: str):
        return paths[path]["post"]["requestBody"]["content"]["application/json"]["example"]

    signature = Signature.of(SPEC)
    entity = example("/v1/models/{model}/predict")[SPEC.entity]
    assert predict_rows(signature, example("/v1/models/{model}/predict"))[0][0].entity == entity
    assert v2_rows(signature, example("/v2/models/{model}/infer"))[0].entity == entity
    assert mlflow_rows(signature, example("/invocations"))[0].entity == entity
    event = example("/v1/events/{use_case}")
    assert set(event) == set(SPEC.required_columns)
    assert validate_event(SPEC, event, 0)[1] == event
    windows, first, _ = window_labels(SPEC, example("/v1/labels/{use_case}"))
    assert windows[0][0] == entity and str(first) == SPEC.partitions_start


def test_status_shows_the_cluster_and_what_it_serves(platform):
    """`ml-platform status` on a running platform: the Ray cluster (required: RAY_ADDRESS names it)
    with its node, serving with the champion's version, and gRPC listening."""
    from ml_platform.status import UP, platform_status

    parts = {p.part: p for p in platform_status(platform.settings, [USE_CASE])}
    cluster, serving = parts["ray cluster"], parts["serving"]
    assert cluster.state == UP and cluster.required and cluster.detail.startswith("1 nodes alive")
    assert serving.state == UP and f"{USE_CASE} v" in serving.detail
    assert f"gRPC {platform.settings.grpc_address} listening" in serving.detail
    assert parts["warehouse"].state == UP and not any(p.failed for p in parts.values())


def test_metrics_are_labelled_by_model_and_version(platform):
    httpx.post(url(platform, f"/v1/models/{USE_CASE}/predict"), json={"sensor_id": "s-1"}, timeout=30)
    text = httpx.get(url(platform, "/metrics"), timeout=30).text
    version = champion_version(platform)
    assert (
        f'ml_platform_requests_total{{model="{USE_CASE}",route="predict",status="200",version="{version}"}}'
        in text
    )
    assert "ml_platform_request_latency_seconds_bucket" in text


def _second_version(platform) -> registry.ModelRef:
    """Another registered version of the model (same features, other seed), for switching."""
    with platform.defs.resources["warehouse"].get_connection() as conn:
        train = conn.sql(f"SELECT * FROM {USE_CASE}.training_set WHERE split = 'train'").pl()

    features = train.select(NAMES).to_pandas()
    pipeline = task_of(SPEC).build(SPEC.model.algorithm, SPEC.model.params, seed=7).fit(features)
    return registry.log_candidate(platform.settings, SPEC, pipeline, features.head(5), {}, {}, {})


def wait_for_version(platform, version: str, timeout_s: float = 10) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        body = httpx.post(
            url(platform, f"/v1/models/{USE_CASE}/predict"), json={"sensor_id": "s-1"}, timeout=30
        ).json()
        if body.get("model_version") == version:
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"v{version} not served within {timeout_s} s")


def test_no_failed_request_while_promoting_and_rolling_back(platform):
    before = champion_version(platform)
    other = _second_version(platform)
    stop, outcomes, errors = threading.Event(), Counter(), []
    made = [0] * 16  # requests each client thread made

    def client(index: int):
        with httpx.Client(timeout=30) as session:
            while not stop.is_set():
                made[index] += 1
                response = None
                try:
                    response = session.post(
                        url(platform, f"/v1/models/{USE_CASE}/predict"), json={SPEC.entity: "s-3"}
                    )
                    outcomes[(response.status_code, response.json().get("model_version"))] += 1
                except Exception as exc:  # a non-JSON 502 page too: every failure is counted
                    errors.append(f"{getattr(response, 'status_code', 'no answer')}: {exc!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    time.sleep(5)
    registry.move_alias(platform.settings, USE_CASE, other.version, registry.CHAMPION, "load test", "test")
    switched_in = wait_for_version(platform, other.version)
    time.sleep(5)
    registry.rollback(platform.settings, USE_CASE, "test", "load test rollback")
    back_in = wait_for_version(platform, before)
    time.sleep(max(5.0, 25 - (time.monotonic() - started)))
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {status for status, _ in outcomes} == {200}
    assert {version for _, version in outcomes} == {before, other.version}
    # Every thread kept sending to the end, and every request it made has an answer counted.
    assert min(made) > 5 and sum(outcomes.values()) == sum(made) > 100
    assert switched_in < 10 and back_in < 10


def test_canary_and_shadow(platform):
    challenger = _second_version(platform)
    client = registry.configure(platform.settings)
    registry.move_alias(
        platform.settings, USE_CASE, challenger.version, registry.CHALLENGER, "test canary", "test"
    )
    client.set_registered_model_tag(USE_CASE, CANARY_TAG, "0.5")
    client.set_registered_model_tag(USE_CASE, SHADOW_TAG, "false")
    try:
        deadline = time.monotonic() + 15
        served = Counter()
        while time.monotonic() < deadline and len(served) < 2:
            body = httpx.post(
                url(platform, f"/v1/models/{USE_CASE}/predict"), json={"sensor_id": "s-1"}, timeout=30
            ).json()
            served[(body["served_by"], body["model_version"])] += 1
        assert ("challenger", challenger.version) in served and (
            "champion",
            champion_version(platform),
        ) in served

        client.set_registered_model_tag(USE_CASE, SHADOW_TAG, "true")
        time.sleep(5)  # replicas read the registry every 2 s
        ids = []
        for _ in range(10):
            body = httpx.post(
                url(platform, f"/v1/models/{USE_CASE}/predict"), json={"sensor_id": "s-2"}, timeout=30
            ).json()
            assert body["served_by"] == "champion"  # in shadow mode the champion always answers
            ids.append(body["prediction_id"])
        time.sleep(2)  # shadow scores are logged off the response path, after the answer
        logged = {
            r["prediction_id"]: r for r in read_prediction_log(platform.settings.serving_log_dir, USE_CASE)
        }
        assert all(logged[i]["shadow"]["model_version"] == challenger.version for i in ids)
        platform.materialize(["predictions"])
        with platform.defs.resources["warehouse"].get_connection() as conn:
            shadows = conn.sql(
                f"SELECT prediction_id, shadow_version FROM {USE_CASE}.predictions WHERE prediction_id IN "
                f"({', '.join(repr(i) for i in ids)})"
            ).fetchall()
        assert sorted(shadows) == sorted((i, challenger.version) for i in ids)
    finally:
        client.set_registered_model_tag(USE_CASE, CANARY_TAG, "0")
        client.set_registered_model_tag(USE_CASE, SHADOW_TAG, "false")


def test_a_model_that_fails_verification_is_never_switched_to(platform):
    before = champion_version(platform)
    bad = _second_version(platform)
    registry.configure(platform.settings).set_model_version_tag(
        USE_CASE, bad.version, registry.SHA_TAG, "0" * 64
    )
    registry.move_alias(platform.settings, USE_CASE, bad.version, registry.CHAMPION, "test bad model", "test")
    try:
        time.sleep(6)
        meta = httpx.get(url(platform, f"/v2/models/{USE_CASE}"), timeout=30).json()
        assert meta["versions"] == [before]
        assert f"v{bad.version} refused" in meta["parameters"]["load_error"]
        body = httpx.post(
            url(platform, f"/v1/models/{USE_CASE}/predict"), json={"sensor_id": "s-1"}, timeout=30
        ).json()
        assert body["model_version"] == before
    finally:
        registry.rollback(platform.settings, USE_CASE, "test", "undo bad model")
    wait_for_version(platform, before)


def replica_environments() -> list[dict[str, str]]:
    """The environment of every live Ray Serve replica process of the app, on this process's
    cluster (another head on the machine may serve replicas of its own)."""
    found = []
    for pid in process_tree(os.getpid()):
        try:
            if b"ServeReplica:ml_platform" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            raw = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue  # ended meanwhile
        found.append(dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item))
    return found


def test_bearer_token_guards_prediction_routes(platform, monkeypatch):
    monkeypatch.setenv("ML_PLATFORM_API_TOKEN", "s3cret-for-test")
    from ml_platform.settings import load_settings

    settings = load_settings()
    deploy(settings)
    wait_until_serving(settings, USE_CASE, champion_version(platform))
    try:
        deadline = time.monotonic() + 60
        while True:  # replicas restart with the new environment
            refused = httpx.post(
                url(platform, f"/v1/models/{USE_CASE}/predict"), json={"sensor_id": "s-1"}, timeout=30
            )
            if refused.status_code == 401 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert refused.status_code == 401 and "bearer token" in refused.json()["error"]
        # Each replica was handed every setting: it loads the same settings as the deploying process.
        deadline = time.monotonic() + 60
        while True:  # replicas of the previous deployment drain for up to 10 s
            replicas = replica_environments()
            if replicas and all(load_settings(env) == settings for env in replicas):
                break
            assert time.monotonic() < deadline, [load_settings(env) for env in replicas]
            time.sleep(1)
        allowed = httpx.post(
            url(platform, f"/v1/models/{USE_CASE}/predict"),
            json={"sensor_id": "s-1"},
            headers={"Authorization": "Bearer s3cret-for-test"},
            timeout=30,
        )
        assert allowed.status_code == 200
        assert httpx.get(url(platform, "/v2/health/live"), timeout=30).status_code == 200
        # gRPC: the token as the call's `authorization` metadata.
        import tritonclient.grpc as triton_grpc

        by_entity = triton_grpc.InferInput(SPEC.entity, [1], "BYTES")
        by_entity.set_data_from_numpy(np.array([b"s-1"], dtype=object))
        client = grpc_client(platform)
        refused = grpc_status(lambda: client.infer(USE_CASE, [by_entity]))
        assert refused.startswith("StatusCode.UNAUTHENTICATED") and "bearer token" in refused
        token = {"authorization": "Bearer s3cret-for-test"}
        assert client.infer(USE_CASE, [by_entity], headers=token).as_numpy("prediction_id").shape == (1,)
    finally:
        monkeypatch.delenv("ML_PLATFORM_API_TOKEN")
        deploy(load_settings())


def _redis_server(port: int, folder: Path) -> subprocess.Popen:
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, "redis-server did not start"
            time.sleep(0.2)


def test_an_online_store_that_is_down_answers_503_naming_it_and_serving_returns_by_itself(
    platform, monkeypatch, tmp_path
):
    """A Redis of the test's own, stopped under serving: requests by entity answer 503 naming the
    store, requests with their feature rows still answer; once it is back, so are entities."""
    from ml_platform.features.online_store import make_online_store
    from ml_platform.serving.cluster import free_port
    from ml_platform.settings import load_settings

    embedded = make_online_store(platform.settings)
    states = {e: embedded.state(USE_CASE, e) for e in embedded.entities(USE_CASE)}
    port = free_port()
    store_url = f"redis://127.0.0.1:{port}/0"
    monkeypatch.setenv("ML_PLATFORM_ONLINE_STORE", store_url)
    settings = load_settings()
    server = _redis_server(port, tmp_path)
    predict = url(platform, f"/v1/models/{USE_CASE}/predict")
    try:
        make_online_store(settings).write_snapshot(USE_CASE, states)
        deploy(settings)
        wait_until_serving(settings, USE_CASE, champion_version(platform))
        deadline = time.monotonic() + 60
        while httpx.get(url(platform, "/v2/health/ready"), timeout=30).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert httpx.post(predict, json={SPEC.entity: "s-1"}, timeout=30).status_code == 200

        server.terminate()
        server.wait(timeout=30)
        down = httpx.post(predict, json={SPEC.entity: "s-1"}, timeout=30)
        assert down.status_code == 503, down.text
        assert f"online store redis://127.0.0.1:{port}/0" in down.json()["error"]
        by_rows = httpx.post(predict, json={"instances": feature_rows(platform, 2)}, timeout=30)
        assert by_rows.status_code == 200 and len(by_rows.json()["predictions"]) == 2
        # An event sent to be scored needs its entity's history: 503 naming the store, not a 500.
        scored = {SPEC.entity: "s-1", SPEC.timestamp: dt.datetime.now(dt.UTC).isoformat(), "value": 1.0}
        no_history = httpx.post(predict, json=scored, timeout=30)
        assert no_history.status_code == 503, no_history.text
        assert f"online store redis://127.0.0.1:{port}/0" in no_history.json()["error"]
        # An event is still accepted: landed durably, its online update left to the batch path.
        moment = dt.datetime.now(dt.UTC).isoformat()
        event = {SPEC.entity: "s-1", SPEC.timestamp: moment, "value": 50.0}
        accepted = httpx.post(url(platform, f"/v1/events/{USE_CASE}"), json=event, timeout=30)
        assert accepted.status_code == 202 and accepted.json()["accepted"] == 1, accepted.text
        assert f"online store redis://127.0.0.1:{port}/0" in accepted.json()["online_features"]
        landed = platform.landing.glob("events_*.jsonl")
        assert any(moment in path.read_text() for path in landed)

        server = _redis_server(port, tmp_path)  # back, empty: the online features are written again
        make_online_store(settings).write_snapshot(USE_CASE, states)
        deadline = time.monotonic() + 30
        while (back := httpx.post(predict, json={SPEC.entity: "s-1"}, timeout=30)).status_code != 200:
            assert time.monotonic() < deadline, back.text
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
        monkeypatch.delenv("ML_PLATFORM_ONLINE_STORE")
        deploy(load_settings())
        deadline = time.monotonic() + 60  # replicas on the embedded store again, for the next tests
        while httpx.post(predict, json={SPEC.entity: "s-1"}, timeout=30).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.5)


# --- faults under load: a replica killed, the prediction log's disk full -------------------


def replica_pids() -> set[int]:
    """The serving replicas' processes on this process's cluster."""
    return replica_pids_of(process_tree(os.getpid()))


def replica_pids_of(pids: set[int]) -> set[int]:
    """Which of ``pids`` are serving replicas (Ray names them after the deployment)."""
    found = set()
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"ServeReplica:ml_platform:ModelServer" in cmdline:
            found.add(pid)
    return found


def running_replicas() -> int:
    from ray import serve

    deployment = serve.status().applications[APP_NAME].deployments["ModelServer"]
    return deployment.replica_states.get("RUNNING", 0) if deployment.status == "HEALTHY" else 0


def wait_for(condition, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"{what} not within {timeout_s} s")


@pytest.fixture(scope="class")
def two_replicas_on_a_small_disk(platform, tmp_path_factory):
    """The same champion deployed on two replicas, logging to a 64 MB disk of its own. The module's
    last tests: the app is removed with its disk (each module deploys its own), which is quicker
    than deploying one replica again (12 s)."""
    from ray import serve

    with small_disk(tmp_path_factory.mktemp("prediction-log"), "64m") as disk:
        settings = dataclasses.replace(platform.settings, serve_replicas=2, prediction_log_dir=disk)
        deploy(settings)
        wait_for(lambda: running_replicas() == 2 and len(replica_pids()) == 2, 120, "two replicas")
        wait_until_serving(settings, USE_CASE, champion_version(platform))
        yield settings
        serve.delete(APP_NAME)
        wait_for(lambda: not replica_pids(), 60, "the replicas gone")


class Load:
    """16 clients predicting by entity until stopped; every answer and exception is kept."""

    def __init__(self, settings, clients: int = 16) -> None:
        self.settings, self.stop = settings, threading.Event()
        self.answers: list[tuple[float, int, dict | None]] = []  # (sent at, status, body)
        self.errors: list[tuple[float, str]] = []
        self.made = [0] * clients
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]

    def _client(self, index: int) -> None:
        with httpx.Client(timeout=30) as session:
            while not self.stop.is_set():
                self.made[index] += 1
                sent = time.monotonic()
                try:
                    response = session.post(
                        f"{self.settings.serve_url}/v1/models/{USE_CASE}/predict", json={SPEC.entity: "s-2"}
                    )
                    body = (
                        response.json()
                        if response.headers.get("content-type", "").startswith("application/json")
                        else {"text": response.text[:300]}
                    )
                    self.answers.append((sent, response.status_code, body))
                except Exception as exc:  # no answer at all counts as a failure too
                    self.errors.append((sent, repr(exc)))

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def failed(self, after: float = 0.0) -> list:
        bad = [(sent, status, body) for sent, status, body in self.answers if status != 200]
        return [f for f in bad + self.errors if f[0] >= after]


def answered_predictions(settings) -> float:
    """``ml_platform_requests_total`` of the predict route, from one scrape of ``/metrics``."""
    text = httpx.get(f"{settings.serve_url}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "ml_platform_requests_total" and sample.labels["route"] == "predict"
    )


def test_nothing_the_suite_started_listens_beyond_loopback(platform):
    """Every listening socket of this process and all it started (the Ray head with its GCS,
    raylet, agents, client server and workers, Serve's proxy and replicas, HAProxy)."""
    # make test installs HAProxy, so serving takes the fast path by default.
    assert platform.settings.serve_fast
    httpx.post(url(platform, f"/v1/models/{USE_CASE}/predict"), json={SPEC.entity: "s-1"}, timeout=30)
    found = listeners(process_tree(os.getpid()))
    names = {listener.name for listener in found}
    assert {"gcs_server", "raylet", "haproxy"} <= names and any("ServeRepli" in n for n in names), names
    # The public address, and Ray's stats and Prometheus frontends (its template binds them on
    # every interface; our wrapper rewrites them).
    haproxy = [f"{x.host}:{x.port}" for x in found if x.name == "haproxy"]
    assert f"127.0.0.1:{platform.settings.serve_port}" in haproxy and len(haproxy) >= 3
    # The v2 gRPC service: our own server, on the serving host (Ray Serve's proxy would bind [::]).
    grpc_listeners = [x for x in found if x.port == platform.settings.grpc_port]
    assert len(grpc_listeners) == 1 and grpc_listeners[0].loopback, grpc_listeners
    assert [str(x) for x in found if not x.loopback] == []


def replica_port_block(pids: set[int]) -> range | None:
    """The block of Serve replica ports held by one of ``pids`` (a local head)."""
    from ml_platform.serving.cluster import REPLICA_PORT_BLOCKS, REPLICA_PORT_CLAIMS

    for claim in REPLICA_PORT_CLAIMS.glob("[0-9]*"):
        holder = claim.read_text().split()
        if holder and int(holder[0]) in pids:
            return range(int(claim.name), int(claim.name) + REPLICA_PORT_BLOCKS.step)
    return None


def start_serve(env: dict[str, str], port: int) -> subprocess.Popen:
    """A user's `ml-platform serve`, with its own local Ray head; returns once it answers."""
    serve = subprocess.Popen(
        [str(Path(sys.executable).with_name("ml-platform")), "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return serve
        except httpx.HTTPError:
            pass
        if serve.poll() is not None:
            pytest.fail(f"ml-platform serve exited: {serve.stdout.read()}")
        time.sleep(1)
    serve.kill()
    pytest.fail("ml-platform serve did not become ready")


def test_serve_killed_resumes_with_its_champion_and_canary_and_ctrl_c_stops_everything(platform):
    from ml_platform.home import child_env
    from ml_platform.serving.cluster import free_port

    port = free_port()
    env = {
        **child_env(platform.settings),
        "ML_PLATFORM_SERVE_PORT": str(port),
        "ML_PLATFORM_GRPC_PORT": str(free_port()),
    }
    env.pop("RAY_ADDRESS", None)  # its own local Ray head, as a user's `ml-platform serve`
    predict = f"http://127.0.0.1:{port}/v1/models/{USE_CASE}/predict"
    challenger = _second_version(platform)
    client = registry.configure(platform.settings)
    registry.move_alias(
        platform.settings, USE_CASE, challenger.version, registry.CHALLENGER, "canary", "test"
    )
    client.set_registered_model_tag(USE_CASE, CANARY_TAG, "0.5")
    serve = start_serve(env, port)
    try:
        # What answers on the port is this command's own head, not the suite's cluster.
        owners = {x.pid for x in listeners(set(processes())) if x.port == port}
        assert owners and owners <= process_tree(serve.pid), (owners, process_tree(serve.pid))
        # A user's `ml-platform serve` starts its own head: nothing of it listens beyond loopback.
        found = listeners(process_tree(serve.pid))
        assert len(found) >= 8 and [str(x) for x in found if not x.loopback] == []
        # Its replicas take ports of the block its head claimed, and none of the suite's head's block.
        tree = process_tree(serve.pid)
        own, suites = replica_port_block(tree), replica_port_block(process_tree(os.getpid()) - tree)
        assert own and suites and own != suites

        def replica_ports() -> set[int]:
            tree = process_tree(serve.pid)
            return {x.port for x in listeners(tree) if x.pid in replica_pids_of(tree)}

        wait_for(lambda: replica_ports() & set(own), 60, "a replica listening on its head's block")
        assert not replica_ports() & set(suites)
        answered = [httpx.post(predict, json={SPEC.entity: "s-4"}, timeout=30) for _ in range(40)]
        assert {a.status_code for a in answered} == {200}
        # SIGKILL to the command and everything of its Ray head: no chance to clean up.
        killed = process_tree(serve.pid)
        for pid in killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        serve.wait(timeout=30)
        wait_for(lambda: not (killed & {p for p, x in processes().items() if not x.zombie}), 30, "the kill")
        logged = {
            r["prediction_id"] for r in read_prediction_log(platform.settings.serving_log_dir, USE_CASE)
        }
        lost = {a.json()["prediction_id"] for a in answered} - logged
        files = sorted(str(p) for p in platform.settings.serving_log_dir.rglob("*.jsonl"))
        assert not lost, f"{len(lost)} of {len(answered)} answered predictions not in the log; files: {files}"

        serve = start_serve(env, port)
        served = Counter()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(served) < 2:
            body = httpx.post(predict, json={SPEC.entity: "s-4"}, timeout=30).json()
            served[(body["served_by"], body["model_version"])] += 1
        assert set(served) == {("champion", champion_version(platform)), ("challenger", challenger.version)}
        table = processes()
        started = descendants(serve.pid, table)
        sessions = {p.sid for p in started.values()} - {os.getsid(0)}
        # The fast path's HAProxy runs in the Ray head's session.
        in_sessions = [pid for pid, p in table.items() if p.sid in sessions and not p.zombie]
        assert any(b"haproxy" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in in_sessions)
    finally:
        client.set_registered_model_tag(USE_CASE, CANARY_TAG, "0")
        serve.send_signal(signal.SIGINT)
        output = serve.communicate(timeout=120)[0]
    assert serve.returncode == 0, output
    table = {pid: p for pid, p in processes().items() if not p.zombie}
    left = [pid for pid, p in started.items() if pid in table and table[pid].start == p.start]
    left += [pid for pid, p in table.items() if p.sid in sessions]
    assert left == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=2)


class TestTwoReplicasOnASmallDisk:
    """Faults of a deployment of two replicas (its own log disk); last in the module."""

    def test_metrics_are_the_whole_services_whichever_replica_answers(self, two_replicas_on_a_small_disk):
        """Scrapes during load land on either replica; each reports the sums over both, so the
        counter never goes down and ends at exactly the requests answered."""
        settings = two_replicas_on_a_small_disk
        before = answered_predictions(settings)
        scraped: list[float] = []
        with Load(settings, clients=8) as load:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                scraped.append(answered_predictions(settings))
                time.sleep(0.1)
        after = answered_predictions(settings)
        assert load.errors == [] and len(load.answers) > 100
        assert {status for _, status, _ in load.answers} == {200}
        assert all(b >= a for a, b in zip(scraped, scraped[1:], strict=False)), scraped
        assert after - before == len(load.answers)
        assert len(replica_pids()) == 2  # and both were there to answer the scrapes

    def test_a_replica_killed_under_load_costs_only_its_requests_in_flight(
        self, two_replicas_on_a_small_disk
    ):
        settings = two_replicas_on_a_small_disk
        victim = min(replica_pids())
        with Load(settings) as load:
            time.sleep(5)
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            replaced_in = wait_for(
                lambda: running_replicas() == 2 and len(replica_pids() - {victim}) == 2,
                30,
                "a replacement replica",
            )
            time.sleep(10)
        assert victim not in replica_pids()
        failed = load.failed()
        window = (
            (min(f[0] for f in failed) - killed_at, max(f[0] for f in failed) - killed_at) if failed else None
        )
        # At most one request per client was in flight on the killed replica; none fail afterwards.
        assert len(failed) <= len(load.made), (
            window,
            replaced_in,
            Counter(str(f[1:])[:200] for f in failed).most_common(3),
        )
        assert load.failed(after=killed_at + replaced_in) == []
        answered = [body for _, status, body in load.answers if status == 200]
        assert min(load.made) > 5 and len(answered) + len(failed) == sum(load.made) > 200
        # Every answered prediction is in the log: a killed replica loses none it answered.
        logged = {r["prediction_id"] for r in read_prediction_log(settings.serving_log_dir, USE_CASE)}
        assert {body["prediction_id"] for body in answered} <= logged

    def test_a_full_prediction_log_disk_answers_503_and_no_answered_prediction_is_lost(
        self, two_replicas_on_a_small_disk
    ):
        settings = two_replicas_on_a_small_disk
        predict = f"{settings.serve_url}/v1/models/{USE_CASE}/predict"
        filler = fill(settings.serving_log_dir)
        answers = [httpx.post(predict, json={SPEC.entity: "s-1"}, timeout=30) for _ in range(200)]
        refused = [a for a in answers if a.status_code == 503]
        assert len(refused) > 100 and {a.status_code for a in answers} <= {200, 503}
        error = refused[0].json()["error"]
        assert "No space left on device" in error and str(settings.serving_log_dir) in error
        assert "not answered" in error
        scrapes = [httpx.get(f"{settings.serve_url}/metrics", timeout=30).text for _ in range(6)]
        assert any(
            'ml_platform_prediction_log_failures_total{kind="served",model="sensor_anomaly"}' in s
            for s in scrapes
        )
        filler.unlink()
        wait_for(
            lambda: httpx.post(predict, json={SPEC.entity: "s-1"}, timeout=30).status_code == 200,
            10,
            "serving again",
        )
        after = [httpx.post(predict, json={SPEC.entity: "s-1"}, timeout=30) for _ in range(20)]
        assert {a.status_code for a in after} == {200}
        logged = {r["prediction_id"] for r in read_prediction_log(settings.serving_log_dir, USE_CASE)}
        answered = [a.json()["prediction_id"] for a in answers + after if a.status_code == 200]
        assert set(answered) <= logged
