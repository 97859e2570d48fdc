"""The BentoML service: load the checkpoint once, answer digit predictions over HTTP.

Start it with `bentoml serve` in the repository root (see `[tool.bentoml.build]`).
The API routes are answered by `service.front_door` ahead of BentoML's middleware stack (the
measured reason is there); the `@bentoml.api` methods below describe them for the OpenAPI
page and answer them when `MNIST_LEAN_PATH=false`. Both call the same `service.endpoints`.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
import prometheus_client
from starlette.responses import Response

from service import draining, fair_accept, supervisor
from service.schemas import (
    ArrayBatch,
    BulkBody,
    BulkPredictions,
    ImagesUpload,
    ImageUpload,
    ModelInfo,
    NoBody,
    Prediction,
    Predictions,
    PreprocessedImage,
)
from service.settings import load_settings
from service.ui import ui_app
from training import CheckpointError
from training.registry import CHECKPOINT_FILE, MODEL_NAME, serving_tag

if TYPE_CHECKING:
    from service.endpoints import Endpoints, Handler
    from service.inference import ModelSource

# What answers requests (service.endpoints, .front_door, .inference: numpy, PIL, torch) is
# imported where it is used, in the workers: `bentoml serve`'s own process imports this module
# only to read the service's configuration, and its imports delay the workers' start.

logger = logging.getLogger("service")
logger.setLevel(logging.INFO)  # BentoML leaves third-party loggers at WARNING
TAG_ENV = "_MNIST_SERVING_TAG"
settings = load_settings()
WORKERS = settings.worker_count
API_PATHS = frozenset(
    {"/predict_image", "/predict_images", "/predict", "/predict_bulk", "/preprocess_image"}
    | {"/model_info"}
)

batch_size_histogram = prometheus_client.Histogram(
    name="mnist_adaptive_batch_size",
    documentation="Images per forward pass of the adaptive batcher (one-image requests).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)


def worker_slot() -> int | None:
    """This process's worker index (0-based) when it is a BentoML worker, else None."""
    argv = sys.argv
    if "--worker-id" in argv[:-1]:
        value = argv[argv.index("--worker-id") + 1]
        return int(value) - 1 if value.isdigit() else None
    return None


def share_connection_board() -> None:
    """In `bentoml serve`'s own process: a new file where its workers publish their connection
    counts (never one inherited from whatever started it: two servers would share it)."""
    if WORKERS > 1 and supervisor.is_supervisor(sys.argv):
        fd, name = tempfile.mkstemp(prefix="mnist-connections-")
        os.close(fd)
        fair_accept.ConnectionBoard.create(Path(name))
        os.environ[fair_accept.BOARD_ENV] = name


def checkpoint_path(stored_model: Any) -> Path:
    """Where the checkpoint is: the store entry's file, else MODEL_PATH."""
    if stored_model is None:
        assert settings.model_path is not None  # resolve_tag_or_exit chose the file
        return settings.model_path
    return Path(stored_model.path_of(CHECKPOINT_FILE))


def model_source(stored_model: Any) -> ModelSource:
    """The checkpoint and the store tag it is served as (MNIST_MODEL_TAG for a plain file)."""
    from service.inference import ModelSource

    if stored_model is None:
        return ModelSource(checkpoint_path(None), settings.model_tag)
    return ModelSource(checkpoint_path(stored_model), str(stored_model.tag), from_store=True)


def resolve_tag_or_exit() -> str | None:
    """The store tag to serve (None with MODEL_PATH), validated; exits with one line if unusable.

    The server process resolves the tag once; its workers inherit it through the environment,
    so a promotion landing during start cannot split them across models. Under `bentoml serve`
    the checkpoint is only checked for being readable here and fully by the workers (see
    `service.supervisor`); anywhere else (tests, `bentoml build`) it is loaded here.
    """
    try:
        tag = None if settings.model_path else os.environ.get(TAG_ENV) or serving_tag()
        stored_model = bentoml.models.get(tag) if tag else None
        if supervisor.is_supervisor(sys.argv):
            supervisor.check_readable(checkpoint_path(stored_model))
            supervisor.watch_for_fatal_errors()
        elif worker_slot() is None:  # workers load it in __init__ anyway
            from service.inference import Classifier

            Classifier(model_source(stored_model))
    except OSError as exc:
        raise SystemExit(
            f"error: cannot serve: cannot read checkpoint {exc.filename}: {exc.strerror}"
        ) from None
    except CheckpointError as exc:
        raise SystemExit(f"error: cannot serve: {exc}") from None
    except bentoml.exceptions.NotFound:
        raise SystemExit(
            f"error: cannot serve: no model '{MODEL_NAME}' in the BentoML store and MODEL_PATH "
            "is not set; train one with `python -m training` or set MODEL_PATH"
        ) from None
    if tag is not None:
        os.environ[TAG_ENV] = tag
    return tag


SERVING_TAG = resolve_tag_or_exit()
share_connection_board()
if (SLOT := worker_slot()) is not None:
    from service import http_protocol

    fair_accept.install(SLOT, WORKERS)
    http_protocol.install(settings.header_timeout_s)
ACTIVE: dict[str, Endpoints] = {}  # this worker's endpoints, once the model is loaded


@bentoml.service(
    name="mnist_classifier",
    workers=WORKERS,
    # Only BentoML's own routes (health, docs, metrics, the page) run under this timeout; the
    # API routes are answered ahead of it (service.front_door).
    traffic={"timeout": 15},
    http={"port": 3000},
    # The front door writes the access log (escaped, capped, MNIST_ACCESS_LOG) for every route.
    logging={"access": {"enabled": False}},
    # The front door counts every request (bounded labels) and serves /metrics itself.
    metrics={"enabled": False},
)
@bentoml.asgi_app(ui_app, path="/ui")
class MNISTClassifier:
    """Handwritten-digit classifier: a 784-256-10 MLP trained on MNIST."""

    # Referenced at class level so `bentoml build` packs the model. BentoML resolves class-level
    # models at start, so with MODEL_PATH (e.g. in the Docker image) there is no reference.
    if SERVING_TAG is not None:
        stored_model = bentoml.models.BentoModel(SERVING_TAG)

    def __init__(self) -> None:
        import torch

        from service.endpoints import Endpoints
        from service.inference import Classifier

        torch.set_num_threads(settings.torch_threads)
        stored = self.stored_model if SERVING_TAG is not None else None
        try:
            classifier = Classifier(model_source(stored))
        except CheckpointError as exc:
            supervisor.report_fatal(f"error: cannot serve: {exc}")
            raise
        self.endpoints = Endpoints(classifier, settings, on_batch=batch_size_histogram.observe)
        ACTIVE["endpoints"] = self.endpoints
        draining.install(settings.drain_s)  # SIGTERM: not ready first, then shut down
        # The ~320k objects of torch, BentoML and the model live as long as the worker; a full
        # collection walks them all (~110 ms here), which showed up as p99 latency spikes, so
        # they are frozen out of it. With the collector paused since service/__init__, no
        # collection runs first: it would find ~6.5k unreachable objects (no measurable RSS) in
        # 150-200 ms of the start (docs/benchmarks.md).
        gc.freeze()
        gc.enable()
        logger.info(
            "serving %s (sha256 %s)",
            classifier.source.tag or classifier.source.path,
            classifier.metadata["sha256"],
        )

    def __is_ready__(self) -> bool:
        return hasattr(self, "endpoints") and not draining.DRAINING.is_set()

    async def _answer(self, ctx: bentoml.Context, handler: Handler) -> Response:
        from service.request_body import ClientError

        try:
            return await handler(ctx.request)
        except ClientError as exc:
            return exc.response(ctx)

    @bentoml.api(input_spec=ImageUpload, output_spec=Prediction)
    async def predict_image(self, ctx: bentoml.Context) -> Response:
        """Classify one image file (multipart field `image`); concurrent calls are batched."""
        return await self._answer(ctx, self.endpoints.predict_image)

    @bentoml.api(input_spec=ImagesUpload, output_spec=Predictions)
    async def predict_images(self, ctx: bentoml.Context) -> Response:
        """Classify many image files (repeated multipart field `images`), answered in order."""
        return await self._answer(ctx, self.endpoints.predict_images)

    @bentoml.api(input_spec=ArrayBatch, output_spec=Predictions)
    async def predict(self, ctx: bentoml.Context) -> Response:
        """Classify a JSON batch of 28x28 (or 784) float arrays in [0, 1], white on black."""
        return await self._answer(ctx, self.endpoints.predict)

    @bentoml.api(input_spec=BulkBody, output_spec=BulkPredictions)
    async def predict_bulk(self, ctx: bentoml.Context) -> Response:
        """High-throughput path: raw N x 784 uint8 bytes (application/octet-stream)."""
        return await self._answer(ctx, self.endpoints.predict_bulk)

    @bentoml.api(input_spec=ImageUpload, output_spec=PreprocessedImage)
    async def preprocess_image(self, ctx: bentoml.Context) -> Response:
        """The 28x28 image the model sees for an upload: for debugging inputs."""
        return await self._answer(ctx, self.endpoints.preprocess_image)

    @bentoml.api(input_spec=NoBody, output_spec=ModelInfo)
    async def model_info(self, ctx: bentoml.Context) -> Response:
        """Which model is served: tag, sha256, architecture, training config, accuracy."""
        return await self._answer(ctx, self.endpoints.model_info)


SERVICE: Any = MNISTClassifier  # a bentoml Service object, which mypy takes for the class
_BentoService: Any = type(SERVICE)


class _FrontDoorService(_BentoService):
    """BentoML's Service, with `service.front_door` ahead of the app it builds (see there)."""

    __slots__ = ()

    def to_asgi(self, is_main: bool = True):
        from service.front_door import front_door
        from service.openapi import openapi_document
        from service.request_body import RejectPickleMiddleware
        from service.routing_errors import JsonRoutingErrorsMiddleware

        if not any(cls is RejectPickleMiddleware for cls, _ in self.middlewares):
            self.add_asgi_middleware(RejectPickleMiddleware)
            self.add_asgi_middleware(JsonRoutingErrorsMiddleware)
        return front_door(
            super().to_asgi(is_main),
            lambda: ACTIVE.get("endpoints"),
            API_PATHS,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            access_log=settings.access_log,
            lean=settings.lean_path,
            tracing=settings.tracing,
            openapi=lambda: openapi_document(self.openapi_spec.asdict(), API_PATHS),
        )


SERVICE.__class__ = _FrontDoorService
if SLOT is None:
    gc.enable()  # paused since service/__init__ in `bentoml serve`'s own process
