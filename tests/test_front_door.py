"""The front door in process: metrics with bounded labels, the access log, the BentoML fallback.

The service's ASGI app runs under Starlette's TestClient (which runs its lifespan, so the model
is loaded exactly as in a worker); no server process is started.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tests.support.multipart import content_type, multipart_body


@pytest.fixture(scope="module")
def service_module(trained_checkpoint):
    """`service.service`, imported with the session's model as MODEL_PATH."""
    os.environ["MODEL_PATH"] = str(trained_checkpoint)
    import service.service as module

    return module


def app_with(service_module, **options):
    """The service's app with front-door options other than this process's settings."""
    from service.front_door import front_door

    bentoml_app = (
        type(service_module.MNISTClassifier).__mro__[1].to_asgi(service_module.MNISTClassifier)
    )
    settings = {"api_key": None, "access_log": False, "lean": True, **options}
    return front_door(
        bentoml_app,
        lambda: service_module.ACTIVE.get("endpoints"),
        service_module.API_PATHS,
        **settings,
    )


@pytest.fixture
def client(service_module) -> Iterator[TestClient]:
    with TestClient(service_module.MNISTClassifier.to_asgi()) as test_client:
        yield test_client


def image_upload(png: bytes) -> dict:
    return {
        "content": multipart_body([("image", "d.png", png)], "b0undary"),
        "headers": {"content-type": content_type("b0undary")},
    }


def requests_series(metrics_text: str) -> list[str]:
    return re.findall(r"^mnist_http_requests_total\{([^}]*)\}", metrics_text, re.M)


def test_unknown_paths_share_one_metrics_label(client):
    before = client.get("/metrics").text
    for i in range(40):
        assert client.get(f"/no-such-route-{i}-" + "x" * 2000).status_code == 404
    after = client.get("/metrics").text
    assert not any("no-such-route" in series for series in requests_series(after))
    assert any('route="other"' in series for series in requests_series(after))
    # Forty new paths added at most the one `other` series (and its histogram), not forty.
    assert len(after) - len(before) < 4000


def test_prediction_routes_are_counted_by_route_and_status(client, mnist_test_pngs):
    png, digit = mnist_test_pngs[0]
    assert client.post("/predict_image", **image_upload(png)).json()["digit"] == digit
    assert client.post("/predict_image", **image_upload(b"not an image")).status_code == 400
    series = requests_series(client.get("/metrics").text)
    assert 'method="POST",route="/predict_image",status="200"' in series
    assert 'method="POST",route="/predict_image",status="400"' in series


def test_model_info_answers_get_and_post(client):
    assert client.get("/model_info").json() == client.post("/model_info").json()
    assert client.put("/model_info").status_code == 405


def test_access_log_is_off_by_default(client, caplog):
    with caplog.at_level(logging.INFO, logger="service.access"):
        client.get("/livez")
    assert not [r for r in caplog.records if r.name == "service.access"]


def test_access_log_escapes_and_caps_client_text(service_module, caplog):
    with (
        TestClient(app_with(service_module, access_log=True)) as client,
        caplog.at_level(logging.INFO, logger="service.access"),
    ):
        client.get("/x%0aFORGED%20line%00")
        client.get("/" + "y" * 60_000)
        client.get("/livez")
    lines = [r.getMessage() for r in caplog.records if r.name == "service.access"]
    assert len(lines) == 3
    assert all("\n" not in line and "\x00" not in line for line in lines)
    assert lines[0].startswith("GET /x\\nFORGED line\\x00 404")
    assert len(lines[1]) < 300
    assert lines[2].startswith("GET /livez 200")


def test_bentoml_stack_answers_the_same_when_the_lean_path_is_off(service_module, mnist_test_pngs):
    png, digit = mnist_test_pngs[1]
    with TestClient(app_with(service_module, lean=False)) as client:
        answer = client.post("/predict_image", **image_upload(png))
        assert answer.status_code == 200
        assert answer.json()["digit"] == digit
        bad = client.post("/predict_image", **image_upload(b"\x89PNG broken"))
        assert bad.status_code == 400
        assert "error" in bad.json()
        assert "mnist_http_requests_total" in client.get("/metrics").text


def test_api_key_is_checked_before_routing(service_module):
    with TestClient(app_with(service_module, api_key="s3cret")) as client:
        assert client.get("/no-such-route").status_code == 401
        assert client.post("/predict_image").status_code == 401
        assert client.get("/v2/health/ready").status_code == 200
        auth = {"authorization": "Bearer s3cret"}
        assert client.get("/no-such-route", headers=auth).status_code == 404
        assert client.get("/v2/models/mnist", headers=auth).status_code == 200


def test_tracing_gives_each_request_a_span(service_module):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with TestClient(app_with(service_module, tracing=True, tracer_provider=provider)) as client:
        assert client.get("/model_info").status_code == 200
    assert any(span.name.startswith("GET") for span in exporter.get_finished_spans())


def test_served_pages_reference_no_external_host(client):
    for path in ("/", "/ui/"):
        page = client.get(path)
        assert page.status_code == 200
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", page.text), path
        assert "googletagmanager" not in page.text
    assert "swagger-ui" in client.get("/").text
