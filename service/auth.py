"""Optional API-key check: every path needs the key except health, metrics, docs and the page.

Deny by default, so an endpoint added later is protected without anyone remembering to list it.
"""

from __future__ import annotations

import hmac
import json

from service.request_body import log_client_error

# BentoML's health, readiness and metrics routes, its Swagger page with its spec and assets,
# and this service's web page (which asks for the key itself before it calls the API).
OPEN_PATHS = frozenset(
    {"/", "/livez", "/healthz", "/readyz", "/metrics", "/docs.json", "/schema.json", "/ui"}
    | {"/v2/health/live", "/v2/health/ready"}  # the Open Inference Protocol's health routes
)
OPEN_PREFIXES = ("/static_content/", "/ui/")


def route_path(scope: dict) -> str:
    """The path the router matches: without `root_path`, as Starlette strips it."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


def is_open(path: str) -> bool:
    """Open paths; a `.`/`..` segment, `//` or a backslash makes any path not open."""
    if "//" in path or "\\" in path or any(s in (".", "..") for s in path.split("/")):
        return False
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class ApiKeyMiddleware:
    """ASGI middleware: `Authorization: Bearer <key>` required on every path but the open ones.

    Exactly one Authorization header; the token is compared in constant time.
    """

    def __init__(self, app, api_key: str) -> None:
        if not api_key:
            raise ValueError("the API key must not be empty: `Authorization: Bearer` would match")
        self.app = app
        self.expected = api_key.encode()

    def authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        values = [value for name, value in headers if name.lower() == b"authorization"]
        if len(values) != 1:  # none, or several that a proxy and this check might read apart
            return False
        scheme, _, token = values[0].partition(b" ")
        # Scheme case-insensitive (RFC 9110 11.1); token compared in constant time.
        valid = hmac.compare_digest(token.strip(), self.expected)
        return scheme.lower() == b"bearer" and valid

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket") or is_open(route_path(scope)):
            await self.app(scope, receive, send)
            return
        if self.authorized(scope["headers"]):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "WEBSOCKET")
        log_client_error(method, scope["path"], 401, "missing or wrong API key")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation
            return
        body = json.dumps({"error": "missing or invalid API key (Authorization: Bearer <key>)"})
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="mnist"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})
