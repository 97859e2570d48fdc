"""The `/predict` JSON body parser: every shape problem names the offending image."""

import asyncio
import json

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from service import json_batch
from service.budget import Budget
from service.json_batch import images_from_json, parse_image_array
from service.request_body import BODY_BUDGET_KEY, ClientError, read_body
from tests.support.gil import longest_gil_hold_ms

FLAT = [0.0] * 392 + [0.5] * 392  # half dark, half a gray stroke: not blank
NESTED = [[0.0] * 28] * 14 + [[0.5] * 28] * 14


def test_flat_and_nested_images_are_both_accepted():
    array = parse_image_array({"images": [FLAT]}, 10)
    assert array.shape == (1, 784) and array.dtype == np.float32
    assert np.array_equal(
        parse_image_array({"images": [NESTED, NESTED]}, 10), np.stack([array[0]] * 2)
    )


@pytest.mark.parametrize(
    ("images", "named"),
    [
        ([FLAT, NESTED], "image 0 has shape [784], image 1 has shape [28, 28]"),
        ([FLAT, FLAT, FLAT[:-1]], "image 0 has shape [784], image 2 has shape [783]"),
        ([NESTED, [*NESTED[:27], [0.5]]], "image 1 is not a regular array"),
    ],
)
def test_mixed_or_ragged_batches_name_the_first_odd_image(images, named):
    with pytest.raises(ClientError) as refused:
        parse_image_array({"images": images}, 10)
    assert refused.value.status == 422
    assert "the same form for every image" in str(refused.value)
    assert named in str(refused.value)


def test_a_blank_json_image_is_refused_like_a_blank_upload():
    digit = [0.0] * 392 + [1.0] * 392
    with pytest.raises(ClientError, match="no digit found in image 1") as info:
        images_from_json(json.dumps({"images": [digit, [0.0] * 784]}).encode(), 10)
    assert info.value.status == 422


def test_json_errors_name_the_problem_and_its_byte():
    cases = {
        b'{"images": [[NaN]]}': (400, "NaN and Infinity are not JSON numbers (at byte 13)"),
        b'{"images": [[0.5,]]}': (400, "trailing comma is not allowed"),
        b'{"images": [[0.5]]]}': (400, "']' at byte 17 closes no list"),
        b'{"images": [[1' + b"0" * 400 + b"]]}": (422, "a number at byte 13 is too large"),
    }
    for body, (status, message) in cases.items():
        with pytest.raises(ClientError) as refused:
            images_from_json(body, 10)
        assert (refused.value.status, message in refused.value.message) == (status, True), (
            refused.value.message
        )


def test_a_large_json_body_of_another_form_is_refused_with_the_limit():
    body = json.dumps({"id": "a", "images": [FLAT] * 200}).encode()  # a string: not sliceable
    assert len(body) > json_batch.GENERAL_JSON_BYTES
    with pytest.raises(ClientError) as refused:
        images_from_json(body, 4096)
    assert refused.value.status == 413
    assert f"{json_batch.GENERAL_JSON_BYTES:,} bytes" in refused.value.message
    assert len(images_from_json(json.dumps({"images": [FLAT] * 200}).encode(), 4096)) == 200


def test_one_oversized_image_is_refused_before_parsing():
    body = b'{"images": [' + json.dumps(FLAT).encode() + b", [" + b" " * 70_000 + b"0]]}"
    with pytest.raises(ClientError, match="image 1 takes 70,004 bytes of JSON") as refused:
        images_from_json(body, 10)
    assert refused.value.status == 413


# Bodies of numbers, lists, literals and whitespace: the form that is parsed in slices.
literals = st.sampled_from([b"0", b"0.5", b"1", b"-0.0", b"1e-3", b"2", b"null", b"true"])
spaces = st.sampled_from([b"", b" ", b"\n  "])


@st.composite
def string_free_json(draw) -> bytes:
    """`{"images": [...]}` near the valid forms, sometimes with one byte removed or doubled."""

    def value(depth: int) -> bytes:
        if depth < 3 and draw(st.integers(0, 3)):
            width = draw(st.sampled_from([0, 1, 2, 27, 28, 29, 783, 784, 785]) if depth else 3)
            if depth == 1 and draw(st.booleans()):
                width = draw(st.sampled_from([27, 28]))
                return b"[" + b",".join(value(2) for _ in range(width)) + b"]"
            fill = draw(literals)
            items = [fill] * width
            for _ in range(draw(st.integers(0, 2))):
                if items:
                    items[draw(st.integers(0, width - 1))] = draw(literals)
            return b"[" + draw(spaces) + b",".join(items) + b"]"
        return draw(literals)

    images = [value(1) for _ in range(draw(st.integers(0, 4)))]
    body = b'{"images": [' + (b"," + draw(spaces)).join(images) + b"]}"
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + body[at : at + 1] * draw(st.sampled_from([0, 2])) + body[at + 1 :]
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=string_free_json(), slice_bytes=st.sampled_from([1, 100, 5000]))
def test_sliced_parsing_accepts_exactly_what_one_parse_accepts(body, slice_bytes):
    """The slices (cut at the images' commas, parsed one at a time) must agree with orjson on
    the whole body: the same array when it is valid, a 4xx when it is not."""
    try:
        whole = parse_image_array(orjson.loads(body), 4)
    except (orjson.JSONDecodeError, ClientError):
        whole = None
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(json_batch, "SLICE_BYTES", slice_bytes)
            sliced = images_from_json(body, 4)
    except ClientError as refused:
        assert 400 <= refused.status < 500
        assert whole is None, refused.message
    else:
        assert whole is not None and np.array_equal(sliced, whole)


def test_a_maximal_json_body_never_holds_the_gil_long():
    """4096 full-precision images (~64 MiB, the default limit) parsed in a thread: the main
    thread, ticking every 1 ms, is never kept waiting 100 ms (one json.loads: seconds)."""
    image = [0.1234567890123456] * 392 + [0.9876543210987654] * 392
    body = json.dumps({"images": [image] * 4096}).encode()
    assert len(body) > 60 * 2**20
    assert images_from_json(body, 4096).shape == (4096, 784)
    hold = longest_gil_hold_ms(lambda: images_from_json(body, 4096))
    assert hold < 100, f"the main thread waited {hold:.0f} ms"


def test_a_body_larger_than_the_whole_body_budget_is_413_not_503():
    """A chunked body (no Content-Length) that could never fit the worker's body budget: once
    a 503 "busy, retry" every time it was retried; it is a 413 naming the budget's size."""
    chunks = [b"x" * 1024] * 9 + [b""]

    async def receive() -> dict:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    budget = Budget("request body bytes", 8 * 1024)
    scope = {"type": "http", "method": "POST", "headers": [], BODY_BUDGET_KEY: budget}
    with pytest.raises(ClientError) as refused:
        asyncio.run(read_body(Request(scope, receive), limit=1 << 20))
    assert refused.value.status == 413, refused.value.message
    assert "8192" in refused.value.message
