"""Property-based fuzzing of the real server: whatever a client sends, the answer is a 2xx or a
clear 4xx (`{"error": "..."}`), never a 5xx, and the server keeps serving afterwards."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from service.preprocess import MIN_INK_CONTRAST
from tests.support.images import encoded
from tests.support.multipart import multipart_body

pytestmark = pytest.mark.e2e  # against the session's real server

POST_ROUTES = (
    "/predict_image",
    "/predict_images",
    "/predict",
    "/predict_bulk",
    "/preprocess_image",
    "/model_info",
)
IMAGE_ROUTES = (
    ("/predict_image", "image"),
    ("/preprocess_image", "image"),
    ("/predict_images", "images"),
)
FUZZ = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def sample_images() -> list[bytes]:
    """A hand-drawn '7' in every accepted format: seeds for corrupted uploads."""
    image = Image.new("L", (40, 48), 255)
    ImageDraw.Draw(image).line([(6, 6), (34, 6), (14, 44)], fill=0, width=5)
    return [
        encoded(image.convert(mode), fmt)
        for fmt, mode in (
            ("PNG", "L"),
            ("PNG", "RGBA"),
            ("JPEG", "RGB"),
            ("GIF", "P"),
            ("BMP", "RGB"),
            ("WEBP", "RGB"),
            ("TIFF", "I;16"),
            ("PPM", "RGB"),
        )
    ]


SAMPLE_IMAGES = sample_images()


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(autouse=True)
def still_serving_afterwards(client, mnist_test_pngs) -> Iterator[None]:
    yield
    png, digit = mnist_test_pngs[0]
    response = client.post("/predict_image", files={"image": ("digit.png", png)})
    assert response.status_code == 200, response.text
    assert response.json()["digit"] == digit


def assert_handled(response: httpx.Response, allowed: set[int] | None = None) -> None:
    """2xx with a JSON body, or 4xx with `{"error": "<non-empty>"}`; never 5xx."""
    request = response.request
    where = f"{request.method} {request.url.path} ({request.headers.get('content-type')!r})"
    status = response.status_code
    assert status < 500, f"{where} -> {status}: {response.text[:500]}"
    assert 200 <= status < 300 or 400 <= status < 500, f"{where} -> {status}"
    body = response.json()
    if status >= 400:
        assert isinstance(body, dict), f"{where} -> {status}: 4xx body is not an object: {body!r}"
        assert isinstance(body.get("error"), str) and body["error"], f"{where} -> {body!r}"
    if allowed is not None:
        assert status in allowed, f"{where} -> {status}: {response.text[:500]}"


# Uploads -----------------------------------------------------------------------------------------


@st.composite
def corrupted_images(draw) -> bytes:
    """A real image file with a few bytes overwritten and possibly cut short."""
    data = bytearray(draw(st.sampled_from(SAMPLE_IMAGES)))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


upload_bytes = st.one_of(
    st.binary(max_size=2048),
    corrupted_images(),
    st.binary(max_size=512).map(lambda tail: b"\x89PNG\r\n\x1a\n" + tail),
    st.binary(max_size=512).map(lambda tail: b"GIF89a" + tail),
    st.binary(max_size=512).map(lambda tail: b"II*\x00" + tail),
)
filenames = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=20
)


@FUZZ
@given(
    route=st.sampled_from(IMAGE_ROUTES),
    files=st.lists(st.tuples(filenames, upload_bytes), min_size=1, max_size=3),
    part_type=st.sampled_from(["image/png", "application/octet-stream", "text/plain", "x/y"]),
)
def test_random_image_uploads_get_a_clear_answer(client, route, files, part_type):
    path, field = route
    if field == "image":
        files = files[:1]
    response = client.post(path, files=[(field, (name, data, part_type)) for name, data in files])
    assert_handled(response, {200, 400, 422})


# JSON for /predict --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=40,
)


@FUZZ
@given(payload=json_values | st.fixed_dictionaries({"images": json_values}))
def test_random_json_values_get_a_clear_answer(client, payload):
    body = json.dumps(payload, allow_nan=True).encode()  # NaN/Infinity tokens are not JSON
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert_handled(response, {200, 400, 413, 422})


def as_float32(value: object) -> float | None:
    """What numpy makes of one JSON number in a float32 array; None if it cannot convert it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            return float(np.float32(value))
        except OverflowError:
            return None


numbers = st.one_of(
    st.floats(0, 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-3, 3),
    st.integers(min_value=10**300, max_value=10**400),
    st.integers(max_value=-(10**300), min_value=-(10**400)),
    st.sampled_from([-0.0, 1.0000001, 1.00000001, -1e-46, 1e-45, 5e-324, 1e308, 3.5e38]),
)
odd_values = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.just([0.5]), st.just({}))


@st.composite
def near_valid_batches(draw) -> tuple[dict, bool | None]:
    """`{"images": [...]}` close to valid, and whether it is valid (None: either answer is fine).

    Images are all flat (784) or all nested (28x28) in one request; sizes are near the right
    ones and a few pixels are replaced by out-of-range numbers or other JSON values.
    """
    nested = draw(st.booleans())
    images, bad, odd = [], False, False
    for _ in range(draw(st.integers(0, 3))):
        fill = draw(st.floats(0, 1))
        if nested:
            rows = draw(st.sampled_from([28, 28, 28, 27, 29, 0]))
            image = [[fill] * 28 for _ in range(rows)]
            if rows and draw(st.booleans()):
                image[draw(st.integers(0, rows - 1))] = [fill] * draw(
                    st.sampled_from([0, 1, 27, 28, 29])
                )
            bad = bad or rows != 28 or any(len(row) != 28 for row in image)
            if draw(st.integers(0, 9)) == 0:
                image = [[[value] for value in row] for row in image]  # one level too deep
                bad = True
            cells = [(r, c) for r, row in enumerate(image) for c in range(len(row))]
        else:
            image = [fill] * draw(st.sampled_from([784, 784, 784, 783, 785, 0, 1]))
            bad = bad or len(image) != 784
            cells = [(c,) for c in range(len(image))]
        places = draw(st.lists(st.sampled_from(cells), max_size=3, unique=True)) if cells else []
        for where in places:
            value = draw(numbers | odd_values)
            if nested:
                image[where[0]][where[1]] = value
            else:
                image[where[0]] = value
            if isinstance(value, int | float) and not isinstance(value, bool):
                number = as_float32(value)
                bad = bad or number is None or not math.isfinite(number) or not 0 <= number <= 1
            else:
                odd = True  # JSON null/bool/str/list: numpy's leniency decides; must not 5xx
        flat = [v for row in image for v in row] if nested else image
        values = [as_float32(v) for v in flat if isinstance(v, float | int)]
        if values and None not in values and max(values) - min(values) < MIN_INK_CONTRAST / 255:
            bad = True  # a blank image: 422 "no digit found", as for an uploaded file
        images.append(image)
    bad = bad or not images
    return {"images": images}, False if bad else None if odd else True


@FUZZ
@given(case=near_valid_batches())
def test_near_valid_json_batches_are_classified_or_rejected(client, case):
    payload, valid = case
    body = json.dumps(payload, allow_nan=True).encode()
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    if valid is True:
        assert_handled(response, {200})
        assert len(response.json()) == len(payload["images"])
    elif valid is False:
        assert_handled(response, {400, 422})  # 400: NaN/Infinity tokens are not JSON
    else:
        assert_handled(response, {200, 400, 422})


# Content types, truncated multipart, bulk ---------------------------------------------------------

content_types = st.one_of(
    st.sampled_from(
        [
            None,
            "",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=XyZ",
            'multipart/form-data; boundary="XyZ"; charset=no-such-charset',
            "multipart/mixed; boundary=XyZ",
            "application/x-www-form-urlencoded",
            "application/json",
            "application/json; charset=utf-16",
            "application/octet-stream",
            "application/vnd.bentoml+pickle",
            "text/plain",
            "image/png",
            ";;;",
            "*/*",
        ]
    ),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40),
    st.lists(st.integers(0x21, 0xFF).filter(lambda b: b != 0x7F), max_size=20).map(
        lambda tail: b"multipart/form-data; boundary=" + bytes(tail)  # latin-1 "obs-text"
    ),
)
bodies = st.one_of(
    st.binary(max_size=1024),
    st.sampled_from(
        [
            b"",
            b"{}",
            b'{"images": [[0.5]]}',
            bytes(784),
            multipart_body([("image", "x.png", SAMPLE_IMAGES[0])], "XyZ"),
            b"--XyZ\r\n\r\n--XyZ--\r\n",
            b"image=abc&images=def",
        ]
    ),
)


def post_raw(client: httpx.Client, route: str, content_type, body: bytes) -> httpx.Response:
    headers = {} if content_type is None else {"content-type": content_type}
    try:
        return client.post(route, content=body, headers=headers)
    except httpx.TransportError as exc:
        pytest.fail(f"POST {route} ({content_type!r}): no complete answer: {exc!r}")


KNOWN_BAD_REQUESTS = {
    # Each of these once got a 5xx, a dropped connection or a non-object 4xx body.
    "multipart without boundary to model_info": (
        "/model_info",
        "multipart/form-data",
        b"{}",
        {200, 400, 415},
    ),
    "BentoML's internal pickle media type": (
        "/predict",
        "application/vnd.bentoml+pickle",
        b"{}",
        {415},
    ),
    "non-UTF-8 byte in Content-Type": (
        "/predict",
        b"multipart/form-data; boundary=\x80",
        b"{}",
        {415},
    ),
    "JSON integer beyond float range": (
        "/predict",
        "application/json",
        b'{"images": [[1' + b"0" * 400 + b"]]}",
        {422},
    ),
}


@pytest.mark.parametrize("case", KNOWN_BAD_REQUESTS)
def test_known_bad_requests_get_a_clear_answer(client, case):
    route, content_type, body, allowed = KNOWN_BAD_REQUESTS[case]
    assert_handled(post_raw(client, route, content_type, body), allowed)


@FUZZ
@given(route=st.sampled_from(POST_ROUTES), content_type=content_types, body=bodies)
def test_any_content_type_and_body_on_every_route_gets_a_clear_answer(
    client, route, content_type, body
):
    assert_handled(post_raw(client, route, content_type, body))


@FUZZ
@given(
    route=st.sampled_from(IMAGE_ROUTES),
    count=st.integers(1, 3),
    cut=st.floats(0, 1),
)
@example(route=IMAGE_ROUTES[2], count=2, cut=0.8)  # mid-way through the second file
def test_truncated_multipart_bodies_get_400_not_fewer_answers(client, route, count, cut):
    path, field = route
    count = count if field == "images" else 1
    body = multipart_body([(field, f"{i}.png", SAMPLE_IMAGES[0]) for i in range(count)], "b0undary")
    truncated = body[: int(cut * len(body))]
    response = client.post(
        path,
        content=truncated,
        headers={"content-type": "multipart/form-data; boundary=b0undary"},
    )
    if len(truncated) >= len(body) - 2:  # the closing boundary is complete, only CRLF is cut
        assert_handled(response, {200})
    else:
        assert_handled(response, {400})


@FUZZ
@given(
    images=st.integers(0, 3),
    extra=st.sampled_from([0, 0, 0, -1, 1, 783, -783]),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_bulk_bodies(client, images, extra, seed):
    size = max(0, images * 784 + extra)
    body = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    response = client.post(
        "/predict_bulk", content=body, headers={"content-type": "application/octet-stream"}
    )
    if size and size % 784 == 0:
        assert_handled(response, {200})
        assert response.json()["count"] == size // 784
    else:
        assert_handled(response, {422})
