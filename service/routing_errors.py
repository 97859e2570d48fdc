"""JSON bodies for unknown routes and methods, like every other client error of this service.

Starlette's router (under BentoML) answers them with plain text, `Not Found` and
`Method Not Allowed`; clients that parse `{"error": ...}` from every 4xx would choke on those.
"""

from __future__ import annotations

import json

from service.request_body import log_client_error, printable

STARLETTE_TEXTS = {404: "Not Found", 405: "Method Not Allowed"}


def routing_error_message(status: int, text: str, method: str, path: str, allow: str) -> str:
    """Starlette's bare status phrase becomes a hint; any other text is kept as it was."""
    if text != STARLETTE_TEXTS.get(status):
        return text
    path = printable(path)
    if status == 404:
        return f"no route {path}; the API is described at /docs.json"
    return f"{method} is not allowed on {path}; use {allow or 'another method'}"


class JsonRoutingErrorsMiddleware:
    """ASGI middleware: rewrite plain-text 4xx responses (404, 405, a bad Range's 416...) as
    `{"error": "..."}` JSON."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: dict | None = None  # the plain-text response start, until its body is complete
        chunks: list[bytes] = []

        async def send_json_errors(message: dict) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if content_type.startswith(b"text/plain"):
                    held = message
                    return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                text = b"".join(chunks).decode("utf-8", "replace")
                await send_json(send, held, text, scope)

        await self.app(scope, receive, send_json_errors)


async def send_json(send, start: dict, text: str, scope: dict) -> None:
    status = start["status"]
    headers = [
        (name, value)
        for name, value in start.get("headers", [])
        if name.lower() not in (b"content-type", b"content-length")
    ]
    allow = dict(headers).get(b"allow", b"").decode("latin-1")
    message = routing_error_message(status, text, scope["method"], scope["path"], allow)
    log_client_error(scope["method"], scope["path"], status, message)
    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
