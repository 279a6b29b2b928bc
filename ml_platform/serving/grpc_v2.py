"""Open Inference Protocol v2 over gRPC: KServe's and Triton's ``inference.GRPCInferenceService``
(ServerLive, ServerReady, ServerMetadata, ModelReady, ModelMetadata, ModelInfer), as
``tritonclient.grpc`` and KServe's clients speak it.

Ray Serve 2.60's own gRPC proxy binds every interface (``"[::]:<port>"``, hard-coded in
``ray.serve._private.grpc_util``), so the platform runs its own gRPC server on the settings' host,
in a one-replica Serve deployment. Each call goes through a deployment handle to the model server,
where it is validated, authorized, scored, logged and counted by the same code as
``/v2/models/{model}/infer`` (``route="grpc_infer"``), with Serve's routing and queue limits.

A request is turned into the v2 JSON form (raw contents decoded as the binary extension's tensors,
typed contents read by datatype), and the answer back into raw little-endian output contents, as
Triton answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from typing import Any

import grpc
from ray import serve
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from ml_platform.errors import first_line
from ml_platform.serving.cluster import bind_replica_grpc_to_node_address
from ml_platform.serving.protocols import RequestError
from ml_platform.serving.v2_binary import DATATYPES, decode_tensor, encode_tensor
from ml_platform.settings import load_settings

APP_NAME = "ml_platform_grpc"
MAX_MESSAGE_BYTES = 1 << 20  # the HTTP routes' body limit
DEFAULT_TIMEOUT_S = 30.0  # the HTTP routes' request timeout, unless the client sets a deadline
BIND_WAIT_S = 10.0  # a replacing replica waits this long for its predecessor's port

# Where each datatype's values are in typed (non-raw) contents.
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}


def _typed_contents(tensor: pb.ModelInferRequest.InferInputTensor) -> list[Any]:
    field = CONTENTS.get(tensor.datatype)
    if field is None:
        if tensor.datatype in DATATYPES:
            raise RequestError(400, f"input '{tensor.name}': {tensor.datatype} is sent in raw_input_contents")
        raise RequestError(
            400, f"input '{tensor.name}': unknown datatype {tensor.datatype!r}; known: {', '.join(DATATYPES)}"
        )
    values = list(getattr(tensor.contents, field))
    if tensor.datatype != "BYTES":
        return values
    try:
        return [v.decode("utf-8") for v in values]
    except UnicodeDecodeError:
        raise RequestError(400, f"input '{tensor.name}': a BYTES element is not UTF-8 text") from None


def request_payload(request: pb.ModelInferRequest) -> dict[str, Any]:
    """The request in the v2 JSON form that ``protocols.v2_rows`` validates; a malformed one is a
    ``RequestError`` 400 naming the tensor."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(
            400,
            f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs; send one each",
        )
    inputs = []
    for i, tensor in enumerate(request.inputs):
        data = decode_tensor(raw[i], tensor.datatype, tensor.name) if raw else _typed_contents(tensor)
        inputs.append(
            {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape), "data": data}
        )
    payload: dict[str, Any] = {"inputs": inputs}
    if request.outputs:
        payload["outputs"] = [{"name": o.name} for o in request.outputs]
    if request.id:
        payload["id"] = request.id
    return payload


def infer_response(body: dict[str, Any]) -> pb.ModelInferResponse:
    """A v2 JSON answer as a gRPC one, each output's values as raw little-endian contents."""
    response = pb.ModelInferResponse(
        model_name=body["model_name"], model_version=str(body["model_version"]), id=str(body.get("id", ""))
    )
    for name, value in body.get("parameters", {}).items():
        response.parameters[name].string_param = str(value)
    for output in body["outputs"]:
        response.outputs.add(name=output["name"], datatype=output["datatype"], shape=output["shape"])
        response.raw_output_contents.append(encode_tensor(output["data"], output["datatype"]))
    return response


def metadata_response(body: dict[str, Any]) -> pb.ModelMetadataResponse:
    def tensors(entries: list[dict]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return [
            pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"], shape=t["shape"])
            for t in entries
        ]

    return pb.ModelMetadataResponse(
        name=body["name"],
        versions=[str(v) for v in body["versions"]],
        platform=body["platform"],
        inputs=tensors(body["inputs"]),
        outputs=tensors(body["outputs"]),
    )


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Each call answered by the model server through ``model_server`` (a deployment handle)."""

    def __init__(self, model_server: Any) -> None:
        self.model_server = model_server

    async def _call(self, context: grpc.aio.ServicerContext, method: str, *args: Any) -> Any:
        remaining = context.time_remaining()
        timeout = DEFAULT_TIMEOUT_S if remaining is None else min(remaining, DEFAULT_TIMEOUT_S)
        try:
            return await asyncio.wait_for(getattr(self.model_server, method).remote(*args), timeout)
        except TimeoutError:
            message = f"no answer within {timeout:.0f} s"
            code = grpc.StatusCode.DEADLINE_EXCEEDED
        except Exception as exc:  # Serve's back-pressure, a replica that died: say so, no traceback
            message = f"the model server could not answer: {type(exc).__name__}: {first_line(exc)}"
            code = grpc.StatusCode.UNAVAILABLE
        await context.abort(code, message)

    @staticmethod
    async def _fail(context: grpc.aio.ServicerContext, status: int, body: dict[str, Any]) -> None:
        await context.abort(STATUS_CODES.get(status, grpc.StatusCode.INTERNAL), body.get("error", str(body)))

    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:  # noqa: N802 (the proto's name)
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context) -> pb.ServerReadyResponse:  # noqa: N802
        return pb.ServerReadyResponse(ready=await self._call(context, "v2_ready"))

    async def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:  # noqa: N802
        body = await self._call(context, "server_metadata")
        return pb.ServerMetadataResponse(
            name=body["name"], version=body["version"], extensions=body["extensions"]
        )

    async def ModelReady(self, request, context) -> pb.ModelReadyResponse:  # noqa: N802
        status, body = await self._call(context, "v2_model_ready", request.name)
        if status == 404:
            await self._fail(context, status, body)
        return pb.ModelReadyResponse(ready=body["ready"])

    async def ModelMetadata(self, request, context) -> pb.ModelMetadataResponse:  # noqa: N802
        status, body = await self._call(context, "v2_metadata", request.name)
        if status == 503:
            reason = body["parameters"].get("load_error", "no champion deployed yet")
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"model {request.name!r} is not being served: {reason}"
            )
        if status != 200:
            await self._fail(context, status, body)
        return metadata_response(body)

    async def ModelInfer(self, request, context) -> pb.ModelInferResponse:  # noqa: N802
        authorization = dict(context.invocation_metadata() or ()).get("authorization")
        try:
            payload = request_payload(request)
        except RequestError as exc:
            await self._fail(context, exc.status, {"error": exc.message})
        status, body = await self._call(context, "grpc_infer", request.model_name, payload, authorization)
        if status != 200:
            await self._fail(context, status, body)
        return infer_response(body)


async def start_server(
    servicer: InferenceServicer, address: str, wait_s: float = BIND_WAIT_S
) -> grpc.aio.Server:
    """The gRPC server on ``address``, started. The port is never shared (no SO_REUSEPORT): a port
    another program holds fails after ``wait_s`` with a message naming it and the setting."""
    deadline = time.monotonic() + wait_s
    while True:
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ]
        )
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        try:
            server.add_insecure_port(address)
            break
        except RuntimeError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"gRPC could not listen on {address} ({exc}): the port is in use; set "
                    "ML_PLATFORM_GRPC_PORT to a free port, or to 0 to serve HTTP only"
                ) from None
            await asyncio.sleep(0.5)
    await server.start()
    return server


@serve.deployment(
    num_replicas=1,
    ray_actor_options={"num_cpus": 0.1},
    health_check_period_s=5,
    graceful_shutdown_timeout_s=10,
)
class GrpcIngress:
    async def __init__(self, model_app: str, fingerprint: str) -> None:
        bind_replica_grpc_to_node_address()
        self._fingerprint = fingerprint
        settings = load_settings()
        self.server = await start_server(
            InferenceServicer(serve.get_app_handle(model_app)), settings.grpc_address
        )

    def fingerprint(self) -> str:
        """The hash of the environment it was deployed with (``deploy_grpc`` compares it)."""
        return self._fingerprint

    async def __del__(self) -> None:
        with contextlib.suppress(Exception):
            await self.server.stop(grace=5)


def env_fingerprint(env: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()


def build_grpc_app(model_app: str, env: dict[str, str]):
    """The gRPC application to ``serve.run`` beside the HTTP one named ``model_app``."""
    options = {"num_cpus": 0.1, "runtime_env": {"env_vars": env}}
    return GrpcIngress.options(ray_actor_options=options).bind(model_app, env_fingerprint(env))
