"""Optional API-key check for the prediction and model-information endpoints."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Collection

logger = logging.getLogger("service.requests")


class ApiKeyMiddleware:
    """ASGI middleware: `Authorization: Bearer <key>` required on `protected` paths.

    Health, readiness, metrics, docs and the web page stay open. Comparison is constant-time.
    """

    def __init__(self, app, api_key: str, protected: Collection[str]) -> None:
        self.app = app
        self.expected = api_key.encode()
        self.protected = frozenset(protected)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] in self.protected:
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
