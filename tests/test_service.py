"""The real server over HTTP: correct predictions, batching, and a clear 4xx for bad input."""

from __future__ import annotations

import asyncio
import io
import re

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from tests.serving import serve_until_exit, server_env


def post_image(server, data: bytes, field: str = "image", route: str = "/predict_image"):
    return httpx.post(f"{server.url}{route}", files={field: ("digit.png", data)}, timeout=30)


def assert_prediction(body: dict) -> None:
    assert set(body) == {"digit", "confidence", "probabilities", "uncertain"}
    assert body["uncertain"] is None  # the session's model is the seed recipe: no calibration
    assert len(body["probabilities"]) == 10
    assert abs(sum(body["probabilities"]) - 1) < 1e-4
    assert body["digit"] == int(np.argmax(body["probabilities"]))
    assert body["confidence"] == max(body["probabilities"])


def test_mnist_pngs_get_exactly_the_offline_predictions(server, mnist_test_pngs):
    for png, offline_digit in mnist_test_pngs:
        response = post_image(server, png)
        assert response.status_code == 200, response.text
        assert_prediction(response.json())
        assert response.json()["digit"] == offline_digit


def test_predict_images_answers_in_input_order(server, mnist_test_pngs):
    batch = mnist_test_pngs[:20]
    files = [("images", (f"{i}.png", png)) for i, (png, _) in enumerate(batch)]
    response = httpx.post(f"{server.url}/predict_images", files=files, timeout=30)
    assert response.status_code == 200, response.text
    assert [p["digit"] for p in response.json()] == [digit for _, digit in batch]


def test_predict_json_batch_reaches_the_offline_accuracy(server, mnist_test, offline_model):
    images, labels = mnist_test[0][:1000], mnist_test[1][:1000]
    with torch.inference_mode():
        offline = offline_model(images).argmax(dim=1)
    nested = images.reshape(-1, 28, 28).tolist()
    response = httpx.post(f"{server.url}/predict", json={"images": nested}, timeout=60)
    assert response.status_code == 200, response.text
    served = torch.tensor([p["digit"] for p in response.json()])
    assert torch.equal(served, offline)
    assert (served == labels).float().mean() > 0.9


def test_predict_accepts_flat_784_lists(server, mnist_test, offline_model):
    images = mnist_test[0][:5]
    response = httpx.post(f"{server.url}/predict", json={"images": images.tolist()}, timeout=30)
    assert response.status_code == 200
    with torch.inference_mode():
        assert [p["digit"] for p in response.json()] == offline_model(images).argmax(1).tolist()


def test_bulk_binary_matches_offline_predictions(server, mnist_test, offline_model):
    images = mnist_test[0][:10_000]
    raw = (images * 255).round().to(torch.uint8).numpy().tobytes()
    response = httpx.post(
        f"{server.url}/predict_bulk",
        content=raw,
        headers={"content-type": "application/octet-stream"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    with torch.inference_mode():
        offline = offline_model(images).argmax(1).tolist()
    assert body["count"] == 10_000
    assert body["digits"] == offline
    assert all(0 < c <= 1 for c in body["confidences"])


def batch_histogram(server) -> dict[float, float]:
    """Cumulative forward-pass counts per batch-size bucket, from /metrics."""
    metrics = httpx.get(f"{server.url}/metrics").text
    pattern = r'mnist_adaptive_batch_size_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)'
    return {float(le): float(count) for le, count in re.findall(pattern, metrics)}


def test_concurrent_single_images_are_batched(server, mnist_test_pngs):
    before = batch_histogram(server)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            calls = [
                client.post("/predict_image", files={"image": ("d.png", png)})
                for png, _ in mnist_test_pngs[:64]
            ]
            return await asyncio.gather(*calls)

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 64
    assert [r.json()["digit"] for r in responses] == [d for _, d in mnist_test_pngs[:64]]
    after = batch_histogram(server)
    assert after, "adaptive batch-size histogram missing from /metrics"
    passes = after[float("inf")] - before.get(float("inf"), 0)
    single = after[1.0] - before.get(1.0, 0)
    assert passes < 64, "64 concurrent requests took 64 forward passes: no batching happened"
    assert passes > single, "every forward pass of this burst had a single image"


def test_concurrent_one_image_requests_of_other_routes_share_forward_passes(
    server, mnist_test, offline_model
):
    """One-image Open Inference infers and /predict batches go through the same batcher as
    /predict_image: each ran its own forward pass, and a one-image infer at c=32 reached 0.6x
    /predict_image's rate."""
    images = mnist_test[0][:64].reshape(64, 784)
    with torch.inference_mode():
        offline = offline_model(images).argmax(1).tolist()
    before = batch_histogram(server)

    def infer(image: torch.Tensor) -> dict:
        return {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 784],
                            "data": image.tolist()}]}  # fmt: skip

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            calls = [client.post("/v2/models/mnist/infer", json=infer(i)) for i in images[:32]]
            calls += [client.post("/predict", json={"images": [i.tolist()]}) for i in images[32:]]
            return await asyncio.gather(*calls)

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 64, responses[0].text
    outputs = [{o["name"]: o["data"] for o in r.json()["outputs"]} for r in responses[:32]]
    digits = [output["digit"][0] for output in outputs]
    digits += [r.json()[0]["digit"] for r in responses[32:]]
    assert digits == offline
    after = batch_histogram(server)
    passes = after[float("inf")] - before.get(float("inf"), 0)
    assert passes < 64, "64 concurrent one-image requests took 64 forward passes"
    assert passes > after[1.0] - before.get(1.0, 0), "no forward pass had more than one image"


def test_preprocess_image_returns_what_the_model_sees(server, mnist_test_pngs, mnist_test):
    response = post_image(server, mnist_test_pngs[0][0], route="/preprocess_image")
    assert response.status_code == 200
    seen = np.array(response.json()["image"])
    assert seen.shape == (28, 28)
    np.testing.assert_allclose(seen, mnist_test[0][0].reshape(28, 28).numpy(), atol=1e-4)


def test_model_info_describes_the_served_checkpoint(server, trained_checkpoint):
    from training import read_metadata

    meta = read_metadata(trained_checkpoint)
    info = httpx.post(f"{server.url}/model_info", timeout=10).json()
    assert info["sha256"] == meta["sha256"]
    assert info["weights_sha256"] == meta["weights_sha256"]
    assert info["architecture"] == {"xdim": 784, "hdim": 256, "ydim": 10}
    assert info["test_accuracy"] == pytest.approx(meta["metrics"]["test_accuracy"])
    assert info["config"]["epochs"] == 3
    assert info["source"] == "file" and info["tag"] is None
    assert info["version"] == meta["sha256"][:16]  # as the Open Inference routes name it
    assert info["created_at"] == meta["created_at"]


def test_builtin_endpoints_and_openapi_examples(server):
    assert httpx.get(f"{server.url}/livez").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert httpx.get(f"{server.url}/").status_code == 200
    spec = httpx.get(f"{server.url}/docs.json").json()
    for route in ("/predict_image", "/predict_images", "/predict", "/predict_bulk", "/model_info"):
        assert route in spec["paths"], route
    request = spec["paths"]["/predict_image"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in request
    schemas = spec["components"]["schemas"]
    assert "example" in schemas["Prediction"]
    assert schemas["Prediction"]["properties"]["digit"]["description"]


def image_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def multipart(body_text: str, boundary: str = "XyZ") -> tuple[bytes, dict]:
    return body_text.encode(), {"content-type": f"multipart/form-data; boundary={boundary}"}


BAD_REQUESTS = {
    "undecodable bytes": (
        "/predict_image",
        {"files": {"image": ("x.png", b"this is not an image")}},
        400,
    ),
    "empty file": ("/predict_image", {"files": {"image": ("x.png", b"")}}, 400),
    "blank image": (
        "/predict_image",
        {"files": {"image": ("x.png", image_bytes(Image.new("L", (64, 64), 255)))}},
        422,
    ),
    "missing field": ("/predict_image", {"files": {"picture": ("x.png", b"abc")}}, 400),
    "text instead of file": (
        "/predict_image",
        {"data": {"image": "http://127.0.0.1/x.png"}, "files": {"other": ("o", b"o")}},
        400,
    ),
    "wrong content type": ("/predict_image", {"json": {"image": "abc"}}, 415),
    "oversized upload": (
        "/predict_image",
        {"files": {"image": ("x.png", b"\0" * (11 * 1024 * 1024))}},
        413,
    ),
    "truncated multipart": (
        "/predict_image",
        dict(
            zip(
                ("content", "headers"),
                multipart("--XyZ\r\nContent-Disposition: form-data; name="),
                strict=True,
            )
        ),
        400,
    ),
    "decompression bomb": (
        "/predict_image",
        {"files": {"image": ("x.png", image_bytes(Image.new("1", (20_000, 20_000))))}},
        400,
    ),
    "json not json": (
        "/predict",
        {"content": b"{nope", "headers": {"content-type": "application/json"}},
        400,
    ),
    "json wrong shape": ("/predict", {"json": {"images": [[0.5] * 783]}}, 422),
    "json ragged": ("/predict", {"json": {"images": [[[0.5] * 28] * 27 + [[0.5]]]}}, 422),
    "json NaN": (
        "/predict",
        {
            "content": b'{"images": [[NaN' + b", 0" * 783 + b"]]}",
            "headers": {"content-type": "application/json"},
        },
        400,
    ),
    "json out of range": ("/predict", {"json": {"images": [[2.0] * 784]}}, 422),
    "json strings": ("/predict", {"json": {"images": [["a"] * 784]}}, 422),
    "json numeric strings": ("/predict", {"json": {"images": [["0.5"] * 784]}}, 422),
    "json booleans": ("/predict", {"json": {"images": [[True] * 784]}}, 422),
    "json nulls": ("/predict", {"json": {"images": [[None] * 784]}}, 422),
    "json huge integer": ("/predict", {"json": {"images": [[10**400] + [0] * 783]}}, 422),
    "two files for one image": (
        "/predict_image",
        {"files": [("image", ("a.png", b"x")), ("image", ("b.png", b"y"))]},
        400,
    ),
    "json empty batch": ("/predict", {"json": {"images": []}}, 422),
    "json too large batch": ("/predict", {"json": {"images": [[0.0] * 784] * 4097}}, 413),
    "json missing field": ("/predict", {"json": {"pictures": []}}, 422),
    "json is a list": ("/predict", {"json": [[0.0] * 784]}, 422),
    "bulk wrong length": (
        "/predict_bulk",
        {"content": b"\0" * 785, "headers": {"content-type": "application/octet-stream"}},
        422,
    ),
    "bulk empty": (
        "/predict_bulk",
        {"content": b"", "headers": {"content-type": "application/octet-stream"}},
        422,
    ),
    "bulk wrong content type": ("/predict_bulk", {"content": b"\0" * 784}, 415),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(server, case, mnist_test_pngs):
    route, kwargs, status = BAD_REQUESTS[case]
    response = httpx.post(f"{server.url}{route}", timeout=60, **kwargs)
    assert response.status_code == status, response.text
    assert isinstance(response.json()["error"], str) and response.json()["error"]
    good = post_image(server, mnist_test_pngs[0][0])
    assert good.status_code == 200


def test_client_errors_are_logged_as_one_line_not_a_traceback(server):
    before = server.log().count("/predict_image")
    httpx.post(f"{server.url}/predict_image", files={"image": ("x.png", b"garbage!")}, timeout=10)
    log = server.log()
    assert "POST /predict_image -> 400" in log
    assert "Traceback" not in log
    assert log.count("/predict_image") == before + 1  # one line, as the README says


@pytest.mark.parametrize(
    "content",
    [None, b"not a checkpoint", "truncated", "tampered"],
    ids=["missing", "garbage", "truncated", "tampered"],
)
def test_a_bad_model_path_makes_the_server_exit_nonzero(content, trained_checkpoint, tmp_path):
    path = tmp_path / "model.pt"
    good = trained_checkpoint.read_bytes()
    if content == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif content == "tampered":
        payload = torch.load(trained_checkpoint, weights_only=True)
        payload["state_dict"]["output.bias"] += 1.0
        torch.save(payload, path)
    elif content is not None:
        path.write_bytes(content)
    # Its own BENTOML_HOME: every `bentoml serve` empties the home's Prometheus directory at
    # start, which would silence the session server's /metrics.
    env = server_env(tmp_path / "bentoml", MODEL_PATH=str(path))
    result = serve_until_exit(env)
    assert result.returncode != 0
    assert "error: cannot serve" in result.stderr + result.stdout


def test_the_readme_python_client_example_works(server, mnist_test_pngs, mnist_test, tmp_path):
    """The README shows BentoML's own client; its calls must keep working against this service."""
    import bentoml

    png, offline_digit = mnist_test_pngs[0]
    (tmp_path / "digit.png").write_bytes(png)
    nested = mnist_test[0][:2].reshape(-1, 28, 28).tolist()
    with bentoml.SyncHTTPClient(server.url) as client:
        assert client.predict_image(image=tmp_path / "digit.png")["digit"] == offline_digit
        offline = [digit for _, digit in mnist_test_pngs[:2]]
        assert [p["digit"] for p in client.predict(images=nested)] == offline
        assert 0.9 < client.model_info()["test_accuracy"] <= 1


@pytest.mark.parametrize(
    ("method", "route", "status", "message"),
    [
        ("GET", "/no-such-route", 404, "no route /no-such-route"),
        ("POST", "/predict_images/extra", 404, "no route /predict_images/extra"),
        ("GET", "/predict_image", 405, "GET is not allowed on /predict_image; use POST"),
        ("DELETE", "/predict", 405, "DELETE is not allowed on /predict; use POST"),
    ],
)
def test_unknown_routes_and_methods_get_json_errors(server, method, route, status, message):
    response = httpx.request(method, f"{server.url}{route}", timeout=10)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]
    if status == 405:
        assert response.headers["allow"] == "POST"
