"""Optional API-key check: every path needs the key except health, metrics, docs and the page.

Deny by default, so an endpoint added later is protected without anyone remembering to list it.
"""

from __future__ import annotations

import hmac
import json
import logging

logger = logging.getLogger("service.requests")

# BentoML's health, readiness and metrics routes, its Swagger page with its spec and assets,
# and this service's web page (which asks for the key itself before it calls the API).
OPEN_PATHS = frozenset(
    {"/", "/livez", "/healthz", "/readyz", "/metrics", "/docs.json", "/schema.json", "/ui"}
)
OPEN_PREFIXES = ("/static_content/", "/assets/", "/ui/")


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class ApiKeyMiddleware:
    """ASGI middleware: `Authorization: Bearer <key>` required on every path but the open ones.

    Comparison is constant-time.
    """

    def __init__(self, app, api_key: str) -> None:
        self.app = app
        self.expected = api_key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not is_open(scope["path"]):
            scheme, _, token = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
            # Scheme case-insensitive (RFC 9110 11.1); token compared in constant time.
            valid = hmac.compare_digest(token.strip(), self.expected)
            if scheme.lower() != b"bearer" or not valid:
                logger.warning(
                    "%s %s -> 401: missing or wrong API key", scope["method"], scope["path"]
                )
                body = json.dumps(
                    {"error": "missing or invalid API key (Authorization: Bearer <key>)"}
                )
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
                return
        await self.app(scope, receive, send)
