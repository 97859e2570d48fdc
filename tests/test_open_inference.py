"""The Open Inference Protocol codec, checked against the protocol's own clients and models.

Request bodies come from tritonclient's and kserve's own request builders (offline, no server),
responses are read back with their response parsers, JSON documents are validated with
open-inference-openapi's pydantic models, and one exchange is checked byte for byte.
"""

from __future__ import annotations

import base64
import io
import json
import struct

import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from open_inference.openapi.types import (
    InferenceErrorResponse,
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    MetadataServerResponse,
)
from PIL import Image, ImageDraw

from service import open_inference as oip
from service.open_inference import (
    HEADER_LENGTH,
    InferRequest,
    check_model,
    element_error,
    encode_infer_response,
    model_metadata,
    model_version,
    parse_infer_request,
    preprocess_elements,
    server_metadata,
)
from service.preprocess import preprocess_image_bytes
from service.request_body import ClientError, parse_bulk

MAX_BATCH = 64
MAX_IMAGE_BYTES = 100_000
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RNG = np.random.default_rng(0)
PIXELS_U8 = RNG.integers(0, 256, (5, 784), dtype=np.uint8)
PIXELS_F32 = RNG.random((5, 784), dtype=np.float32)
PROBABILITIES = RNG.dirichlet(np.ones(10), size=5).astype(np.float32)


def parse(body: bytes, headers: dict[str, str] | None = None) -> InferRequest:
    return parse_infer_request(body, headers or {}, MAX_BATCH, MAX_IMAGE_BYTES)


def triton_body(inputs, outputs=None, request_id: str = "") -> tuple[bytes, dict[str, str]]:
    """What tritonclient.http's `infer` would send: body plus the header it adds."""
    body, json_size = triton.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, request_id=request_id
    )
    return body, ({} if json_size is None else {HEADER_LENGTH: str(json_size)})


def triton_input(array: np.ndarray, datatype: str, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("images", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def triton_result(body: bytes, headers: dict[str, str]) -> triton.InferResult:
    length = headers.get(HEADER_LENGTH)
    return triton.InferResult.from_response_body(
        body, header_length=None if length is None else int(length)
    )


def drawn_digit(fmt: str = "PNG") -> bytes:
    """A hand-drawn dark '7' on white paper, as an encoded file."""
    image = Image.new("L", (40, 48), 255)
    ImageDraw.Draw(image).line([(6, 6), (34, 6), (14, 44)], fill=0, width=5)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def blank_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (28, 28), 0).save(buffer, format="PNG")
    return buffer.getvalue()


def json_request(**input_fields) -> dict:
    """A valid JSON request for one FP32 image, with some input fields replaced."""
    tensor = {"name": "images", "datatype": "FP32", "shape": [1, 784], "data": [0.5] * 784}
    tensor.update(input_fields)
    return {"inputs": [{k: v for k, v in tensor.items() if v is not ...}]}


def dumps(document: object) -> bytes:
    return json.dumps(document).encode()


def binary_request(header: dict, data: bytes) -> tuple[bytes, dict[str, str]]:
    """A hand-made binary request: JSON header, data, and the header length header."""
    head = dumps(header)
    return head + data, {HEADER_LENGTH: str(len(head))}


def binary_u8(shape: list[int], data: bytes, size: int | None = None, **top):
    tensor = {"name": "images", "datatype": "UINT8", "shape": shape}
    tensor["parameters"] = {"binary_data_size": len(data) if size is None else size}
    return binary_request({"inputs": [tensor], **top}, data)


def binary_bytes(elements: list[bytes], shape: list[int] | None = None, raw: bytes | None = None):
    data = raw if raw is not None else b"".join(struct.pack("<I", len(e)) + e for e in elements)
    tensor = {"name": "images", "datatype": "BYTES", "shape": shape or [len(elements)]}
    tensor["parameters"] = {"binary_data_size": len(data)}
    return binary_request({"inputs": [tensor]}, data)


# ---------------------------------------------------------------------------------------------
# Requests from tritonclient's own body generator.


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("image_shape", [(784,), (28, 28), (1, 28, 28)])
def test_uint8_requests_from_tritonclient_match_the_bulk_path(binary, image_shape):
    pixels = PIXELS_U8.reshape(5, *image_shape)
    body, headers = triton_body([triton_input(pixels, "UINT8", binary)])
    assert (HEADER_LENGTH in headers) is binary
    request = parse(body, headers)
    assert request.datatype == "UINT8" and request.shape == (5, *image_shape)
    assert request.encoded is None and request.images.dtype == np.float32
    # exactly the float32 values of /predict_bulk for the same pixels
    assert np.array_equal(request.images, parse_bulk(PIXELS_U8.tobytes(), MAX_BATCH))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("image_shape", [(784,), (28, 28), (1, 28, 28)])
def test_fp32_requests_from_tritonclient_arrive_unchanged(binary, image_shape):
    body, headers = triton_body([triton_input(PIXELS_F32.reshape(5, *image_shape), "FP32", binary)])
    request = parse(body, headers)
    assert request.images.dtype == np.float32 and request.images.flags.writeable
    assert np.array_equal(request.images, PIXELS_F32)


def test_fp32_edges_zero_and_one_are_accepted():
    edges = np.zeros((1, 784), dtype=np.float32)
    edges[0, 1::2] = 1.0
    assert np.array_equal(parse(*triton_body([triton_input(edges, "FP32", True)])).images, edges)


def test_binary_bytes_from_tritonclient_are_the_files_themselves():
    files = [drawn_digit("PNG"), drawn_digit("JPEG"), drawn_digit("BMP")]
    body, headers = triton_body([triton_input(np.array(files, dtype=np.object_), "BYTES", True)])
    request = parse(body, headers)
    assert request.datatype == "BYTES" and request.images is None
    assert request.encoded == tuple(files)
    images = preprocess_elements(request.encoded)
    assert images.shape == (3, 784) and images.dtype == np.float32
    assert np.array_equal(images[0], preprocess_image_bytes(files[0]).reshape(784))


def test_json_bytes_are_base64_strings_as_tritonclient_sends_them():
    files = [drawn_digit("PNG"), drawn_digit("GIF")]
    strings = np.array([base64.b64encode(f).decode() for f in files], dtype=np.object_)
    body, headers = triton_body([triton_input(strings, "BYTES", False)])
    assert headers == {}
    assert parse(body, headers).encoded == tuple(files)


def test_tritonclient_cannot_send_raw_image_files_in_json():
    """Why JSON BYTES are base64: image files are not UTF-8, so no client can put them there."""
    with pytest.raises(triton.InferenceServerException, match="UTF-8"):
        triton_input(np.array([drawn_digit()], dtype=np.object_), "BYTES", False)


def test_nested_json_data_is_read_row_major():
    pixels = PIXELS_U8[:2]
    document = {
        "inputs": [
            {
                "name": "images",
                "datatype": "UINT8",
                "shape": [2, 28, 28],
                "data": pixels.reshape(2, 28, 28).tolist(),
            }
        ]
    }
    InferenceRequest.parse_obj(document)  # a valid request by the protocol's own model
    request = parse(dumps(document))
    assert np.array_equal(request.images, parse_bulk(pixels.tobytes(), MAX_BATCH))


def test_json_integers_are_fine_for_fp32():
    request = parse(dumps(json_request(data=[0, 1] * 392)))
    assert request.images.dtype == np.float32 and request.images[0, :2].tolist() == [0.0, 1.0]


def test_an_id_the_answer_could_not_echo_is_a_400():
    """A lone surrogate escape is valid JSON but no UTF-8: echoing it in the answer failed."""
    document = json_request()
    document["id"] = "\ud800"
    with pytest.raises(ClientError) as refused:
        parse(json.dumps(document).encode())
    assert refused.value.status == 400 and "surrogate" in refused.value.message


def test_request_id_and_unknown_parameters_pass():
    document = json_request()
    document.update(id="abc-42", model_name="mnist", parameters={"priority": 1, "timeout": 5})
    document["inputs"][0]["parameters"] = {"content_type": "np"}
    request = parse(dumps(document))
    assert request.id == "abc-42"


# ---------------------------------------------------------------------------------------------
# Responses, read back by tritonclient and validated with the protocol's models.


def test_default_outputs_are_all_three_binary_for_tritonclient():
    body, headers = triton_body([triton_input(PIXELS_U8, "UINT8", True)])  # no outputs given
    request = parse(body, headers)
    assert [o.name for o in request.outputs] == ["probabilities", "digit", "confidence"]
    assert all(o.binary for o in request.outputs)
    response, response_headers = encode_infer_response(request, "mnist", "7", PROBABILITIES)
    assert response_headers["content-type"] == "application/octet-stream"
    result = triton_result(response, response_headers)
    digits = PROBABILITIES.argmax(axis=1)
    assert np.array_equal(result.as_numpy("probabilities"), PROBABILITIES)
    assert result.as_numpy("probabilities").dtype == np.float32
    assert np.array_equal(result.as_numpy("digit"), digits)
    assert result.as_numpy("digit").dtype == np.int64
    assert np.array_equal(result.as_numpy("confidence"), PROBABILITIES[np.arange(5), digits])
    assert result.get_response()["model_name"] == "mnist"
    assert result.get_response()["model_version"] == "7"


def test_json_outputs_round_trip_exactly_and_validate():
    outputs = [triton.InferRequestedOutput(name, binary_data=False) for name in oip.OUTPUTS]
    body, headers = triton_body([triton_input(PIXELS_F32, "FP32", False)], outputs, "req-1")
    request = parse(body, headers)
    response, response_headers = encode_infer_response(request, "mnist", "7", PROBABILITIES)
    assert response_headers == {"content-type": "application/json"}
    document = json.loads(response)
    InferenceResponse.parse_obj(document)
    assert document["id"] == "req-1"
    assert [o["shape"] for o in document["outputs"]] == [[5, 10], [5], [5]]
    result = triton_result(response, response_headers)
    # JSON carries the exact float32 values: the same arrays as a binary answer
    assert np.array_equal(result.as_numpy("probabilities"), PROBABILITIES)
    assert np.array_equal(result.as_numpy("digit"), PROBABILITIES.argmax(axis=1))


def test_outputs_are_selected_in_request_order_with_mixed_encodings():
    outputs = [
        triton.InferRequestedOutput("confidence", binary_data=True),
        triton.InferRequestedOutput("digit", binary_data=False),
    ]
    body, headers = triton_body([triton_input(PIXELS_U8, "UINT8", True)], outputs)
    request = parse(body, headers)
    response, response_headers = encode_infer_response(request, "mnist", "7", PROBABILITIES)
    header = json.loads(response[: int(response_headers[HEADER_LENGTH])])
    assert [o["name"] for o in header["outputs"]] == ["confidence", "digit"]
    assert "data" in header["outputs"][1] and "data" not in header["outputs"][0]
    result = triton_result(response, response_headers)
    assert result.as_numpy("probabilities") is None
    assert np.array_equal(result.as_numpy("digit"), PROBABILITIES.argmax(axis=1))


def test_binary_data_output_is_the_default_that_an_output_overrides():
    document = json_request()
    document["parameters"] = {"binary_data_output": True}
    document["outputs"] = [
        {"name": "digit"},
        {"name": "probabilities", "parameters": {"binary_data": False}},
    ]
    request = parse(dumps(document))
    assert [(o.name, o.binary) for o in request.outputs] == [
        ("digit", True),
        ("probabilities", False),
    ]


def test_binary_response_for_a_bytes_request():
    files = [drawn_digit()] * 2
    body, headers = triton_body(
        [triton_input(np.array(files, dtype=np.object_), "BYTES", True)],
        [triton.InferRequestedOutput("digit")],
    )
    request = parse(body, headers)
    probabilities = PROBABILITIES[:2]
    response, response_headers = encode_infer_response(request, "mnist", "7", probabilities)
    result = triton_result(response, response_headers)
    assert np.array_equal(result.as_numpy("digit"), probabilities.argmax(axis=1))


FLAGS = np.array([True, False, False, True, False])


def test_a_calibrated_model_adds_the_uncertain_flag_binary_or_json():
    """A flagged model answers `uncertain` BOOL [N] by default; tritonclient reads it back."""
    body, headers = triton_body([triton_input(PIXELS_U8, "UINT8", True)])  # no outputs given
    request = parse_infer_request(body, headers, MAX_BATCH, MAX_IMAGE_BYTES, flagged=True)
    assert [o.name for o in request.outputs] == [
        "probabilities",
        "digit",
        "confidence",
        "uncertain",
    ]
    response, response_headers = encode_infer_response(request, "mnist", "7", PROBABILITIES, FLAGS)
    result = triton_result(response, response_headers)
    assert result.as_numpy("uncertain").dtype == np.bool_
    assert result.as_numpy("uncertain").tolist() == FLAGS.tolist()
    header = json.loads(response[: int(response_headers[HEADER_LENGTH])])
    assert header["outputs"][3] == {
        "name": "uncertain",
        "datatype": "BOOL",
        "shape": [5],
        "parameters": {"binary_data_size": 5},  # one byte an element, as the spec says
    }
    document = json_request()
    document["outputs"] = [{"name": "uncertain"}]
    request = parse_infer_request(dumps(document), {}, MAX_BATCH, MAX_IMAGE_BYTES, flagged=True)
    response, _ = encode_infer_response(request, "mnist", "7", PROBABILITIES[:1], FLAGS[:1])
    InferenceResponse.parse_obj(json.loads(response))
    assert json.loads(response)["outputs"] == [
        {"name": "uncertain", "datatype": "BOOL", "shape": [1], "data": [True]}
    ]


def test_a_model_without_calibration_has_no_uncertain_output():
    document = json_request()
    document["outputs"] = [{"name": "uncertain"}]
    with pytest.raises(ClientError) as refused:
        parse(dumps(document))
    assert refused.value.status == 400
    assert (
        "no 'uncertain' output" in refused.value.message and "seed recipe" in refused.value.message
    )
    assert "uncertain" not in [o["name"] for o in model_metadata("mnist", "1")["outputs"]]
    flagged = model_metadata("mnist", "1", flagged=True)
    MetadataModelResponse.parse_obj(flagged)
    assert flagged["outputs"][3] == {"name": "uncertain", "datatype": "BOOL", "shape": [-1]}
    assert "uncertain: true when" in flagged["properties"]["outputs"]


def test_a_wrong_probability_shape_is_a_programming_error():
    request = parse(dumps(json_request()))
    with pytest.raises(ValueError, match="expected"):
        encode_infer_response(request, "mnist", "7", PROBABILITIES)


def test_kserve_request_builder_and_response_parser():
    infer_type = pytest.importorskip("kserve.protocol.infer_type")
    tensor = infer_type.InferInput("images", [5, 784], "UINT8")
    tensor.set_data_from_numpy(PIXELS_U8, binary_data=True)
    kserve_request = infer_type.InferRequest(
        model_name="mnist",
        infer_inputs=[tensor],
        request_id="k1",
        request_outputs=[infer_type.RequestedOutput("probabilities", {"binary_data": True})],
    )
    body, json_length = kserve_request.to_rest()
    request = parse(body, {HEADER_LENGTH: str(json_length)})
    assert request.id == "k1"
    assert np.array_equal(request.images, parse_bulk(PIXELS_U8.tobytes(), MAX_BATCH))
    response, headers = encode_infer_response(request, "mnist", "7", PROBABILITIES)
    parsed = infer_type.InferResponse.from_bytes(response, int(headers[HEADER_LENGTH]))
    assert parsed.id == "k1" and parsed.model_name == "mnist"
    assert np.array_equal(parsed.outputs[0].as_numpy(), PROBABILITIES)
    kserve_json = infer_type.InferRequest(model_name="mnist", infer_inputs=[], request_id="k2")
    json_input = infer_type.InferInput("images", [5, 784], "FP32")
    json_input.set_data_from_numpy(PIXELS_F32, binary_data=False)
    kserve_json.inputs = [json_input]
    document, no_length = kserve_json.to_rest()
    assert no_length is None
    assert np.array_equal(parse(json.dumps(document).encode()).images, PIXELS_F32)


def test_binary_exchange_byte_for_byte():
    """A request written out by hand, and the exact bytes the extension's spec implies."""
    header = (
        b'{"id":"r1","inputs":[{"name":"images","datatype":"UINT8","shape":[2,28,28],'
        b'"parameters":{"binary_data_size":1568}}],"outputs":['
        b'{"name":"digit","parameters":{"binary_data":true}},'
        b'{"name":"confidence","parameters":{"binary_data":true}},'
        b'{"name":"probabilities"}]}'
    )
    pixels = bytes(range(256)) * 6 + bytes(range(32))
    assert len(pixels) == 1568
    request = parse(header + pixels, {HEADER_LENGTH: str(len(header))})
    expected_images = np.frombuffer(pixels, dtype=np.uint8).reshape(2, 784) / np.float32(255)
    assert np.array_equal(request.images, expected_images)

    probabilities = np.zeros((2, 10), dtype=np.float32)
    probabilities[0, :5] = [0.5, 0.25, 0.125, 0.0625, 0.0625]
    probabilities[1, 7] = 1.0
    body, headers = encode_infer_response(request, "mnist", "3", probabilities)
    expected_json = (
        b'{"model_name":"mnist","model_version":"3","id":"r1","outputs":['
        b'{"name":"digit","datatype":"INT64","shape":[2],"parameters":{"binary_data_size":16}},'
        b'{"name":"confidence","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}},'
        b'{"name":"probabilities","datatype":"FP32","shape":[2,10],"data":['
        b"0.5,0.25,0.125,0.0625,0.0625,0.0,0.0,0.0,0.0,0.0,"
        b"0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.0,0.0]}]}"
    )
    digits = b"\x00" * 8 + b"\x07" + b"\x00" * 7  # INT64 little-endian 0, 7
    confidences = b"\x00\x00\x00\x3f" + b"\x00\x00\x80\x3f"  # FP32 little-endian 0.5, 1.0
    assert body == expected_json + digits + confidences
    assert headers == {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(expected_json)),
    }


# ---------------------------------------------------------------------------------------------
# Metadata documents.


def test_server_metadata_validates_and_names_the_binary_extension():
    document = server_metadata("0.1.0")
    MetadataServerResponse.parse_obj(document)
    assert document == {
        "name": "mnist-service",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data"],
    }


def test_model_metadata_validates_and_describes_every_tensor():
    document = model_metadata("mnist", "abc123", max_batch=10_000)
    MetadataModelResponse.parse_obj(document)
    assert document["name"] == "mnist" and document["versions"] == ["abc123"]
    assert document["platform"] == "pytorch_state_dict"
    assert document["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 784]}]
    assert document["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "digit", "datatype": "INT64", "shape": [-1]},
        {"name": "confidence", "datatype": "FP32", "shape": [-1]},
    ]
    properties = document["properties"]
    assert all(isinstance(value, str) for value in properties.values())  # the spec's string map
    assert "UINT8" in properties["input_datatypes"] and "BYTES" in properties["input_datatypes"]
    assert "[N, 1, 28, 28]" in properties["input_shapes"]
    assert "base64" in properties["bytes_elements"]
    assert properties["max_batch_size"] == "10000"


def test_model_version_is_the_store_version_or_the_checkpoint_hash():
    assert model_version("mnist-mlp:k2bpv6qz4wm5ccdq", "ab" * 32) == "k2bpv6qz4wm5ccdq"
    assert model_version(None, "0123456789abcdef" * 4) == "0123456789abcdef"


def test_only_the_served_model_and_version_are_found():
    check_model("mnist", None, "mnist", "v1")
    check_model("mnist", "v1", "mnist", "v1")
    with pytest.raises(ClientError) as other_model:
        check_model("resnet", None, "mnist", "v1")
    assert other_model.value.status == 404
    assert "unknown model 'resnet'" in other_model.value.message
    assert "'mnist'" in other_model.value.message and "'v1'" in other_model.value.message
    with pytest.raises(ClientError) as other_version:
        check_model("mnist", "v0", "mnist", "v1")
    assert other_version.value.status == 404
    assert "no version 'v0'" in other_version.value.message
    assert "served version is 'v1'" in other_version.value.message


def test_error_body_is_the_protocol_error_object():
    body = oip.error_body("unknown output 'x'")
    InferenceErrorResponse.parse_obj(json.loads(body))
    assert json.loads(body) == {"error": "unknown output 'x'"}


# ---------------------------------------------------------------------------------------------
# Image elements that fail preprocessing name their index.


def test_a_corrupt_element_is_400_naming_its_index():
    files = (drawn_digit(), drawn_digit(), b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ClientError) as refused:
        preprocess_elements(files)
    assert refused.value.status == 400
    assert refused.value.message.startswith("input 'images' element 2: ")
    assert refused.value.message.endswith("the image file is corrupt and cannot be decoded")


def test_an_element_without_a_digit_is_422_naming_its_index():
    with pytest.raises(ClientError) as refused:
        preprocess_elements((drawn_digit(), blank_png()))
    assert refused.value.status == 422
    assert refused.value.message == "input 'images' element 1: no digit found in the image"


def test_an_empty_element_is_400():
    with pytest.raises(ClientError) as refused:
        preprocess_elements((b"",))
    assert refused.value.status == 400
    assert refused.value.message == "input 'images' element 0: the image is empty (0 bytes)"


def test_an_unclassified_decoder_failure_is_400_with_its_cause():
    error = element_error(3, RuntimeError("boom"))
    assert error.status == 400
    assert error.message == "input 'images' element 3: the image could not be processed"


# ---------------------------------------------------------------------------------------------
# Every bad request: its status and a message that says what to fix.

_SHAPE_784 = {"binary_data_size": 784}
BAD_REQUESTS = {
    # the body itself
    "malformed json": (b'{"inputs": [', {}, 400, "the body is not valid JSON"),
    "not utf-8": (b"\x89PNG\r\n\x1a\n", {}, 400, "not valid JSON"),
    "nan literal": (
        b'{"inputs":[{"name":"images","datatype":"FP32","shape":[1,1],"data":[NaN]}]}',
        {},
        400,
        "NaN is not a valid JSON number",
    ),
    "not an object": (b"[]", {}, 400, "must be a JSON object"),
    "compressed": (dumps(json_request()), {"content-encoding": "gzip"}, 415, "uncompressed"),
    "binary without header": (
        dumps(json_request()) + b"\x00\x01",
        {},
        400,
        "needs the Inference-Header-Content-Length header",
    ),
    # top-level fields
    "missing inputs": (b"{}", {}, 400, 'has no "inputs"'),
    "inputs not a list": (b'{"inputs": {}}', {}, 400, '"inputs" must be a JSON array'),
    "no input": (b'{"inputs": []}', {}, 400, "exactly one input, 'images'; the request has 0"),
    "two inputs": (
        dumps({"inputs": json_request()["inputs"] * 2}),
        {},
        400,
        "exactly one input, 'images'; the request has 2",
    ),
    "input not an object": (b'{"inputs": [7]}', {}, 400, "each input must be a JSON object"),
    "id not a string": (dumps({**json_request(), "id": 42}), {}, 400, '"id" must be a string'),
    "parameters not an object": (
        dumps({**json_request(), "parameters": [1]}),
        {},
        400,
        '"parameters" of the request must be a JSON object',
    ),
    "binary_data_output not a bool": (
        dumps({**json_request(), "parameters": {"binary_data_output": "yes"}}),
        {},
        400,
        '"binary_data_output" of the request must be true or false',
    ),
    # outputs
    "unknown output": (
        dumps({**json_request(), "outputs": [{"name": "logits"}]}),
        {},
        400,
        "unknown output 'logits'; this model's outputs are probabilities, digit, confidence",
    ),
    "output twice": (
        dumps({**json_request(), "outputs": [{"name": "digit"}, {"name": "digit"}]}),
        {},
        400,
        "output 'digit' is requested twice",
    ),
    "outputs not a list": (
        dumps({**json_request(), "outputs": "digit"}),
        {},
        400,
        '"outputs" must be a JSON array',
    ),
    "output without a name": (
        dumps({**json_request(), "outputs": [{}]}),
        {},
        400,
        '"outputs" element 0 must be an object with a "name"',
    ),
    "binary_data not a bool": (
        dumps({**json_request(), "outputs": [{"name": "digit", "parameters": {"binary_data": 1}}]}),
        {},
        400,
        "\"binary_data\" of output 'digit' must be true or false",
    ),
    "classification": (
        dumps(
            {**json_request(), "outputs": [{"name": "digit", "parameters": {"classification": 3}}]}
        ),
        {},
        400,
        "classification extension is not supported",
    ),
    "shared memory output": (
        dumps(
            {
                **json_request(),
                "outputs": [{"name": "digit", "parameters": {"shared_memory_region": "r"}}],
            }
        ),
        {},
        400,
        "shared memory, which this server does not support",
    ),
    # the input's name, datatype and shape
    "input without a name": (dumps(json_request(name=...)), {}, 400, 'no "name" string'),
    "unknown input": (
        dumps(json_request(name="pixels")),
        {},
        400,
        "unknown input 'pixels'; this model's input is 'images'",
    ),
    "missing datatype": (dumps(json_request(datatype=...)), {}, 400, 'no "datatype" string'),
    "wrong datatype": (
        dumps(json_request(datatype="INT32")),
        {},
        400,
        "datatype 'INT32'; accepted are UINT8 (0-255), FP32 (0 to 1) and BYTES",
    ),
    "lowercase datatype": (
        dumps(json_request(datatype="fp32")),
        {},
        400,
        "datatypes are case-sensitive",
    ),
    "missing shape": (dumps(json_request(shape=...)), {}, 400, '"shape" must be a JSON array'),
    "fractional shape": (
        dumps(json_request(shape=[1.0, 784])),
        {},
        400,
        '"shape" must be a JSON array of integers',
    ),
    "negative shape": (
        dumps(json_request(shape=[-1, 784])),
        {},
        400,
        "shape [-1, 784]; dimensions cannot be negative",
    ),
    "dimension past uint64": (
        dumps(json_request(shape=[2**64, 784])),
        {},
        400,
        "a dimension exceeds the uint64 range",
    ),
    "absurd rank": (
        dumps(json_request(shape=[2**62] * 9)),
        {},
        400,
        "has 9 dimensions; expected [N, 784], [N, 28, 28] or [N, 1, 28, 28]",
    ),
    "shape whose product overflows": (
        dumps(json_request(shape=[2**40, 2**40, 2**40])),
        {},
        400,
        "FP32 with shape [1099511627776, 1099511627776, 1099511627776]; expected [N, 784]",
    ),
    "wrong image shape": (
        dumps(json_request(shape=[1, 783])),
        {},
        400,
        "FP32 with shape [1, 783]; expected [N, 784], [N, 28, 28] or [N, 1, 28, 28]",
    ),
    "bytes shape with two dimensions": (
        dumps(json_request(datatype="BYTES", shape=[1, 1], data=["AA=="])),
        {},
        400,
        "BYTES takes shape [N], one encoded image file per element",
    ),
    "empty batch": (
        dumps(json_request(shape=[0, 784], data=[])),
        {},
        400,
        "batch size 0; send at least one image",
    ),
    "batch over the limit": (
        dumps(json_request(shape=[MAX_BATCH + 1, 784])),
        {},
        413,
        f"holds {MAX_BATCH + 1} images; the limit is {MAX_BATCH} per request",
    ),
    "absurd batch": (
        dumps(json_request(shape=[2**63, 784])),
        {},
        413,
        f"the limit is {MAX_BATCH} per request",
    ),
    # JSON data
    "no data": (
        dumps(json_request(data=...)),
        {},
        400,
        'input \'images\' has neither "data" nor a "binary_data_size" parameter',
    ),
    "data not an array": (dumps(json_request(data="0.5")), {}, 400, '"data" must be a JSON array'),
    "data shorter than shape": (
        dumps(json_request(shape=[2, 784])),
        {},
        400,
        "shape [2, 784] (1568 values), but its data holds 784",
    ),
    "ragged data": (
        dumps(json_request(shape=[1, 28, 28], data=[[0.5] * 28] * 27 + [[0.5] * 27])),
        {},
        400,
        "not a regular array",
    ),
    "strings in fp32 data": (
        dumps(json_request(data=["0.5"] * 784)),
        {},
        400,
        "FP32, so its data must be numbers",
    ),
    "nulls in uint8 data": (
        dumps(json_request(datatype="UINT8", data=[None] * 784)),
        {},
        400,
        "UINT8, so its data must be integers 0-255",
    ),
    "fractions in uint8 data": (
        dumps(json_request(datatype="UINT8", data=[0.5] * 784)),
        {},
        400,
        "UINT8, so its data must be integers 0-255",
    ),
    "uint8 above 255": (
        dumps(json_request(datatype="UINT8", data=[0] * 783 + [256])),
        {},
        422,
        "UINT8, so its values must lie in 0-255; they range from 0 to 256",
    ),
    "uint8 below 0": (
        dumps(json_request(datatype="UINT8", data=[-1] + [0] * 783)),
        {},
        422,
        "they range from -1 to 0",
    ),
    "fp32 above 1": (
        dumps(json_request(data=[0.5] * 783 + [255])),
        {},
        422,
        "FP32, so its values must lie in [0, 1] (0 black background, 1 white ink); "
        "they range from 0.5 to 255",
    ),
    "fp32 infinite in json": (
        dumps(json_request(data=[0.5] * 783)).replace(b"]}]}", b", 1e999]}]}"),
        {},
        422,
        "holds NaN or infinity",
    ),
    # JSON BYTES
    "json bytes not strings": (
        dumps(json_request(datatype="BYTES", shape=[1], data=[[1, 2]])),
        {},
        400,
        "element 0 must be a string: in JSON, BYTES elements are base64-encoded image files",
    ),
    "json bytes not base64": (
        dumps(json_request(datatype="BYTES", shape=[2], data=["AA==", "PNG raw text"])),
        {},
        400,
        "element 1 is not valid base64",
    ),
    "json bytes count": (
        dumps(json_request(datatype="BYTES", shape=[2], data=["AA=="])),
        {},
        400,
        "shape [2], but its data holds 1 elements",
    ),
    "json bytes over the image limit": (
        dumps(
            json_request(
                datatype="BYTES",
                shape=[1],
                data=[base64.b64encode(bytes(MAX_IMAGE_BYTES + 1)).decode()],
            )
        ),
        {},
        413,
        f"the limit is {MAX_IMAGE_BYTES:,} bytes per image",
    ),
    # the binary extension: header length, sizes
    "header length not a number": (
        dumps(json_request()),
        {HEADER_LENGTH: "12ab"},
        400,
        "Inference-Header-Content-Length must be a non-negative integer",
    ),
    "header length negative": (
        dumps(json_request()),
        {HEADER_LENGTH: "-5"},
        400,
        "Inference-Header-Content-Length must be a non-negative integer",
    ),
    "header length past the end": (
        b'{"inputs": []}',
        {HEADER_LENGTH: "15"},
        400,
        "Inference-Header-Content-Length is 15, past the end of the 14-byte body",
    ),
    "header length absurd": (
        b'{"inputs": []}',
        {HEADER_LENGTH: "9" * 40},
        400,
        "past the end of the 14-byte body",
    ),
    "header length zero": (
        b"{}",
        {HEADER_LENGTH: "0"},
        400,
        "Inference-Header-Content-Length is 0",
    ),
    "header length cuts the json": (
        binary_u8([1, 784], bytes(784))[0],
        {HEADER_LENGTH: "20"},
        400,
        "the JSON inference header is not valid JSON",
    ),
    "binary_data_size without header": (
        binary_u8([1, 784], bytes(784))[0],
        {},
        400,
        "the body is not valid JSON",  # binary after JSON: the body is not JSON at all
    ),
    "binary_data_size in pure json": (
        dumps(json_request(datatype="UINT8", data=..., parameters=_SHAPE_784)),
        {},
        400,
        'has "binary_data_size" but the request has no Inference-Header-Content-Length header',
    ),
    "binary_data_size past the end": (
        *binary_u8([1, 784], bytes(700), size=784),
        400,
        "binary_data_size 784, but only 700 bytes follow the JSON header",
    ),
    "binary_data_size short of the data": (
        *binary_u8([1, 784], bytes(800), size=784),
        400,
        "800 bytes follow the JSON header, but the inputs' binary_data_size adds up to 784",
    ),
    "binary data without binary_data_size": (
        *binary_request(json_request(), bytes(10)),
        400,
        '10 bytes of binary data follow the JSON header, but no input has a "binary_data_size"',
    ),
    "binary_data_size not an integer": (
        *binary_u8([1, 784], bytes(784), size="784"),
        400,
        '"binary_data_size" must be a non-negative integer',
    ),
    "binary_data_size negative": (
        *binary_u8([1, 784], b"", size=-1),
        400,
        '"binary_data_size" must be a non-negative integer',
    ),
    "data and binary_data_size": (
        *binary_request(json_request(parameters={"binary_data_size": 0}), b""),
        400,
        'has both "data" and "binary_data_size"',
    ),
    "binary size does not match shape": (
        *binary_u8([2, 784], bytes(784)),
        400,
        "UINT8 with shape [2, 784], which is 1568 bytes of binary data, but its binary_data_size "
        "is 784",
    ),
    "shared memory input": (
        dumps(json_request(parameters={"shared_memory_region": "r"})),
        {},
        400,
        "input 'images' asks for shared memory",
    ),
    # binary FP32 values
    "binary fp32 nan": (
        *binary_request(
            json_request(data=..., parameters={"binary_data_size": 3136}),
            np.full(784, np.nan, dtype="<f4").tobytes(),
        ),
        422,
        "holds NaN or infinity; FP32 pixels must be finite",
    ),
    "binary fp32 above 1": (
        *binary_request(
            json_request(data=..., parameters={"binary_data_size": 3136}),
            np.full(784, 2.0, dtype="<f4").tobytes(),
        ),
        422,
        "they range from 2 to 2",
    ),
    "binary fp32 negative": (
        *binary_request(
            json_request(data=..., parameters={"binary_data_size": 3136}),
            np.full(784, -0.25, dtype="<f4").tobytes(),
        ),
        422,
        "must lie in [0, 1]",
    ),
    # binary BYTES
    "binary bytes element past the end": (
        *binary_bytes([], shape=[1], raw=struct.pack("<I", 50) + bytes(10)),
        400,
        "element 0 has length 50, but only 10 bytes remain",
    ),
    "binary bytes length prefix cut off": (
        *binary_bytes([], shape=[2], raw=struct.pack("<I", 2) + b"ab" + b"\x01\x00"),
        400,
        "binary data ends before element 1's 4-byte length",
    ),
    "binary bytes left over": (
        *binary_bytes([], shape=[1], raw=struct.pack("<I", 2) + b"abcd"),
        400,
        "2 bytes left over after its 1 elements",
    ),
    "binary bytes over the image limit": (
        *binary_bytes([b"x", bytes(MAX_IMAGE_BYTES + 1)]),
        413,
        f"element 1 is {MAX_IMAGE_BYTES + 1:,} bytes; the limit is {MAX_IMAGE_BYTES:,}",
    ),
    "binary bytes over the batch limit": (
        *binary_bytes([b"x"] * (MAX_BATCH + 1)),
        413,
        f"the limit is {MAX_BATCH} per request",
    ),
}


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"), BAD_REQUESTS.values(), ids=BAD_REQUESTS
)
def test_bad_request(body, headers, status, message):
    with pytest.raises(ClientError) as refused:
        parse(body, headers)
    assert refused.value.status == status
    assert message in refused.value.message, refused.value.message
    assert len(refused.value.message) < 300 and "\n" not in refused.value.message


# ---------------------------------------------------------------------------------------------
# Fuzz: whatever arrives, the answer is an InferRequest or a 4xx ClientError.


def accepts_or_refuses(body: bytes, headers: dict[str, str]) -> None:
    try:
        request = parse(body, headers)
    except ClientError as exc:
        assert 400 <= exc.status < 500 and exc.message
        return
    assert (request.images is None) != (request.encoded is None)
    if request.images is not None:
        assert request.images.shape == (request.batch_size, 784)
        assert request.images.dtype == np.float32
        assert float(request.images.min()) >= 0 and float(request.images.max()) <= 1
    encode_infer_response(request, "mnist", "1", np.full((request.batch_size, 10), 0.1))


header_values = st.one_of(
    st.none(),
    st.integers(-5, 400).map(str),
    st.text(max_size=8),
)


@FUZZ
@given(body=st.binary(max_size=400), header=header_values)
def test_fuzz_arbitrary_bytes(body, header):
    accepts_or_refuses(body, {} if header is None else {HEADER_LENGTH: header})


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=6),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
VALID_TENSORS = {
    "UINT8": (np.full((2, 784), 7, np.uint8), lambda a: a.tolist()),
    "FP32": (np.full((2, 28, 28), 0.5, "<f4"), lambda a: a.tolist()),
    "BYTES": (
        np.array([b"ab", b"cde"], dtype=np.object_),
        lambda a: [base64.b64encode(e).decode() for e in a],
    ),
}
dimensions = st.integers(-3, 2**65) | st.sampled_from([0, 1, 2, 28, 784, MAX_BATCH + 1])
fuzz_parameters = st.dictionaries(
    st.sampled_from(["binary_data_size", "binary_data", "binary_data_output", "other"]),
    st.one_of(st.booleans(), st.integers(-2, 4000), st.text(max_size=3)),
    max_size=2,
)
input_mutations = {
    "name": st.sampled_from(["x", ""]) | json_scalars,
    "datatype": st.sampled_from(["UINT8", "FP32", "BYTES", "INT8", "fp32"]) | json_scalars,
    "shape": st.lists(dimensions, max_size=5) | json_values,
    "data": json_values | st.lists(st.integers(-1, 256) | st.floats(-0.5, 1.5), max_size=6),
    "parameters": fuzz_parameters | json_values,
}
request_mutations = {
    "outputs": st.lists(
        st.fixed_dictionaries(
            {"name": st.sampled_from([*oip.OUTPUTS, "x"])}, optional={"parameters": fuzz_parameters}
        ),
        max_size=4,
    )
    | json_values,
    "parameters": fuzz_parameters | json_values,
    "id": json_scalars,
    "inputs": json_values,
}


@st.composite
def near_valid_requests(draw) -> tuple[bytes, dict[str, str]]:
    """A valid request (any datatype, JSON or binary) with a few fields, bytes or lengths fuzzed."""
    datatype = draw(st.sampled_from(sorted(VALID_TENSORS)))
    array, to_json = VALID_TENSORS[datatype]
    if draw(st.booleans()):
        body, headers = triton_body([triton_input(array, datatype, True)])
        head_length = int(headers[HEADER_LENGTH])
        document, binary = json.loads(body[:head_length]), body[head_length:]
    else:
        tensor = {"name": "images", "datatype": datatype, "shape": list(array.shape)}
        document, binary = {"inputs": [{**tensor, "data": to_json(array)}]}, b""
    tensor = document["inputs"][0]
    for field in draw(st.lists(st.sampled_from(sorted(input_mutations)), max_size=2)):
        if draw(st.booleans()):
            tensor.pop(field, None)
        else:
            tensor[field] = draw(input_mutations[field])
    for field in draw(st.lists(st.sampled_from(sorted(request_mutations)), max_size=2)):
        document[field] = draw(request_mutations[field])
    if binary and draw(st.booleans()):
        mutated = bytearray(binary)
        mutated[draw(st.integers(0, len(mutated) - 1))] = draw(st.integers(0, 255))
        binary = bytes(mutated[: len(mutated) - draw(st.integers(0, 8))])
    head = json.dumps(document).encode()
    if not binary and draw(st.booleans()):
        return head, {}
    length = len(head) + draw(st.sampled_from([0, 0, 0, -1, 1]) | st.integers(-len(head), 64))
    return head + binary, {HEADER_LENGTH: str(length)}


@FUZZ
@given(case=near_valid_requests())
def test_fuzz_near_valid_requests(case):
    accepts_or_refuses(*case)


VALID_BINARY = [
    triton_body([triton_input(PIXELS_U8[:2], "UINT8", True)]),
    triton_body([triton_input(PIXELS_F32[:2], "FP32", True)]),
    triton_body([triton_input(np.array([b"ab", b"cde"], dtype=np.object_), "BYTES", True)]),
]


@FUZZ
@given(
    case=st.sampled_from(VALID_BINARY),
    position=st.integers(0, 10_000),
    byte=st.integers(0, 255),
    cut=st.integers(0, 64),
    shift=st.integers(-8, 8),
)
def test_fuzz_mutated_binary_requests(case, position, byte, cut, shift):
    body, headers = case
    mutated = bytearray(body)
    mutated[position % len(mutated)] = byte
    length = int(headers[HEADER_LENGTH]) + shift
    accepts_or_refuses(bytes(mutated[: len(mutated) - cut]), {HEADER_LENGTH: str(length)})
