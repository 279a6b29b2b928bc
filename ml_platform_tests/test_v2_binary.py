"""The v2 binary tensor extension, against Triton's own client encoding requests and decoding
responses (``generate_request_body`` / ``InferResult.from_response_body``): what it sends is read
back exactly, what we answer it reads back exactly, and a malformed body is a 400 naming the
tensor. Over HTTP with a real server: ``test_serving.py``."""

import json
import struct

import numpy as np
import pytest
import tritonclient.http as triton

from ml_platform.serving.protocols import RequestError
from ml_platform.serving.v2_binary import decode_request, encode_response, requested_outputs


def _request(inputs, outputs=None) -> dict:
    body, header_length = triton.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    return decode_request(body, str(header_length))


def test_tritons_binary_inputs_decode_to_their_values():
    ids = triton.InferInput("sensor_id", [3], "BYTES")
    ids.set_data_from_numpy(np.array([b"s-1", "é-2".encode(), b""], dtype=object))
    values = triton.InferInput("value", [3], "FP64")
    values.set_data_from_numpy(np.array([1.5, -2.25, np.pi]))
    counts = triton.InferInput("count", [3], "INT32")
    counts.set_data_from_numpy(np.array([1, -7, 2**31 - 1], dtype=np.int32))
    flags = triton.InferInput("flag", [3], "BOOL")
    flags.set_data_from_numpy(np.array([True, False, True]))
    as_json = triton.InferInput("mode", [3], "BYTES")  # binary and JSON inputs in one request
    as_json.set_data_from_numpy(np.array([b"a", b"b", b"c"], dtype=object), binary_data=False)

    payload = _request([ids, values, counts, flags, as_json])

    data = {t["name"]: t["data"] for t in payload["inputs"]}
    assert data == {
        "sensor_id": ["s-1", "é-2", ""],
        "value": [1.5, -2.25, np.pi],
        "count": [1, -7, 2**31 - 1],
        "flag": [True, False, True],
        "mode": ["a", "b", "c"],
    }
    assert payload["parameters"] == {"binary_data_output": True}  # the client's default


def test_outputs_are_answered_in_binary_as_asked_and_triton_reads_them_back():
    body = {
        "model_name": "m",
        "model_version": "3",
        "outputs": [
            {"name": "score", "datatype": "FP64", "shape": [2], "data": [0.25, -1.0]},
            {"name": "flag", "datatype": "BOOL", "shape": [2], "data": [True, False]},
            {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 0]},
            {"name": "prediction_id", "datatype": "BYTES", "shape": [2], "data": ["ab", "cd"]},
        ],
    }
    names = [o["name"] for o in body["outputs"]]
    content, header_length = encode_response(json.loads(json.dumps(body)), set(names) - {"label"})

    result = triton.InferResult.from_response_body(content, header_length=header_length)
    np.testing.assert_array_equal(result.as_numpy("score"), [0.25, -1.0])
    np.testing.assert_array_equal(result.as_numpy("flag"), [True, False])
    np.testing.assert_array_equal(result.as_numpy("label"), [1, 0])  # asked for in JSON
    assert list(result.as_numpy("prediction_id")) == [b"ab", b"cd"]
    assert result.get_response()["model_version"] == "3"
    assert encode_response(body, set()) == (json.dumps(body).encode(), None)


def test_which_outputs_and_in_which_form():
    available = ["score", "flag", "prediction_id"]
    assert requested_outputs({"inputs": []}, available) == (available, set())
    assert requested_outputs({"parameters": {"binary_data_output": True}}, available) == (
        available,
        set(available),
    )
    asked = [triton.InferRequestedOutput("flag"), triton.InferRequestedOutput("score", binary_data=False)]
    payload = _request([_fp64("value", [1.0])], outputs=asked)
    assert requested_outputs(payload, available) == (["flag", "score"], {"flag"})
    with pytest.raises(RequestError, match="unknown output.*nope") as refused:
        requested_outputs({"outputs": [{"name": "nope"}]}, available)
    assert refused.value.status == 422


def _fp64(name: str, values: list[float]) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(values)], "FP64")
    tensor.set_data_from_numpy(np.array(values, dtype=np.float64))
    return tensor


def _header(inputs: list[dict]) -> bytes:
    return json.dumps({"inputs": inputs}).encode()


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (lambda h: h, lambda h: str(len(h) + 1), "body holds only"),
        (lambda h: h, lambda h: "ten", "must be a byte count"),
        (lambda h: h[:-1] + b"!", lambda h: str(len(h)), "not valid JSON"),
        (lambda h: h + b"\0" * 12, lambda h: str(len(h)), "input 'v' declares 16 bytes but only 12 remain"),
        (lambda h: h + b"\0" * 20, lambda h: str(len(h)), "4 bytes follow the last binary input"),
    ],
)
def test_a_malformed_binary_body_is_a_400_naming_what_is_wrong(body, header_length, message):
    header = _header(
        [{"name": "v", "datatype": "FP64", "shape": [2], "parameters": {"binary_data_size": 16}}]
    )
    with pytest.raises(RequestError, match=message) as refused:
        decode_request(body(header), header_length(header))
    assert refused.value.status == 400


@pytest.mark.parametrize(
    ("tensor", "raw", "message"),
    [
        ({"datatype": "FP64", "shape": [2]}, b"\0" * 12, "12 bytes are not a whole number of FP64"),
        ({"datatype": "FP64", "shape": [3]}, b"\0" * 16, "2 values do not fill shape \\[3\\]"),
        ({"datatype": "COMPLEX", "shape": [1]}, b"\0" * 8, "unknown datatype 'COMPLEX'"),
        ({"datatype": "BYTES", "shape": [1]}, b"\x02\0", "lacks its 4-byte length"),
        ({"datatype": "BYTES", "shape": [1]}, struct.pack("<I", 9) + b"abc", "runs past the tensor's end"),
        ({"datatype": "BYTES", "shape": [1]}, struct.pack("<I", 2) + b"\xff\xfe", "not UTF-8"),
        ({"datatype": "FP64", "shape": [1], "data": [1.0]}, b"\0" * 8, "both 'data' and binary_data_size"),
    ],
)
def test_a_binary_tensor_that_does_not_match_its_declaration_is_a_400(tensor, raw, message):
    declared = {"name": "t", **tensor, "parameters": {"binary_data_size": len(raw)}}
    header = _header([declared])
    with pytest.raises(RequestError, match=message) as refused:
        decode_request(header + raw, str(len(header)))
    assert refused.value.status == 400
    assert "'t'" in refused.value.message
