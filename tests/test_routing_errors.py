"""The 404/405 rewriting middleware, in process: which responses it rewrites and which it keeps."""

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from service.routing_errors import JsonRoutingErrorsMiddleware


async def predict(request):
    return JSONResponse({"digit": 7})


async def json_not_found(request):
    return JSONResponse({"error": "task 12 not found"}, status_code=404)


async def own_not_found(request):
    raise HTTPException(404, detail="no model called mnist-mlp:nope")


async def chunked_not_found(request):
    async def parts():
        yield b"Not "
        yield b"Found"

    return StreamingResponse(parts(), status_code=404, media_type="text/plain")


@pytest.fixture
def client(tmp_path):
    (tmp_path / "app.js").write_text("console.log(1)")
    app = Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/task", json_not_found),
            Route("/model", own_not_found),
            Route("/chunked", chunked_not_found),
            Mount("/ui", StaticFiles(directory=tmp_path)),
        ]
    )
    transport = httpx.ASGITransport(app=JsonRoutingErrorsMiddleware(app))

    def request(method: str, path: str) -> httpx.Response:
        async def send() -> httpx.Response:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                return await http.request(method, path)

        return asyncio.run(send())

    return request


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/nope", 404, "no route /nope; the API is described at /docs.json"),
        ("GET", "/chunked", 404, "no route /chunked; the API is described at /docs.json"),
        (
            "GET",
            "/ui/missing.js",
            404,
            "no route /ui/missing.js; the API is described at /docs.json",
        ),
        ("GET", "/predict", 405, "GET is not allowed on /predict; use POST"),
        ("POST", "/ui/app.js", 405, "POST is not allowed on /ui/app.js; use GET, HEAD"),
        ("GET", "/model", 404, "no model called mnist-mlp:nope"),
    ],
)
def test_plain_text_404_and_405_become_json(client, method, path, status, error):
    response = client(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.json() == {"error": error}


def test_allow_header_is_kept(client):
    assert client("GET", "/predict").headers["allow"] == "POST"


def test_other_responses_pass_through_untouched(client):
    assert client("POST", "/predict").json() == {"digit": 7}
    assert client("GET", "/task").json() == {"error": "task 12 not found"}
    static = client("GET", "/ui/app.js")
    assert static.status_code == 200 and static.text == "console.log(1)"
