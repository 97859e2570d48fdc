"""The API-key middleware in process, with hand-built ASGI scopes: paths a real HTTP client
would normalise before sending, `root_path`, duplicate headers, websockets and the log line."""

import asyncio
import logging

import pytest

from service.auth import ApiKeyMiddleware

KEY = "k3y"


def call(path: str, headers=(), scope_type: str = "http", root_path: str = ""):
    """Run one request through the middleware; returns (reached the app?, messages sent)."""
    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append(scope["path"])

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    scope = {"type": scope_type, "path": path, "root_path": root_path, "headers": list(headers)}
    if scope_type == "http":
        scope["method"] = "POST"
    asyncio.run(ApiKeyMiddleware(app, api_key=KEY)(scope, receive, send))
    return bool(reached), sent


GOOD = (b"authorization", f"Bearer {KEY}".encode())


@pytest.mark.parametrize(
    "path",
    [
        "/model_info",
        "/ui/../model_info",
        "/ui/./model_info",
        "/ui//model_info",
        "/ui/..",
        "/static_content/../model_info",
        "/ui\\..\\model_info",
        "/uix",
        "/livez/",
        "",
    ],
)
def test_paths_that_only_look_open_need_the_key(path):
    reached, sent = call(path)
    assert not reached
    assert sent[0]["status"] == 401
    assert call(path, [GOOD])[0]


@pytest.mark.parametrize(
    "path", ["/", "/livez", "/readyz", "/metrics", "/docs.json", "/ui", "/ui/app.js"]
)
def test_open_paths_need_no_key(path):
    assert call(path)[0]


def test_the_key_is_checked_on_the_path_the_router_sees():
    # Starlette routes on the path without root_path: "/ui" + "/model_info" is /model_info.
    assert not call("/ui/model_info", root_path="/ui")[0]
    assert call("/mnist/livez", root_path="/mnist")[0]


@pytest.mark.parametrize(
    "headers",
    [
        [GOOD, (b"authorization", b"Bearer wrong")],
        [(b"authorization", b"Bearer wrong"), GOOD],
        [GOOD, GOOD],
        [],
        [(b"authorization", b"Bearer")],
    ],
)
def test_anything_but_exactly_one_right_authorization_header_is_refused(headers):
    reached, sent = call("/predict", headers)
    assert not reached and sent[0]["status"] == 401


def test_websockets_need_the_key_too():
    reached, sent = call("/predict", scope_type="websocket")
    assert not reached and sent == [{"type": "websocket.close", "code": 1008}]
    assert call("/predict", [GOOD], scope_type="websocket")[0]


def test_an_empty_key_is_refused_at_start():
    with pytest.raises(ValueError, match="must not be empty"):
        ApiKeyMiddleware(lambda *a: None, api_key="")


def test_the_log_line_escapes_what_the_client_put_in_the_path(caplog):
    with caplog.at_level(logging.WARNING, logger="service.requests"):
        call("/x\nFAKE LOG LINE" + "y" * 500)
    (record,) = caplog.records
    assert "\n" not in record.getMessage()
    assert "/x\\nFAKE LOG LINE" in record.getMessage()
    assert len(record.getMessage()) < 300
