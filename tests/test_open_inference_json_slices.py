"""Large Open Inference JSON bodies: their "data" array is parsed in slices, off one long call.

Each body here is padded with whitespace inside its "data" array past WHOLE_JSON_BYTES, so it
takes the sliced path; the same body parsed in one call (the limit raised) is the reference.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import open_inference as oip
from service.request_body import ClientError
from tests.support.gil import longest_gil_hold_ms
from tests.test_open_inference import BAD_REQUESTS, MAX_BATCH, MAX_IMAGE_BYTES

PAD = b" " * (oip.WHOLE_JSON_BYTES + 1)
NOT_PLAIN = f"above {oip.WHOLE_JSON_BYTES:,} bytes"


def padded(body: bytes) -> bytes:
    """`body` with PAD after the first `"data": [` (bodies without one: after the document)."""
    key = oip._DATA_KEY.search(body)
    at = key.end() if key else len(body)
    return body[:at] + PAD + body[at:]


def outcome(body: bytes, whole: bool, slice_bytes: int = oip.SLICE_BYTES):
    """The parsed pixels, or (status, message); `whole`: parse in one call, as before."""
    with pytest.MonkeyPatch.context() as patch:
        if whole:
            patch.setattr(oip, "WHOLE_JSON_BYTES", 10**9)
        patch.setattr(oip, "SLICE_BYTES", slice_bytes)
        try:
            request = oip.parse_infer_request(body, {}, MAX_BATCH, MAX_IMAGE_BYTES)
        except ClientError as refused:
            return refused.status, refused.message
    return request.images if request.images is not None else request.encoded


def assert_same(body: bytes, slice_bytes: int = oip.SLICE_BYTES) -> None:
    reference, sliced = outcome(body, True), outcome(body, False, slice_bytes)
    if isinstance(reference, np.ndarray):
        assert isinstance(sliced, np.ndarray), sliced
        assert sliced.dtype == reference.dtype and np.array_equal(sliced, reference)
        return
    assert isinstance(sliced, tuple), sliced
    if sliced[0] == 413 and NOT_PLAIN in sliced[1]:
        return  # data that is not one array of numbers: a large body may not send it
    if reference[0] == 400 and "not valid JSON" in reference[1]:
        assert sliced[0] == 400 and "not valid JSON" in sliced[1], sliced
        return
    assert sliced == reference


def infer_body(datatype: str, shape: list[int], data: list) -> bytes:
    tensor = {"name": "images", "datatype": datatype, "shape": shape, "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


JSON_ONLY = {name: case[0] for name, case in BAD_REQUESTS.items() if not case[1]}


@pytest.mark.parametrize("body", JSON_ONLY.values(), ids=JSON_ONLY.keys())
def test_every_bad_json_request_gets_the_same_answer_when_large(body):
    assert_same(padded(body))


@pytest.mark.parametrize("datatype", ["UINT8", "FP32"])
@pytest.mark.parametrize("image_shape", [[784], [28, 28], [1, 28, 28]])
@pytest.mark.parametrize("slice_bytes", [1, 3000, oip.SLICE_BYTES])
def test_large_valid_bodies_give_the_same_pixels(datatype, image_shape, slice_bytes):
    rng = np.random.default_rng(0)
    count = 5
    if datatype == "UINT8":
        values = rng.integers(0, 256, (count, 784))
    else:
        values = rng.random((count, 784)) * np.array([1.0, 0.0, 1.0, 1e-7]).repeat(196)
    data = values.reshape(count, *image_shape).tolist()
    body = infer_body(datatype, [count, *image_shape], data)
    assert_same(padded(body), slice_bytes)
    flat = padded(infer_body(datatype, [count, *image_shape], values.ravel().tolist()))
    assert_same(flat, slice_bytes)
    assert isinstance(outcome(flat, False, slice_bytes), np.ndarray)


def test_large_bodies_whose_data_is_not_numbers_get_413_naming_the_form():
    for body in (
        padded(b'{"inputs":[{"name":"images","datatype":"BYTES","shape":[1],"data":["AA=="]}]}'),
        b'{"id":"' + b"x" * oip.WHOLE_JSON_BYTES + b'","inputs":[]}',
    ):
        status, message = outcome(body, False)
        assert status == 413 and NOT_PLAIN in message, message
    header = json.dumps({"id": "x" * oip.WHOLE_JSON_BYTES, "inputs": []}).encode()
    with pytest.raises(ClientError, match="the JSON inference header is 262,") as refused:
        oip.parse_infer_request(
            header + bytes(784), {oip.HEADER_LENGTH: str(len(header))}, MAX_BATCH, MAX_IMAGE_BYTES
        )
    assert refused.value.status == 413


def test_a_late_non_number_in_nested_data_is_not_called_invalid_json():
    """`true` in the last row once cut the array at the row before: the rest of the document
    failed to parse and the client heard "not valid JSON" for valid JSON."""
    rows = [[0] * 28 for _ in range(28)]
    rows[-1][-1] = True
    status, message = outcome(padded(infer_body("UINT8", [1, 28, 28], [rows])), False)
    assert status == 413 and NOT_PLAIN in message, message
    status, message = outcome(infer_body("UINT8", [1, 28, 28], [rows]), False)  # small: one parse
    assert status == 400 and "booleans" in message, message


def test_a_missing_value_between_slices_is_invalid_json():
    body = padded(infer_body("UINT8", [1, 784], [0] * 784))
    holed = body.replace(b"0, 0, 0", b"0, , 0", 1)
    assert outcome(holed, False, 1)[0] == 400
    assert outcome(holed, True)[0] == 400


numbers = st.sampled_from(
    [b"0", b"1", b"0.5", b"-1", b"255", b"256", b"1e-3", b"2.5", b"1e999", b"true", b"null", b'"x"']
)


@st.composite
def near_valid_data(draw) -> bytes:
    """A JSON body whose data is near a valid [2, 784] array, sometimes one byte off."""
    datatype = draw(st.sampled_from(["UINT8", "FP32"]))
    nested = draw(st.sampled_from([0, 1, 2]))
    fill = draw(numbers)
    values = [fill] * (2 * 784)
    for _ in range(draw(st.integers(0, 3))):
        values[draw(st.integers(0, len(values) - 1))] = draw(numbers)
    if nested == 0:
        data = b"[" + b",".join(values) + b"]"
    else:
        rows = [b"[" + b",".join(values[i : i + 28]) + b"]" for i in range(0, len(values), 28)]
        images = [b"[" + b",".join(rows[i : i + 28]) + b"]" for i in range(0, len(rows), 28)]
        data = b"[" + b",".join(images if nested == 1 else rows) + b"]"
    shape = b"[2, 784]" if nested != 1 else b"[2, 28, 28]"
    body = (b'{"inputs":[{"name":"images","datatype":"%s","shape":%s,"data":' % (
        datatype.encode(), shape) + data + b"}]}")  # fmt: skip
    if draw(st.integers(0, 2)) == 0:
        at = draw(st.integers(len(body) - len(data) - 3, len(body) - 1))
        body = body[:at] + body[at : at + 1] * draw(st.sampled_from([0, 2])) + body[at + 1 :]
    return body


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=near_valid_data(), slice_bytes=st.sampled_from([1, 200, 5000]))
def test_sliced_parsing_agrees_with_one_parse(body, slice_bytes):
    assert_same(padded(body), slice_bytes)


def test_a_maximal_json_infer_body_never_holds_the_gil_long():
    """4096 images of 18-digit floats, flat (~61 MiB, under the 64 MiB JSON limit), parsed in a
    thread: a main thread ticking every 1 ms never waits 100 ms (one json.loads: seconds)."""
    image = [0.1234567890123456] * 392 + [0.9876543210987654] * 392
    body = infer_body("FP32", [4096, 784], image * 4096)
    assert len(body) > 60 * 2**20
    images = oip.parse_infer_request(body, {}, 4096, MAX_IMAGE_BYTES).images
    assert images.shape == (4096, 784) and images[0, 0] == np.float32(0.1234567890123456)
    hold = longest_gil_hold_ms(lambda: oip.parse_infer_request(body, {}, 4096, MAX_IMAGE_BYTES))
    assert hold < 100, f"the main thread waited {hold:.0f} ms"
