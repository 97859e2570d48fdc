"""Open Inference Protocol (KServe v2 / Triton HTTP) for the MNIST model: documents and codec.

Transport-independent on purpose: the HTTP layer hands over the body bytes and the (lowercase)
request headers and gets back plain values, response bytes plus headers, or a `ClientError`. So
the same code serves any route or server, and every protocol rule is tested without a socket.

Specs followed: kserve `docs/predict-api/v2/required_api.md` (the JSON objects) and Triton's
`docs/protocol/extension_binary_data.md` (binary tensor data after the JSON header).

Status codes of the `ClientError`s raised here: 400 for a request that breaks the protocol or
the model's contract (malformed JSON, missing fields, unknown output, wrong datatype or shape,
sizes that do not add up), 413 for a batch or image over its limit, 415 for a compressed body,
422 for well-formed tensors whose values are unusable (out of range, not finite, no digit).

Decisions a client sees:
- The model is `mnist`; its version is the served model's identity (`model_version`).
- One input, `images`. Metadata lists the model's own input, FP32 `[-1, 784]`; the other
  accepted forms (UINT8, `[N, 28, 28]`, `[N, 1, 28, 28]`, BYTES `[N]`) are written out in the
  metadata `properties` (a string map the Open Inference Protocol REST spec allows).
- BYTES elements are encoded image files: raw bytes in binary data, base64 strings in JSON,
  because image files are not valid UTF-8 and JSON strings are text.
- JSON FP32 outputs carry the exact float32 values, so JSON and binary answers agree bit for bit.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.json_batch import GENERAL_JSON_BYTES, SLICE_BYTES, WINDOW_BYTES, brackets
from service.preprocess import (
    MAX_IMAGE_PIXELS,
    SUPPORTED_FORMATS,
    NoDigitFoundError,
    PreprocessError,
    preprocess_image_bytes,
)
from service.request_body import ClientError, printable

MODEL_NAME = "mnist"
SERVER_NAME = "mnist-service"
PLATFORM = "pytorch_state_dict"
"""`<project>_<format>` as the spec asks: an eager PyTorch module built from a saved state dict
(not TorchScript, so not the spec's `pytorch_torchscript`)."""

EXTENSIONS = ("binary_tensor_data",)
INPUT_NAME = "images"
OUTPUTS: dict[str, tuple[str, tuple[int, ...]]] = {
    "probabilities": ("FP32", (-1, 10)),
    "digit": ("INT64", (-1,)),
    "confidence": ("FP32", (-1,)),
}
"""Every model's outputs, in the order a request without `outputs` gets them: datatype, shape."""
FLAG = "uncertain"
FLAG_OUTPUT = ("BOOL", (-1,))
"""A calibrated model's fourth output (`model_outputs`): true when the input does not look like
a digit the model knows, the `uncertain` of every other route. A model trained without a
held-out slice (the seed recipe) has no such flag, so no such output."""

DATATYPES = ("UINT8", "FP32", "BYTES")
PIXEL_SHAPES = ((784,), (28, 28), (1, 28, 28))
"""Accepted shapes of one image for UINT8 and FP32 inputs (after the batch dimension)."""

HEADER_LENGTH = "inference-header-content-length"
PIXELS = 784
_ITEMSIZE = {"UINT8": 1, "FP32": 4}
_OUTPUT_DTYPE = {"FP32": "<f4", "INT64": "<i8", "BOOL": "?"}  # BOOL: one byte, 0 or 1
_UINT64_MAX = 2**64 - 1
_MAX_RANK = 8  # longer shapes can only be wrong; refusing early keeps messages short
_BINARY_HINT = "send the tensor as binary data (raw file bytes per element)"

WHOLE_JSON_BYTES = GENERAL_JSON_BYTES
"""A JSON document (a whole body, or the JSON header before binary data) up to this size is
parsed in one call (~15 ms at most). A larger JSON body must carry its pixels as one array of
numbers in `inputs[0].data`: that array is cut out and parsed in slices (`_NumericData`), the
rest of the document must fit in this size, and a binary request's JSON header too."""
MAX_DATA_ELEMENT_BYTES = 64 * 1024  # one element of a sliced "data" array (a row, an image)
_DATA_KEY = re.compile(rb'"data"[ \t\r\n]*:[ \t\r\n]*\[')
_NUMERIC = np.zeros(256, bool)
_NUMERIC[np.frombuffer(b"0123456789+-.eE,[] \t\r\n", np.uint8)] = True


@dataclass(frozen=True)
class RequestedOutput:
    """One output to answer with, and whether it goes as binary data after the JSON."""

    name: str
    binary: bool


@dataclass(frozen=True, eq=False)
class InferRequest:
    """A validated inference request: exactly one of `images` and `encoded` is set.

    `images` is (N, 784) float32 in [0, 1] for UINT8/FP32 inputs; `encoded` holds the N image
    files of a BYTES input, for the caller to preprocess (`preprocess_elements`), possibly in a
    worker thread.
    """

    id: str | None
    datatype: str
    shape: tuple[int, ...]
    outputs: tuple[RequestedOutput, ...]
    images: np.ndarray | None = None
    encoded: tuple[bytes, ...] | None = None

    @property
    def batch_size(self) -> int:
        return self.shape[0]

    @property
    def binary_response(self) -> bool:
        """Whether the answer has binary parts (and so the Inference-Header-Content-Length)."""
        return any(output.binary for output in self.outputs)


# ---------------------------------------------------------------------------------------------
# Documents: server and model metadata, model identity.


def server_metadata(version: str, name: str = SERVER_NAME) -> dict[str, Any]:
    """`GET /v2`: the server's name, version and the one extension it implements."""
    return {"name": name, "version": version, "extensions": list(EXTENSIONS)}


def model_outputs(flagged: bool) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The served model's outputs: `OUTPUTS`, and `FLAG` when the model is calibrated."""
    return {**OUTPUTS, FLAG: FLAG_OUTPUT} if flagged else dict(OUTPUTS)


def model_metadata(
    name: str,
    version: str,
    platform: str = PLATFORM,
    max_batch: int | None = None,
    flagged: bool = False,
) -> dict[str, Any]:
    """`GET /v2/models/{name}[/versions/{version}]`: the model's tensors, -1 for the batch.

    The spec's metadata has one datatype and shape per input, so `inputs` shows what the model
    itself computes on (FP32 [-1, 784]); `properties` spells out the other accepted forms.
    """
    properties = {
        "input_datatypes": ", ".join(DATATYPES),
        "input_shapes": (
            "UINT8 and FP32: [N, 784], [N, 28, 28] or [N, 1, 28, 28]; BYTES: [N] (N = batch)"
        ),
        "input_values": (
            "white digit on black, row-major 28x28: UINT8 0-255, or FP32 in [0, 1] (0 = black)"
        ),
        "bytes_elements": (
            f"one encoded image file per element ({', '.join(SUPPORTED_FORMATS)}), "
            "preprocessed like /predict_image; raw bytes as binary data, base64 strings in JSON"
        ),
        "outputs": (
            "probabilities: softmax over digits 0-9; digit: the most probable digit; "
            "confidence: its probability"
            + (
                "; uncertain: true when the input does not look like a digit the model knows "
                "(calibrated confidence or energy score past its held-out threshold)"
                if flagged
                else ""
            )
        ),
    }
    if max_batch is not None:
        properties["max_batch_size"] = str(max_batch)
    return {
        "name": name,
        "versions": [version],
        "platform": platform,
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, PIXELS]}],
        "outputs": [
            {"name": output, "datatype": datatype, "shape": list(shape)}
            for output, (datatype, shape) in model_outputs(flagged).items()
        ],
        "properties": properties,
    }


def model_version(tag: str | None, sha256: str) -> str:
    """The served model's identity as a URL-safe version: the store tag's version part, else
    (a plain checkpoint file) the first 16 hex digits of the checkpoint's sha256."""
    if tag:
        return tag.rpartition(":")[2]
    return sha256[:16]


def check_model(name: str, version: str | None, served_name: str, served_version: str) -> None:
    """404 for any model or version but the served one, naming what is served."""
    if name != served_name:
        raise ClientError(
            404,
            f"unknown model {_show(name)}; this server serves model '{served_name}' "
            f"(version '{served_version}')",
        )
    if version is not None and version != served_version:
        raise ClientError(
            404,
            f"model '{served_name}' has no version {_show(version)}; "
            f"the served version is '{served_version}'",
        )


# ---------------------------------------------------------------------------------------------
# Requests.


def parse_infer_request(
    body: bytes,
    headers: Mapping[str, str],
    max_batch: int,
    max_image_bytes: int,
    flagged: bool = False,
) -> InferRequest:
    """An inference request body (JSON, or JSON + binary tensor data) -> `InferRequest`.

    `headers` must have lowercase names; `flagged`: the model has the `FLAG` output. Raises
    only `ClientError` (4xx). Binary UINT8/FP32 data is read with one `np.frombuffer`, no
    per-pixel Python.
    """
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise ClientError(
            415,
            f"Content-Encoding {printable(encoding, 40)} is not supported; send the body "
            "uncompressed",
        )
    header_length = _header_length(headers.get(HEADER_LENGTH), len(body))
    numeric = None
    if header_length is not None:
        if header_length > WHOLE_JSON_BYTES:
            raise ClientError(
                413,
                f"the JSON inference header is {header_length:,} bytes; the limit is "
                f"{WHOLE_JSON_BYTES:,} bytes (the tensor data goes after it, as binary data)",
            )
        json_part = bytes(body[:header_length])
    elif len(body) > WHOLE_JSON_BYTES:
        numeric = _NumericData.cut(body)
        json_part = numeric.rest
    else:
        json_part = body
    document = _parse_json(json_part, header_given=header_length is not None)
    if not isinstance(document, dict):
        raise ClientError(400, "the inference request must be a JSON object")

    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ClientError(400, '"id" must be a string')
    if request_id is not None and not _is_unicode(request_id):
        raise ClientError(400, '"id" holds a lone surrogate (an escape in \\ud800-\\udfff)')
    parameters = _parameters(document.get("parameters"), "the request")
    binary_default = _bool_parameter(parameters, "binary_data_output", "the request", False)
    outputs = _requested_outputs(document.get("outputs"), binary_default, model_outputs(flagged))
    tensor = _single_input(document.get("inputs"))
    datatype, shape = _input_type(tensor, max_batch)

    input_parameters = _parameters(tensor.get("parameters"), f"input '{INPUT_NAME}'")
    _refuse_shared_memory(input_parameters, f"input '{INPUT_NAME}'")
    binary = _binary_region(tensor, input_parameters, header_length, len(body))
    if binary is None:
        data = tensor["data"]
        if numeric is not None:
            if data != numeric.placeholder:
                raise numeric.not_plain()
            if datatype == "BYTES":
                raise ClientError(
                    413,
                    f"the body is {len(body):,} bytes; above {WHOLE_JSON_BYTES:,} bytes BYTES "
                    f"elements must come as binary data ({_BINARY_HINT})",
                )
            images = numeric.pixels(datatype, shape)
            return InferRequest(request_id, datatype, shape, outputs, images=images)
        if datatype == "BYTES":
            return InferRequest(
                request_id,
                datatype,
                shape,
                outputs,
                encoded=_bytes_json(data, shape, max_image_bytes),
            )
        return InferRequest(
            request_id, datatype, shape, outputs, images=_pixels_json(data, datatype, shape)
        )
    start, size = binary
    if datatype == "BYTES":
        encoded = _bytes_binary(body, start, size, shape[0], max_image_bytes)
        return InferRequest(request_id, datatype, shape, outputs, encoded=encoded)
    images = _pixels_binary(body, start, size, datatype, shape)
    return InferRequest(request_id, datatype, shape, outputs, images=images)


def _is_unicode(text: str) -> bool:
    """False for a string with a lone surrogate, which JSON escapes allow but UTF-8 cannot hold
    (the answer echoes the id, and its encoder would fail)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _header_length(value: str | None, body_length: int) -> int | None:
    """The JSON header's length from Inference-Header-Content-Length, checked against the body."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise ClientError(
            400,
            "Inference-Header-Content-Length must be a non-negative integer (the JSON header's "
            f"length in bytes), got {_show(text)}",
        )
    length = int(text) if len(text) <= 20 else body_length + 1  # 20 digits pass any real body
    if length > body_length:
        shown = text if len(text) <= 20 else f"{text[:20]}..."
        raise ClientError(
            400,
            f"Inference-Header-Content-Length is {shown}, past the end of the {body_length}-byte "
            "body",
        )
    if length == 0:
        raise ClientError(
            400, "Inference-Header-Content-Length is 0; it must give the JSON header's length"
        )
    return length


def _parse_json(data: bytes, header_given: bool) -> object:
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        reason = printable(str(exc), 200)
        hint = ""
        if "Extra data" in reason:
            hint = (
                "; the Inference-Header-Content-Length header is shorter or longer than the JSON"
                if header_given
                else "; binary tensor data after the JSON needs the Inference-Header-Content-Length"
                " header"
            )
        where = "the JSON inference header" if header_given else "the body"
        raise ClientError(400, f"{where} is not valid JSON: {reason}{hint}") from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid JSON number")


def _parameters(value: object, owner: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ClientError(400, f'"parameters" of {owner} must be a JSON object')
    return value


def _bool_parameter(parameters: dict[str, Any], key: str, owner: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise ClientError(400, f'parameter "{key}" of {owner} must be true or false')
    return value


def _refuse_shared_memory(parameters: dict[str, Any], owner: str) -> None:
    if any(key.startswith("shared_memory_") for key in parameters):
        raise ClientError(
            400,
            f"{owner} asks for shared memory, which this server does not support; send the "
            "tensor as JSON data or as binary data",
        )


def _requested_outputs(
    value: object, binary_default: bool, available: Mapping[str, object]
) -> tuple[RequestedOutput, ...]:
    """The request's `outputs` (all the model has when absent or empty), each binary or JSON."""
    if value is None or value == []:
        return tuple(RequestedOutput(name, binary_default) for name in available)
    if not isinstance(value, list):
        raise ClientError(400, '"outputs" must be a JSON array of {"name": ...} objects')
    requested: list[RequestedOutput] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ClientError(400, f'"outputs" element {index} must be an object with a "name"')
        name = item["name"]
        if name == FLAG and name not in available:
            raise ClientError(
                400,
                f"this model has no '{FLAG}' output: it was trained without a held-out slice to "
                f"calibrate it (the seed recipe); its outputs are {', '.join(available)}",
            )
        if name not in available:
            raise ClientError(
                400,
                f"unknown output {_show(name)}; this model's outputs are {', '.join(available)}",
            )
        if any(output.name == name for output in requested):
            raise ClientError(400, f"output '{name}' is requested twice")
        owner = f"output '{name}'"
        parameters = _parameters(item.get("parameters"), owner)
        _refuse_shared_memory(parameters, owner)
        if "classification" in parameters:
            raise ClientError(
                400,
                "the classification extension is not supported; request the 'probabilities' "
                "output (or 'digit' and 'confidence') instead",
            )
        binary = _bool_parameter(parameters, "binary_data", owner, binary_default)
        requested.append(RequestedOutput(name, binary))
    return tuple(requested)


def _single_input(value: object) -> dict[str, Any]:
    if value is None:
        raise ClientError(
            400, f"the inference request has no \"inputs\"; send one input, '{INPUT_NAME}'"
        )
    if not isinstance(value, list):
        raise ClientError(400, '"inputs" must be a JSON array of input tensors')
    if len(value) != 1:
        raise ClientError(
            400, f"this model takes exactly one input, '{INPUT_NAME}'; the request has {len(value)}"
        )
    (tensor,) = value
    if not isinstance(tensor, dict):
        raise ClientError(400, "each input must be a JSON object with name, datatype and shape")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise ClientError(400, 'the input has no "name" string')
    if name != INPUT_NAME:
        raise ClientError(400, f"unknown input {_show(name)}; this model's input is '{INPUT_NAME}'")
    return tensor


def _input_type(tensor: dict[str, Any], max_batch: int) -> tuple[str, tuple[int, ...]]:
    """Datatype and shape, checked against what the model accepts, and the batch limit."""
    owner = f"input '{INPUT_NAME}'"
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str):
        raise ClientError(400, f'{owner} has no "datatype" string')
    if datatype not in DATATYPES:
        hint = " (datatypes are case-sensitive)" if datatype.upper() in DATATYPES else ""
        raise ClientError(
            400,
            f"{owner} has datatype {_show(datatype)}; accepted are UINT8 (0-255), FP32 "
            f"(0 to 1) and BYTES (encoded image files){hint}",
        )
    raw_shape = tensor.get("shape")
    if not isinstance(raw_shape, list) or not all(type(d) is int for d in raw_shape):
        raise ClientError(400, f'{owner} "shape" must be a JSON array of integers')
    if len(raw_shape) > _MAX_RANK:
        raise ClientError(400, f"{owner} has {len(raw_shape)} dimensions; {_expected(datatype)}")
    shape = tuple(raw_shape)
    if any(d < 0 for d in shape):
        raise ClientError(
            400, f"{owner} has shape {_show_shape(shape)}; dimensions cannot be negative"
        )
    if any(d > _UINT64_MAX for d in shape):
        raise ClientError(
            400, f"{owner} has shape {_show_shape(shape)}; a dimension exceeds the uint64 range"
        )
    matches = len(shape) == 1 if datatype == "BYTES" else shape[1:] in PIXEL_SHAPES
    if not matches:
        raise ClientError(
            400, f"{owner} is {datatype} with shape {_show_shape(shape)}; {_expected(datatype)}"
        )
    batch = shape[0]
    if batch == 0:
        raise ClientError(400, f"{owner} has batch size 0; send at least one image")
    if batch > max_batch:
        raise ClientError(
            413, f"{owner} holds {batch} images; the limit is {max_batch} per request"
        )
    return datatype, shape


def _expected(datatype: str) -> str:
    if datatype == "BYTES":
        return "BYTES takes shape [N], one encoded image file per element"
    return "expected [N, 784], [N, 28, 28] or [N, 1, 28, 28]"


def _binary_region(
    tensor: dict[str, Any],
    parameters: dict[str, Any],
    header_length: int | None,
    body_length: int,
) -> tuple[int, int] | None:
    """(start, size) of the input's binary data, or None when it comes as JSON `data`.

    With a single input the sizes add up only if its binary data is exactly what follows the
    JSON header.
    """
    owner = f"input '{INPUT_NAME}'"
    trailing = 0 if header_length is None else body_length - header_length
    size = parameters.get("binary_data_size")
    if size is None:
        if trailing:
            raise ClientError(
                400,
                f"{trailing} bytes of binary data follow the JSON header, but no input has a "
                '"binary_data_size" parameter',
            )
        if "data" not in tensor:
            raise ClientError(400, f'{owner} has neither "data" nor a "binary_data_size" parameter')
        return None
    if type(size) is not int or size < 0:
        raise ClientError(400, f'{owner} "binary_data_size" must be a non-negative integer')
    if "data" in tensor:
        raise ClientError(
            400, f'{owner} has both "data" and "binary_data_size"; send its data one way'
        )
    if header_length is None:
        raise ClientError(
            400,
            f'{owner} has "binary_data_size" but the request has no '
            "Inference-Header-Content-Length header giving the JSON header's length",
        )
    if size > trailing:
        raise ClientError(
            400,
            f"{owner} has binary_data_size {size}, but only {trailing} bytes follow the JSON "
            "header",
        )
    if size < trailing:
        raise ClientError(
            400,
            f"{trailing} bytes follow the JSON header, but the inputs' binary_data_size adds "
            f"up to {size}",
        )
    return header_length, size


def _pixels_binary(
    body: bytes, start: int, size: int, datatype: str, shape: tuple[int, ...]
) -> np.ndarray:
    count = shape[0] * PIXELS
    expected = count * _ITEMSIZE[datatype]
    if size != expected:
        raise ClientError(
            400,
            f"input '{INPUT_NAME}' is {datatype} with shape {_show_shape(shape)}, which is "
            f"{expected} bytes of binary data, but its binary_data_size is {size}",
        )
    if datatype == "UINT8":
        pixels = np.frombuffer(body, dtype=np.uint8, count=count, offset=start)
        images = pixels.reshape(shape[0], PIXELS).astype(np.float32)
        images /= 255  # the same float32 values as the bulk path's `astype(float32) / 255`
        return images
    values = np.frombuffer(body, dtype="<f4", count=count, offset=start)
    images = values.reshape(shape[0], PIXELS).astype(np.float32)  # native, aligned, writable
    _check_unit_range(images)
    return images


_NOT_REGULAR = '"data" is not a regular array (nested lists of different lengths?)'


def _pixels_json(data: object, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    owner = f"input '{INPUT_NAME}'"
    if not isinstance(data, list):
        raise ClientError(400, f'{owner} "data" must be a JSON array (flat or nested, row-major)')
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise ClientError(400, f"{owner} {_NOT_REGULAR}") from None
    _check_count(array.size, shape)
    # numpy reads true/false as 1/0; a large body's sliced parse refuses them: so does this
    _check_kind("b" if _holds_booleans(data) else array.dtype.kind, datatype)
    if datatype == "UINT8":
        _check_byte_range(int(array.min()), int(array.max()))
        images = array.reshape(shape[0], PIXELS).astype(np.float32)
        images /= 255
        return images
    values = array.reshape(shape[0], PIXELS).astype(np.float64)
    _check_unit_range(values)  # before the cast, so 1e39 is refused, not an overflow to inf
    return values.astype(np.float32)


def _holds_booleans(data: list) -> bool:
    """Whether a (nested) JSON list holds true or false anywhere; one C-level pass per list."""
    lists = [data]
    while lists:
        items = lists.pop()
        types = set(map(type, items))
        if bool in types:
            return True
        if list in types:
            lists.extend(item for item in items if type(item) is list)
    return False


def _check_count(size: int, shape: tuple[int, ...]) -> None:
    count = shape[0] * PIXELS
    if size != count:
        raise ClientError(
            400,
            f"input '{INPUT_NAME}' has shape {_show_shape(shape)} ({count} values), but its data "
            f"holds {size}",
        )


def _check_kind(kind: str, datatype: str) -> None:
    """The numpy kind of the whole data ("O" for integers beyond 64 bits) against the type."""
    owner = f"input '{INPUT_NAME}'"
    if datatype == "UINT8" and kind not in "iu":
        raise ClientError(
            400,
            f"{owner} is UINT8, so its data must be integers 0-255 (no fractions, "
            "strings, booleans or nulls)",
        )
    if kind not in "iuf":
        raise ClientError(
            400, f"{owner} is FP32, so its data must be numbers (no strings, booleans or nulls)"
        )


def _check_byte_range(low: int, high: int) -> None:
    if low < 0 or high > 255:
        raise ClientError(
            422,
            f"input '{INPUT_NAME}' is UINT8, so its values must lie in 0-255; they range from "
            f"{low} to {high}",
        )


class _NumericData:
    """A large JSON body's `inputs[0].data`, a plain array of numbers, parsed in slices.

    One `json.loads` of a 64 MiB body held the GIL for seconds (in a worker thread too), so the
    event loop stalled. So the array (only digits, signs, dots, exponents, commas, brackets and
    whitespace) is replaced by a random placeholder string, the small rest of the document is
    parsed as usual (the caller checks that the placeholder is exactly `inputs[0].data`), and
    the array is cut at the commas between its top-level elements and parsed ~SLICE_BYTES at a
    time with orjson, into one preallocated float32 array. Values, the order of the checks and
    their messages are those of `_pixels_json` on the whole array.
    """

    def __init__(self, body: bytes, start: int, stop: int) -> None:
        self.body, self.start, self.stop = body, start, stop  # the array is body[start:stop]
        self.placeholder = f"data-{secrets.token_hex(16)}"
        self.rest = body[:start] + f'"{self.placeholder}"'.encode() + body[stop:]

    @classmethod
    def cut(cls, body: bytes) -> _NumericData:
        """The body's longest `"data": [numbers...]` array, cut out; 413 when there is none
        or the rest of the document is over WHOLE_JSON_BYTES."""
        best: tuple[int, int] | None = None
        # What precedes the array is part of the rest, so the key is within its size: no
        # search through the megabytes of numbers after it (a find there holds the GIL ~50 ms).
        head = WHOLE_JSON_BYTES + 64
        at = body.find(b'"data"', 0, head)
        for _ in range(8):  # an input has one "data"; a few more in other strings at most
            key = _DATA_KEY.match(body, at) if at >= 0 else None
            at = -1 if at < 0 else body.find(b'"data"', at + 1, head)
            if key is None:
                if at < 0:
                    break
                continue
            start = key.end() - 1
            stop = _numeric_end(body, start)
            if stop is not None and (best is None or stop - start > best[1] - best[0]):
                best = (start, stop)
        if best is None or len(body) - (best[1] - best[0]) > WHOLE_JSON_BYTES:
            raise _not_plain(len(body))
        return cls(body, *best)

    def not_plain(self) -> ClientError:
        return _not_plain(len(self.body))

    def pixels(self, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
        """The array as (N, 784) float32, with `_pixels_json`'s checks and messages."""
        owner = f"input '{INPUT_NAME}'"
        count = shape[0] * PIXELS
        slices, irregular = self._slices(most_lists=1 + 30 * shape[0]), False
        # Room for the values the array can hold ("0," per value), not for what shape promises.
        images = np.empty(min(count, (self.stop - self.start) // 2 + 1), np.float32)
        filled, kinds, form = 0, set(), None
        low: float | int | None = None
        high: float | int | None = None
        for begin, end in slices:
            elements = _parse_slice(self.body, begin, end)
            if not elements and len(slices) > 1:  # `, ,`: each side parsed as `[ ]` alone
                raise ClientError(
                    400, f"the body is not valid JSON: a value is missing at byte {begin}"
                )
            try:
                array = np.asarray(elements)
            except (ValueError, TypeError, OverflowError, RecursionError):
                irregular = True
                continue
            if form is None:
                form = array.shape[1:]
            irregular = irregular or array.shape[1:] != form
            if irregular or array.size == 0:
                continue
            kinds.add(array.dtype.kind)
            if array.dtype.kind not in "iuf":
                filled += array.size
                continue
            as_number = int if array.dtype.kind in "iu" else float
            least, most = as_number(array.min()), as_number(array.max())
            low = least if low is None else min(low, least)
            high = most if high is None else max(high, most)
            if filled + array.size <= len(images):
                flat = array.reshape(-1)
                if array.dtype.kind in "iu" or datatype == "UINT8":
                    images[filled : filled + array.size] = flat
                elif least >= 0.0 and most <= 1.0:  # cast later values only once in range
                    images[filled : filled + array.size] = flat.astype(np.float64)
            filled += array.size
        if irregular:
            raise ClientError(400, f"{owner} {_NOT_REGULAR}")
        _check_count(filled, shape)
        kind = "O" if "O" in kinds or kinds - set("iuf") else "f" if "f" in kinds else "i"
        _check_kind(kind, datatype)
        assert low is not None and high is not None  # count > 0 values, all numbers
        if datatype == "UINT8":
            _check_byte_range(int(low), int(high))
            images /= 255
        else:
            _check_unit_range(np.array([low, high], np.float64))
        return images.reshape(shape[0], PIXELS)

    def _slices(self, most_lists: int) -> list[tuple[int, int]]:
        """(begin, end) pieces of the array's inside, cut at commas between its top-level
        elements, each about SLICE_BYTES."""
        body, start, stop = self.body, self.start, self.stop
        too_many = ClientError(
            413,
            f"input '{INPUT_NAME}' \"data\" nests more than {most_lists:,} JSON lists; "
            f"a body over {WHOLE_JSON_BYTES:,} bytes may send its images as a flat "
            "array or nested by image or row",
        )
        found = brackets(body, start, stop, 2 * most_lists, too_many)
        assert found is not None  # None only for forbidden bytes, and none are given
        position, is_open = found
        depth = np.cumsum(np.where(is_open, 1, -1))  # depth after each bracket
        closed = np.flatnonzero(depth <= 0)
        if len(closed) != 1 or closed[0] != len(depth) - 1 or depth[-1] != 0:
            at = int(position[closed[0]]) if len(closed) else stop
            raise ClientError(
                400, f'the body is not valid JSON: the "data" array is malformed at byte {at}'
            )
        # Each top-level list element: from its "[" (depth 2 after) to its "]" (depth 1 after).
        element_starts = position[is_open & (depth == 2)]
        element_ends = position[~is_open & (depth == 1)]
        longest = int(np.max(element_ends - element_starts)) if len(element_starts) else 0
        if longest > MAX_DATA_ELEMENT_BYTES:
            raise ClientError(
                413,
                f"input '{INPUT_NAME}' \"data\" has an element of more than "
                f"{MAX_DATA_ELEMENT_BYTES:,} bytes; a body over {WHOLE_JSON_BYTES:,} bytes may "
                "send its images as a flat array or nested by image or row",
            )
        # Top-level gaps (depth 1 between two brackets) are where commas may be cut.
        gap_at = np.flatnonzero(depth[:-1] == 1)
        gap_starts, gap_ends = position[gap_at] + 1, position[gap_at + 1]
        slices, begin = [], start + 1
        while stop - 1 - begin > SLICE_BYTES:
            target = begin + SLICE_BYTES
            gap = int(np.searchsorted(gap_ends, target, side="right"))
            comma = -1
            while comma < 0 and gap < len(gap_starts):
                comma = body.find(b",", max(target, int(gap_starts[gap])), int(gap_ends[gap]))
                gap += 1
            if comma < 0:
                break
            slices.append((begin, comma))
            begin = comma + 1
        slices.append((begin, stop - 1))
        return slices


def _numeric_end(body: bytes, start: int) -> int | None:
    """Where the array of numbers opening at `start` ends (after its last "]"), or None."""
    end = len(body)
    for offset in range(start, len(body), WINDOW_BYTES):
        window = np.frombuffer(body, np.uint8, min(WINDOW_BYTES, len(body) - offset), offset)
        bad = np.flatnonzero(~_NUMERIC[window])
        if len(bad):
            end = offset + int(bad[0])
            break
    if body[end : end + 3] in (b"NaN", b"Inf"):  # json.loads's own words for these
        name = "NaN" if body[end] == ord("N") else "Infinity"
        name = f"-{name}" if body[end - 1] == ord("-") else name
        raise ClientError(400, f"the body is not valid JSON: {name} is not a valid JSON number")
    last = body.rfind(b"]", start, end)
    if last < 0 or body[last + 1 : end].strip(b" \t\r\n") not in (b"", b","):
        return None  # the run of numbers ends inside the array (true, null, a string...)
    return last + 1


def _parse_slice(body: bytes, begin: int, end: int) -> list:
    """Elements `body[begin:end]` (a comma-separated run of the array) as one orjson parse."""
    piece = b"[" + body[begin:end] + b"]"
    try:
        return orjson.loads(piece)
    except orjson.JSONDecodeError as exc:
        if exc.msg.startswith("number is infinity"):  # 1e999, 400-digit integers: json.loads
            with contextlib.suppress(ValueError, RecursionError):  # reads them (inf, int)
                return json.loads(piece)
        raise ClientError(
            400,
            f"the body is not valid JSON: {exc.msg[:200]} at byte {max(0, begin - 1 + exc.pos)}",
        ) from None


def _not_plain(size: int) -> ClientError:
    return ClientError(
        413,
        f'the body is {size:,} bytes; above {WHOLE_JSON_BYTES:,} bytes its input\'s "data" '
        "must be one JSON array of numbers (flat or nested) and the rest of the document at most "
        f"{WHOLE_JSON_BYTES:,} bytes; or send the tensor as binary data "
        "(Inference-Header-Content-Length)",
    )


def _check_unit_range(values: np.ndarray) -> None:
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0:  # False for NaN too
        return
    owner = f"input '{INPUT_NAME}'"
    if not np.isfinite(values).all():
        raise ClientError(422, f"{owner} holds NaN or infinity; FP32 pixels must be finite")
    raise ClientError(
        422,
        f"{owner} is FP32, so its values must lie in [0, 1] (0 black background, 1 white ink); "
        f"they range from {low:g} to {high:g}",
    )


def _bytes_binary(
    body: bytes, start: int, size: int, count: int, max_image_bytes: int
) -> tuple[bytes, ...]:
    """Binary BYTES: `count` elements, each a 4-byte little-endian length and that many bytes."""
    owner = f"input '{INPUT_NAME}'"
    view = memoryview(body)
    end, offset = start + size, start
    elements: list[bytes] = []
    for index in range(count):
        if end - offset < 4:
            raise ClientError(
                400,
                f"{owner} binary data ends before element {index}'s 4-byte length; its shape "
                f"[{count}] says {count} elements",
            )
        (length,) = struct.unpack_from("<I", body, offset)
        offset += 4
        if length > end - offset:
            raise ClientError(
                400,
                f"{owner} element {index} has length {length}, but only {end - offset} bytes "
                "remain in the input's binary data",
            )
        if length > max_image_bytes:
            raise ClientError(
                413,
                f"{owner} element {index} is {length:,} bytes; the limit is "
                f"{max_image_bytes:,} bytes per image",
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != end:
        raise ClientError(
            400,
            f"{owner} binary data has {end - offset} bytes left over after its {count} "
            f"elements (shape [{count}])",
        )
    return tuple(elements)


def _bytes_json(data: object, shape: tuple[int, ...], max_image_bytes: int) -> tuple[bytes, ...]:
    """JSON BYTES: a flat array of base64 strings, one encoded image file each."""
    owner = f"input '{INPUT_NAME}'"
    if not isinstance(data, list):
        raise ClientError(400, f'{owner} "data" must be a JSON array of base64 strings')
    if len(data) != shape[0]:
        raise ClientError(
            400, f"{owner} has shape [{shape[0]}], but its data holds {len(data)} elements"
        )
    encoded_limit = 4 * ((max_image_bytes + 2) // 3)
    elements: list[bytes] = []
    for index, element in enumerate(data):
        if not isinstance(element, str):
            raise ClientError(
                400,
                f"{owner} element {index} must be a string: in JSON, BYTES elements are "
                f"base64-encoded image files (or {_BINARY_HINT})",
            )
        if len(element) > encoded_limit:
            raise ClientError(
                413,
                f"{owner} element {index} is over the limit of {max_image_bytes:,} bytes per image",
            )
        try:
            decoded = base64.b64decode(element, validate=True)
        except ValueError:  # binascii.Error, or non-ASCII text
            raise ClientError(
                400,
                f"{owner} element {index} is not valid base64: in JSON, BYTES elements are "
                f"base64-encoded image files (or {_BINARY_HINT})",
            ) from None
        if len(decoded) > max_image_bytes:
            raise ClientError(
                413,
                f"{owner} element {index} is {len(decoded):,} bytes; the limit is "
                f"{max_image_bytes:,} bytes per image",
            )
        elements.append(decoded)
    return tuple(elements)


def _show(text: str) -> str:
    """Client text quoted for a message: capped and printable."""
    return f"'{printable(text, 80)}'"


def _show_shape(shape: tuple[int, ...]) -> str:
    return printable(json.dumps(list(shape)), 120)


# ---------------------------------------------------------------------------------------------
# Image elements.


def element_error(index: int, error: Exception, input_name: str = INPUT_NAME) -> ClientError:
    """A preprocessing failure of BYTES element `index` as the ClientError that names it.

    No digit is 422, like `/predict_image`; any other failure (undecodable, too large, or an
    error Pillow does not classify) is 400.
    """
    status = 422 if isinstance(error, NoDigitFoundError) else 400
    reason = (
        str(error) if isinstance(error, PreprocessError) else "the image could not be processed"
    )
    return ClientError(status, f"input '{input_name}' element {index}: {reason}")


def preprocess_elements(encoded: Sequence[bytes], max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """BYTES elements -> (N, 784) float32 through `/predict_image`'s preprocessing.

    The first bad element raises its `element_error`; for an unexpected (non-PreprocessError)
    failure the original exception is the ClientError's `__cause__`, for the caller to log.
    """
    images = np.empty((len(encoded), PIXELS), dtype=np.float32)
    for index, data in enumerate(encoded):
        try:
            images[index] = preprocess_image_bytes(data, max_pixels=max_pixels).reshape(PIXELS)
        except PreprocessError as exc:
            raise element_error(index, exc) from None
        except Exception as exc:  # hostile files can break decoders in unclassified ways
            raise element_error(index, exc) from exc
    return images


# ---------------------------------------------------------------------------------------------
# Responses.


def encode_infer_response(
    request: InferRequest,
    model_name: str,
    model_version: str,
    probabilities: np.ndarray,
    flags: np.ndarray | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The inference response body and its headers (lowercase names), JSON or binary.

    `flags`: the (N,) bool `FLAG` output, for a request that asks for it. Binary outputs
    follow the JSON in the requested order; then the headers carry
    Inference-Header-Content-Length and Content-Type application/octet-stream.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.shape != (request.batch_size, 10):
        raise ValueError(
            f"probabilities have shape {probabilities.shape}, expected ({request.batch_size}, 10)"
        )
    digits = probabilities.argmax(axis=1)
    tensors = {
        "probabilities": probabilities,
        "digit": digits,
        "confidence": probabilities[np.arange(len(digits)), digits],
    }
    if flags is not None:
        tensors[FLAG] = np.asarray(flags, dtype=bool).reshape(len(digits))
    elif any(requested.name == FLAG for requested in request.outputs):
        raise ValueError(f"the request asks for '{FLAG}' and no flags were given")
    outputs: list[dict[str, Any]] = []
    parts: list[bytes] = []
    for requested in request.outputs:
        datatype = model_outputs(True)[requested.name][0]
        array = tensors[requested.name].astype(_OUTPUT_DTYPE[datatype], copy=False)
        output: dict[str, Any] = {
            "name": requested.name,
            "datatype": datatype,
            "shape": list(array.shape),
        }
        if requested.binary:
            raw = array.tobytes()
            output["parameters"] = {"binary_data_size": len(raw)}
            parts.append(raw)
        else:
            output["data"] = array.ravel().tolist()
        outputs.append(output)
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        document["id"] = request.id
    document["outputs"] = outputs
    if not np.isfinite(probabilities).all():  # orjson would write null
        raise ValueError("probabilities must be finite")
    header = orjson.dumps(document)  # json.dumps of 100k answers held the GIL for ~1 s
    if not parts:
        return header, {"content-type": "application/json"}
    return b"".join([header, *parts]), {
        "content-type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }


def error_body(message: str) -> bytes:
    """The protocol's error object, `{"error": message}`, for any 4xx of these routes."""
    return json.dumps({"error": message}, separators=(",", ":")).encode()
