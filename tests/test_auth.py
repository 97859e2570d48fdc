"""With API_KEY set, every route needs `Authorization: Bearer <key>` except health, metrics,
docs and the web page: deny by default, so a route added later is protected too."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.serving import Server, running_server, server_env

API_KEY = "some-secret"


@pytest.fixture(scope="module")
def keyed_server(trained_checkpoint, tmp_path_factory) -> Iterator[Server]:
    # Its own BENTOML_HOME: every `bentoml serve` empties the home's Prometheus directory at
    # start, which would silently stop the session server's /metrics from updating.
    home = tmp_path_factory.mktemp("auth")
    env = server_env(home, MODEL_PATH=str(trained_checkpoint), API_KEY=API_KEY)
    with running_server(env, home / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def good_requests(mnist_test_pngs) -> dict[str, dict]:
    """A request each protected route answers with 200 when the key is right."""
    png = mnist_test_pngs[0][0]
    return {
        "/predict_image": {"files": {"image": ("d.png", png)}},
        "/preprocess_image": {"files": {"image": ("d.png", png)}},
        "/predict_images": {"files": [("images", ("a.png", png)), ("images", ("b.png", png))]},
        "/predict": {"json": {"images": [[0.0] * 392 + [1.0] * 392]}},
        "/predict_bulk": {
            "content": bytes(784),
            "headers": {"content-type": "application/octet-stream"},
        },
        "/model_info": {},
    }


PROTECTED = (
    "/predict_image",
    "/preprocess_image",
    "/predict_images",
    "/predict",
    "/predict_bulk",
    "/model_info",
)
WRONG_AUTHORIZATION = {
    "missing": None,
    "wrong key": f"Bearer {API_KEY}x",
    "key prefix": f"Bearer {API_KEY[:-1]}",
    "no scheme": API_KEY,
    "other scheme": f"Basic {API_KEY}",
    "empty bearer": "Bearer",
}


def post(server: Server, route: str, request: dict, authorization: str | None) -> httpx.Response:
    headers = dict(request.get("headers", {}))
    if authorization is not None:
        headers["authorization"] = authorization
    return httpx.post(f"{server.url}{route}", timeout=30, **{**request, "headers": headers})


@pytest.mark.parametrize("route", PROTECTED)
@pytest.mark.parametrize("case", WRONG_AUTHORIZATION)
def test_protected_routes_refuse_a_missing_or_wrong_key(keyed_server, good_requests, route, case):
    response = post(keyed_server, route, good_requests[route], WRONG_AUTHORIZATION[case])
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert isinstance(response.json()["error"], str)


@pytest.mark.parametrize("route", PROTECTED)
@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_protected_routes_answer_with_the_key(keyed_server, good_requests, route, scheme):
    response = post(keyed_server, route, good_requests[route], f"{scheme} {API_KEY}")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "path",
    [
        "/livez",
        "/healthz",
        "/readyz",
        "/metrics",
        "/docs.json",
        "/schema.json",
        "/",
        "/static_content/swagger-ui.css",
        "/ui/",
        "/ui/app.js",
    ],
)
def test_health_metrics_docs_and_page_stay_open(keyed_server, path):
    assert httpx.get(f"{keyed_server.url}{path}", timeout=10).status_code == 200


@pytest.mark.parametrize("path", ["/model_info/", "/model%5Finfo", "//model_info", "/MODEL_INFO"])
def test_path_spellings_do_not_bypass_the_key(keyed_server, path):
    response = httpx.post(f"{keyed_server.url}{path}", timeout=10, follow_redirects=True)
    assert response.status_code == 401, response.text


def test_routes_nobody_listed_need_the_key_too(keyed_server):
    """Deny by default: an unknown route is 401 without the key and a JSON 404 with it."""
    url = f"{keyed_server.url}/not_a_route_yet"
    assert httpx.post(url, timeout=10).status_code == 401
    with_key = httpx.post(url, timeout=10, headers={"authorization": f"Bearer {API_KEY}"})
    assert with_key.status_code == 404
    assert "no route" in with_key.json()["error"]


def test_without_api_key_no_header_is_needed(server, good_requests):
    assert post(server, "/model_info", good_requests["/model_info"], None).status_code == 200
