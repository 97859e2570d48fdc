"""Reading request bodies with limits, and the clear 4xx answers for everything a client gets wrong.

Kept apart from the model: these functions know HTTP (Starlette requests), nothing of torch.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
import numpy as np
import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from service.multipart import MultipartError, parse_multipart

logger = logging.getLogger("service.requests")


def printable(text: str, limit: int = 200) -> str:
    """Client-controlled text made safe for one log line: capped, control characters escaped."""
    text = text if len(text) <= limit else text[:limit] + "..."
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def log_client_error(method: str, path: str, status: int, message: str) -> None:
    """Every client error of the service is this one line, never a traceback."""
    logger.warning("%s %s -> %d: %s", method, printable(path), status, printable(message, 500))


class ClientError(Exception):
    """A request the client must fix: answered with `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def answer(self, method: str, path: str) -> Response:
        """The JSON answer, logged as one line."""
        log_client_error(method, path, self.status, self.message)
        response = json_response({"error": self.message}, self.status)
        response.headers.update(self.headers)
        return response

    def response(self, ctx: Any) -> Response:
        """The answer through a BentoML context (which owns the status code)."""
        ctx.response.status_code = self.status
        return self.answer(ctx.request.method, ctx.request.url.path)


def json_response(payload: object, status: int = 200) -> Response:
    """Compact JSON (orjson: ~15x json.dumps for a 256-prediction answer), without BentoML's
    per-response pydantic schema work (a hot-path cost)."""
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_media_type(request: Request, *expected: str) -> None:
    if media_type(request) not in expected:
        got = media_type(request) or "none"
        raise ClientError(415, f"expected Content-Type {' or '.join(expected)}, got {got}")


BODY_BUDGET_KEY = "mnist.body_budget"  # the worker's body-bytes budget, set by the front door
BODY_TIMEOUT_KEY = "mnist.body_timeout"  # seconds a body may take (408 after), set likewise


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it exceeds `limit` bytes.

    The bytes count against the worker's body budget (if the scope carries one) until the
    request ends; a full budget is a 503. A body slower than the scope's timeout is a 408.
    """
    from service.budget import hold

    budget = request.scope.get(BODY_BUDGET_KEY)
    if budget is not None:  # a body the budget could never hold is a 413, not a 503 forever
        limit = min(limit, budget.capacity)
    timeout = request.scope.get(BODY_TIMEOUT_KEY, 30.0)
    declared = request.headers.get("content-length")
    held = 0
    if declared is not None:
        if not declared.isdigit():
            raise ClientError(400, "invalid Content-Length header")
        if int(declared) > limit:
            raise ClientError(413, f"request body is {declared} bytes; the limit is {limit}")
        if budget is not None:
            held = int(declared)
            hold(request.scope, budget, held)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ClientError(413, f"request body exceeds the limit of {limit} bytes")
                if budget is not None and size > held:
                    hold(request.scope, budget, size - held)
                    held = size
                chunks.append(chunk)
    except ClientDisconnect:  # nobody reads the answer; 499 keeps it out of the 5xx metrics
        raise ClientError(499, "client disconnected before sending the whole body") from None
    except TimeoutError:
        raise ClientError(408, f"the request body was not complete within {timeout:g} s") from None
    if size <= JOIN_INLINE_BYTES:
        return b"".join(chunks)
    # Joining 78 MB took the event loop ~50 ms (more under load); join releases the GIL.
    return await anyio.to_thread.run_sync(b"".join, chunks)


JOIN_INLINE_BYTES = 1 << 20  # bodies larger than this are joined in a thread


async def read_files(request: Request, field: str, limit: int, max_files: int) -> list[bytes]:
    """Contents of the multipart file fields named `field`, in order."""
    require_media_type(request, "multipart/form-data")
    body = await read_body(request, limit)
    try:
        parts = parse_multipart(body, request.headers["content-type"], max_parts=max_files + 8)
    except MultipartError as exc:
        raise ClientError(400, str(exc)) from None
    named = [part for part in parts if part.name == field]
    if not named:
        raise ClientError(400, f"missing multipart file field '{field}'")
    if any(part.filename is None for part in named):
        raise ClientError(400, f"multipart field '{field}' must be a file, not text")
    if len(named) > max_files:
        if max_files == 1:
            raise ClientError(400, f"send exactly one file in field '{field}', not {len(named)}")
        raise ClientError(413, f"{len(named)} files in one request; the limit is {max_files}")
    return [part.content for part in named]


def parse_bulk(body: bytes, max_images: int) -> np.ndarray:
    """N x 784 uint8 bytes -> (N, 784) float32 in [0, 1]."""
    return bulk_to_float(bulk_pixels(body, max_images))


def bulk_to_float(pixels: np.ndarray) -> np.ndarray:
    """(N, 784) uint8 -> float32 in [0, 1], exactly as `parse_bulk` converts them."""
    images = pixels.astype(np.float32)
    images /= 255
    return images


def bulk_pixels(body: bytes, max_images: int) -> np.ndarray:
    """N x 784 uint8 bytes -> a read-only (N, 784) uint8 view of them, checked."""
    if not body:
        raise ClientError(422, "empty body; send N x 784 uint8 pixel bytes")
    if len(body) % 784:
        raise ClientError(
            422, f"body length {len(body)} is not a multiple of 784 (28x28 uint8 pixels)"
        )
    count = len(body) // 784
    if count > max_images:
        raise ClientError(413, f"{count} images in one request; the limit is {max_images}")
    return np.frombuffer(body, dtype=np.uint8).reshape(count, 784)


class RejectPickleMiddleware:
    """ASGI middleware: refuse BentoML's internal pickle media type with a JSON 415 object.

    BentoML refuses it too, but answers with a JSON list, `[{"error": ...}]`.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            content_type = dict(scope["headers"]).get(b"content-type", b"")
            if content_type.split(b";")[0].strip().lower() == b"application/vnd.bentoml+pickle":
                body = b'{"error":"Content-Type application/vnd.bentoml+pickle is not accepted"}'
                headers = [(b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": 415, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
