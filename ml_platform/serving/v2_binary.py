"""The binary tensor extension of Open Inference Protocol v2 (what Triton's and KServe's clients
send by default): a JSON header of ``Inference-Header-Content-Length`` bytes, then each tensor
whose parameters give a ``binary_data_size`` as raw little-endian values, in order. BYTES elements
are each a 4-byte little-endian length and that many bytes.

Requests are decoded into the JSON form (``data`` filled in) so that one validation serves both;
a malformed body is a ``RequestError`` 400 naming the tensor and what is wrong.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

from ml_platform.serving.protocols import RequestError

HEADER = "inference-header-content-length"
NUMPY_TYPES = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = (*NUMPY_TYPES, "BYTES")


def _header_length(value: str, body_length: int) -> int:
    if not value.strip().isdigit():
        raise RequestError(400, f"Inference-Header-Content-Length must be a byte count, got {value!r}")
    length = int(value)
    if length > body_length:
        raise RequestError(
            400, f"Inference-Header-Content-Length is {length} but the body holds only {body_length} bytes"
        )
    return length


def _decode_bytes(chunk: bytes, name: str) -> list[str]:
    values, offset = [], 0
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            raise RequestError(400, f"input '{name}': BYTES element at byte {offset} lacks its 4-byte length")
        (size,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        if offset + size > len(chunk):
            raise RequestError(
                400, f"input '{name}': a BYTES element of {size} bytes runs past the tensor's end"
            )
        try:
            values.append(chunk[offset : offset + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(400, f"input '{name}': a BYTES element is not UTF-8 text") from None
        offset += size
    return values


def decode_tensor(chunk: bytes, datatype: str, name: str) -> list[Any]:
    if datatype == "BYTES":
        return _decode_bytes(chunk, name)
    dtype = NUMPY_TYPES.get(datatype)
    if dtype is None:
        known = ", ".join(DATATYPES)
        raise RequestError(400, f"input '{name}': unknown datatype {datatype!r}; known: {known}")
    if len(chunk) % dtype.itemsize:
        raise RequestError(
            400, f"input '{name}': {len(chunk)} bytes are not a whole number of {datatype} values"
        )
    return np.frombuffer(chunk, dtype=dtype).tolist()


def decode_request(body: bytes, header_length: str) -> dict[str, Any]:
    """The request as its JSON form, each binary input's ``data`` decoded from the body."""
    length = _header_length(header_length, len(body))
    try:
        payload = json.loads(body[:length])
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise RequestError(
            400, f"the inference header (first {length} bytes) is not valid JSON: {exc}"
        ) from None
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    if not isinstance(inputs, list):
        raise RequestError(400, "the inference header needs 'inputs': a list of tensors")
    offset = length
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise RequestError(400, f"inputs[{i}] must be an object")
        name = tensor.get("name", f"inputs[{i}]")
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is None:
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RequestError(400, f"input '{name}': binary_data_size must be a byte count, got {size!r}")
        if "data" in tensor:
            raise RequestError(400, f"input '{name}' has both 'data' and binary_data_size")
        if offset + size > len(body):
            raise RequestError(
                400, f"input '{name}' declares {size} bytes but only {len(body) - offset} remain in the body"
            )
        values = decode_tensor(body[offset : offset + size], str(tensor.get("datatype")), name)
        shape = tensor.get("shape")
        sized = isinstance(shape, list) and all(isinstance(d, int) for d in shape)
        if sized and math.prod(shape) != len(values):
            raise RequestError(400, f"input '{name}': {len(values)} values do not fill shape {shape}")
        tensor["data"] = values
        offset += size
    if offset != len(body):
        raise RequestError(400, f"{len(body) - offset} bytes follow the last binary input")
    return payload


def requested_outputs(payload: Any, available: list[str]) -> tuple[list[str], set[str]]:
    """The outputs to answer (those the request names, else all) and which of them in binary:
    per output ``parameters.binary_data``, else the request's ``parameters.binary_data_output``."""
    payload = payload if isinstance(payload, dict) else {}
    everything = bool((payload.get("parameters") or {}).get("binary_data_output", False))
    asked = payload.get("outputs")
    if not asked:
        return list(available), set(available) if everything else set()
    if not isinstance(asked, list) or not all(isinstance(o, dict) and "name" in o for o in asked):
        raise RequestError(422, "'outputs' must be a list of objects with a 'name'")
    unknown = [o["name"] for o in asked if o["name"] not in available]
    if unknown:
        names = ", ".join(map(str, unknown))
        raise RequestError(422, f"unknown output(s) {names}; this model has {available}")
    binary = {o["name"] for o in asked if (o.get("parameters") or {}).get("binary_data", everything)}
    return [o["name"] for o in asked], binary


def encode_tensor(values: list[Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for value in values:
            raw = str(value).encode("utf-8")
            parts.append(struct.pack("<I", len(raw)) + raw)
        return b"".join(parts)
    return np.asarray(values, dtype=NUMPY_TYPES[datatype]).tobytes()


def encode_response(body: dict[str, Any], binary: set[str]) -> tuple[bytes, int | None]:
    """The response's bytes and, when some output is binary, the JSON header's length: the outputs
    named in ``binary`` lose their ``data`` for a ``binary_data_size`` and follow the header."""
    if not binary:
        return json.dumps(body).encode(), None
    tails = []
    outputs = []
    for output in body["outputs"]:
        if output["name"] in binary:
            raw = encode_tensor(output["data"], output["datatype"])
            tails.append(raw)
            output = {k: v for k, v in output.items() if k != "data"}
            output["parameters"] = {**output.get("parameters", {}), "binary_data_size": len(raw)}
        outputs.append(output)
    header = json.dumps({**body, "outputs": outputs}).encode()
    return header + b"".join(tails), len(header)
