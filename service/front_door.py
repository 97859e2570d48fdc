"""The service's front door: every request meets it first, ahead of BentoML's middleware stack.

Why (measured, docs/benchmarks.md): BentoML's stack around every route — a timeout timer and
task per request that live for the whole traffic timeout, OpenTelemetry, its metrics and
access-log middlewares, the request context, the router — costs several times the prediction
itself, and the timers keep each request's objects alive long enough that garbage collection
stalls the event loop (p99 ~300 ms). So the API routes are answered here, with what they need
of that stack done cheaply: the API key, Prometheus metrics with bounded labels, an optional
escaped access log, JSON errors mapped in one place. BentoML's own routes (health, /metrics,
docs, the page) pass through to its stack unchanged; unknown paths never reach it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prometheus_client
from prometheus_client import multiprocess
from starlette.requests import Request
from starlette.responses import Response

from service.auth import ApiKeyMiddleware, route_path
from service.budget import release_all
from service.endpoints import Endpoints, Handler
from service.open_inference_routes import OpenInferenceRoutes
from service.request_body import (
    BODY_BUDGET_KEY,
    BODY_TIMEOUT_KEY,
    ClientError,
    json_response,
    printable,
)
from service.routing_errors import routing_error_message

logger = logging.getLogger("service")
access_logger = logging.getLogger("service.access")

# BentoML's own routes: health, readiness, metrics, Swagger page, spec, assets; and the web page.
BENTOML_PATHS = frozenset(
    {"/", "/livez", "/healthz", "/readyz", "/docs.json", "/schema.json", "/ui"}
)
METRICS_PATH = "/metrics"
OPENAPI_PATH = "/docs.json"
DOCS_PAGE = (Path(__file__).with_name("static") / "docs.html").read_bytes()  # Swagger UI
BENTOML_PREFIXES = {"/ui/": "/ui", "/static_content/": "/static_content"}
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"
ROUTE_KEY = "mnist.route"  # the router leaves the matched route's template here, for metrics

requests_total = prometheus_client.Counter(
    name="mnist_http_requests",
    documentation="HTTP requests by route (unknown paths: other), method and status.",
    labelnames=["route", "method", "status"],
)
request_seconds = prometheus_client.Histogram(
    name="mnist_http_request_duration_seconds",
    documentation="Time from the request's arrival at the front door to the end of its answer.",
    labelnames=["route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def route_label(path: str, api_paths: frozenset[str]) -> str:
    """The metrics label of a path: a real route, or `other` (so clients cannot add series)."""
    if path in api_paths or path in BENTOML_PATHS or path == METRICS_PATH:
        return path
    for prefix, label in BENTOML_PREFIXES.items():
        if path.startswith(prefix):
            return label
    return OTHER


def is_bentoml_path(path: str) -> bool:
    return path in BENTOML_PATHS or path.startswith(tuple(BENTOML_PREFIXES))


class Observed:
    """ASGI middleware: request count and latency per route and status, and the access log."""

    def __init__(self, app, api_paths: frozenset[str], access_log: bool) -> None:
        self.app = app
        self.api_paths = api_paths
        self.access_log = access_log
        self._children: dict[tuple[str, str, int], tuple] = {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app raises before answering

        async def send_observed(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self.observe(scope, status, time.perf_counter() - started)

    def observe(self, scope: dict, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in KNOWN_METHODS else OTHER
        route = scope.get(ROUTE_KEY) or route_label(route_path(scope), self.api_paths)
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            route, _, code = key
            children = self._children[key] = (
                requests_total.labels(route=route, method=method, status=str(code)),
                request_seconds.labels(route=route, status=str(code)),
            )
        children[0].inc()
        children[1].observe(seconds)
        if self.access_log:
            access_logger.info(
                "%s %s %d %.2fms",
                printable(scope["method"], 20),
                printable(scope["path"]),
                status,
                seconds * 1000,
            )


class ApiRouter:
    """ASGI app: the API routes answered directly; BentoML's routes passed to its stack."""

    def __init__(
        self,
        bentoml_app,
        endpoints: Callable[[], Endpoints | None],
        lean: bool,
        openapi: Callable[[], dict] | None = None,
    ) -> None:
        self.app = bentoml_app
        self.endpoints = endpoints
        self.lean = lean
        self.openapi = openapi
        self._openapi_body: bytes | None = None
        self._routes: dict[str, tuple[tuple[str, ...], Handler]] | None = None
        self._v2: OpenInferenceRoutes | None = None

    def loaded(self) -> bool:
        if self._routes is None and (endpoints := self.endpoints()) is not None:
            self._routes = endpoints.routes()
            self._v2 = OpenInferenceRoutes(endpoints)
            self.body_budget = endpoints.body_budget
            self.body_timeout = endpoints.settings.body_timeout_s
        return self._routes is not None

    def lookup(self, path: str) -> tuple[str, tuple[str, ...], Handler] | None:
        """(route template, methods, handler) of a path; the model must be loaded."""
        assert self._routes is not None and self._v2 is not None
        if (entry := self._routes.get(path)) is not None:
            return (path, *entry)
        if path == "/v2" or path.startswith("/v2/"):
            return self._v2.match(path)
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        if path == METRICS_PATH and scope["method"] in ("GET", "HEAD"):
            await metrics_page()(scope, receive, send)
            return
        if path == OPENAPI_PATH and self.openapi is not None and scope["method"] == "GET":
            if self._openapi_body is None:
                self._openapi_body = bytes(json_response(self.openapi()).body)
            await Response(self._openapi_body, media_type="application/json")(scope, receive, send)
            return
        if path == "/" and scope["method"] in ("GET", "HEAD"):
            await Response(DOCS_PAGE, media_type="text/html")(scope, receive, send)
            return
        if path == "/ui":  # relative, so a forged Host header is never echoed back
            response = Response(status_code=307, headers={"location": "/ui/"})
            await response(scope, receive, send)
            return
        if is_bentoml_path(path) or not self.lean:  # not lean: the API through BentoML's stack
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if not self.loaded():
            response = json_response({"error": "the model is still loading; retry shortly"}, 503)
            response.headers["retry-after"] = "1"
        elif (entry := self.lookup(path)) is None:
            message = routing_error_message(404, "Not Found", method, scope["path"], "")
            response = ClientError(404, message).answer(method, scope["path"])
        else:
            scope[ROUTE_KEY], methods, handler = entry
            if method not in methods:
                allow = ", ".join(methods)
                message = routing_error_message(405, "Method Not Allowed", method, path, allow)
                response = ClientError(405, message).answer(method, scope["path"])
                response.headers["allow"] = allow
            else:
                scope[BODY_BUDGET_KEY] = self.body_budget
                scope[BODY_TIMEOUT_KEY] = self.body_timeout
                try:
                    response = await answer(handler, Request(scope, receive), method, path)
                finally:
                    release_all(scope)
        await response(scope, receive, send)


def metrics_page() -> Response:
    """Every worker's series (prometheus_client's multiprocess files under `bentoml serve`).

    Served here rather than by BentoML's route, which is not there in process (tests) and runs
    behind its middleware stack; the text is the same Prometheus exposition format.
    """
    registry = prometheus_client.REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    body = prometheus_client.generate_latest(registry)
    return Response(body, media_type=prometheus_client.CONTENT_TYPE_LATEST)


async def answer(handler: Handler, request: Request, method: str, path: str) -> Response:
    """Run one endpoint; client errors become their JSON 4xx, anything else a logged 500."""
    try:
        return await handler(request)
    except ClientError as exc:
        return exc.answer(method, path)
    except Exception:
        logger.exception("%s %s failed", method, printable(path))
        return json_response({"error": "internal server error"}, 500)


def front_door(
    bentoml_app,
    endpoints: Callable[[], Endpoints | None],
    api_paths: frozenset[str],
    *,
    api_key: str | None,
    access_log: bool,
    lean: bool,
    tracing: bool = False,
    tracer_provider=None,
    openapi: Callable[[], dict] | None = None,
):
    """The whole front: metrics and access log, then the API key, then the routes.

    With `tracing`, every request gets an OpenTelemetry span from BentoML's tracer provider
    (exporter and sample rate from BentoML's `tracing` configuration); off by default, as it
    costs about half the throughput of the prediction routes.
    """
    app: Any = ApiRouter(bentoml_app, endpoints, lean, openapi)
    if api_key is not None:
        app = ApiKeyMiddleware(app, api_key=api_key)
    app = Observed(app, api_paths, access_log)
    if tracing:
        from bentoml._internal.configuration.containers import BentoMLContainer  # no public API
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        provider = tracer_provider or BentoMLContainer.tracer_provider.get()
        app = OpenTelemetryMiddleware(app, tracer_provider=provider)
    return app
