"""The BentoML service: load the checkpoint once, answer digit predictions over HTTP.

Start it with `bentoml serve` in the repository root (see `[tool.bentoml.build]`).
Every endpoint reads its own body (`service.request_body`) so bad input gets a clear 4xx.
"""

from __future__ import annotations

import gc
import logging
import os

import anyio
import bentoml
import numpy as np
import torch
from starlette.responses import Response

from service.auth import ApiKeyMiddleware
from service.batcher import MicroBatcher
from service.inference import Classifier, ModelSource, prediction
from service.preprocess import NoDigitFoundError, PreprocessError, preprocess_image_bytes
from service.request_body import (
    ClientError,
    RejectPickleMiddleware,
    images_from_json,
    json_response,
    parse_bulk,
    read_body,
    read_files,
    require_media_type,
)
from service.routing_errors import JsonRoutingErrorsMiddleware
from service.schemas import (
    ArrayBatch,
    BulkBody,
    BulkPredictions,
    ImagesUpload,
    ImageUpload,
    ModelInfo,
    NoBody,
    Prediction,
    PreprocessedImage,
)
from service.settings import load_settings
from service.ui import ui_app
from training import CheckpointError
from training.registry import CHECKPOINT_FILE, MODEL_NAME, serving_tag

logger = logging.getLogger("service")
TAG_ENV = "_MNIST_SERVING_TAG"
settings = load_settings()

# Work bigger than this leaves the event loop for a worker thread, so one large request does
# not stall the many small ones. Compressed size bounds decoded size (zlib stays under ~1000:1),
# so a 4 KB upload decodes in milliseconds; anything larger could be a 6000x6000 photo.
INLINE_UPLOAD_BYTES = 4 * 1024
INLINE_BATCH_IMAGES = 256
HEAVY_WORK_THREADS = 2  # concurrent big decodes / big forward passes per worker (memory bound)

batch_size_histogram = bentoml.metrics.Histogram(
    name="mnist_adaptive_batch_size",
    documentation="Images per forward pass of the /predict_image adaptive batcher.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)


def model_source(stored_model: object | None) -> ModelSource:
    if stored_model is None:
        return ModelSource(settings.model_path, None)
    return ModelSource(stored_model.path_of(CHECKPOINT_FILE), str(stored_model.tag))


def resolve_tag_or_exit() -> str | None:
    """The store tag to serve (None with MODEL_PATH), validated; exits with one line if unusable.

    BentoML keeps serving (never ready) when a worker's `__init__` raises, so the model is
    resolved and its checkpoint validated here, at import in the server process, once, before
    any worker starts; the workers then serve exactly this tag.
    """
    try:
        # The server process resolves the tag once; its workers inherit it through the
        # environment, so a promotion landing during start cannot split them across models.
        tag = None if settings.model_path else os.environ.get(TAG_ENV) or serving_tag()
        Classifier(model_source(bentoml.models.get(tag) if tag else None))
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


@bentoml.service(
    name="mnist_classifier",
    workers=settings.workers,
    # Requests take milliseconds; BentoML keeps a timer (and the request's trace span) alive for
    # the whole timeout, so a long one holds memory under load.
    traffic={"timeout": 15},
    http={"port": 3000},
    # BentoML's access log decodes the request Content-Type as UTF-8 and drops the connection
    # when it is not (HTTP allows Latin-1 bytes there).
    logging={"access": {"request_content_type": False}},
)
@bentoml.asgi_app(ui_app, path="/ui")
class MNISTClassifier:
    """Handwritten-digit classifier: a 784-256-10 MLP trained on MNIST."""

    # Referenced at class level so `bentoml build` packs the model. BentoML resolves class-level
    # models at start, so with MODEL_PATH (e.g. in the Docker image) there is no reference.
    if SERVING_TAG is not None:
        stored_model = bentoml.models.BentoModel(SERVING_TAG)

    def __init__(self) -> None:
        torch.set_num_threads(settings.torch_threads)
        self.heavy_work = anyio.CapacityLimiter(HEAVY_WORK_THREADS)
        stored = self.stored_model if SERVING_TAG is not None else None
        self.classifier = Classifier(model_source(stored))
        self.model_info_body = json_response(ModelInfo(**self.classifier.info()).model_dump()).body
        self.batcher = MicroBatcher(
            self.classifier.probabilities,
            max_batch_size=settings.max_batch_size if settings.batching else 1,
            max_latency_ms=settings.max_latency_ms,
            on_batch=lambda size: batch_size_histogram.observe(size),
        )
        # The ~250k objects of torch, BentoML and the model live as long as the worker; a full
        # collection walks them all (~110 ms here), which showed up as p99 latency spikes.
        gc.freeze()
        logger.info(
            "serving %s (sha256 %s)",
            self.classifier.source.path,
            self.classifier.metadata["sha256"],
        )

    def __is_ready__(self) -> bool:
        return hasattr(self, "classifier")

    async def _preprocess(self, data: bytes) -> np.ndarray:
        """Upload bytes -> (784,) array; small files inline, big ones in a bounded thread pool."""

        def run() -> np.ndarray:
            return preprocess_image_bytes(data, max_pixels=settings.max_image_pixels)

        try:
            if len(data) <= INLINE_UPLOAD_BYTES:
                array = run()
            else:
                array = await anyio.to_thread.run_sync(run, limiter=self.heavy_work)
        except NoDigitFoundError as exc:
            raise ClientError(422, str(exc)) from None
        except PreprocessError as exc:
            raise ClientError(400, str(exc)) from None
        except Exception:  # a decoder failure Pillow does not classify: still the upload's fault
            logger.exception("unexpected error while decoding an upload")
            raise ClientError(400, "the image could not be processed") from None
        return array.reshape(784)

    async def _probabilities(self, images: np.ndarray) -> np.ndarray:
        if len(images) <= INLINE_BATCH_IMAGES:
            return self.classifier.probabilities(images)
        return await anyio.to_thread.run_sync(
            self.classifier.probabilities, images, limiter=self.heavy_work
        )

    @bentoml.api(input_spec=ImageUpload)
    async def predict_image(self, ctx: bentoml.Context) -> Prediction:
        """Classify one image file (multipart field `image`); concurrent calls are batched."""
        request = ctx.request
        try:
            (data,) = await read_files(request, "image", settings.max_upload_bytes, max_files=1)
            row = await self.batcher.submit(await self._preprocess(data))
        except ClientError as exc:
            return exc.response(ctx)
        return json_response(prediction(row))

    @bentoml.api(input_spec=ImagesUpload)
    async def predict_images(self, ctx: bentoml.Context) -> list[Prediction]:
        """Classify many image files (repeated multipart field `images`), answered in order."""
        request = ctx.request
        try:
            files = await read_files(
                request, "images", settings.max_upload_bytes, settings.max_batch_images
            )
            images = np.stack([await self._preprocess(data) for data in files])
        except ClientError as exc:
            return exc.response(ctx)
        return json_response([prediction(row) for row in await self._probabilities(images)])

    @bentoml.api(input_spec=ArrayBatch)
    async def predict(self, ctx: bentoml.Context) -> list[Prediction]:
        """Classify a JSON batch of 28x28 (or 784) float arrays in [0, 1], white on black."""
        request = ctx.request
        try:
            require_media_type(request, "application/json")
            body = await read_body(request, settings.max_json_bytes)
            if len(body) <= INLINE_UPLOAD_BYTES * 64:
                images = images_from_json(body, settings.max_batch_images)
            else:  # parsing megabytes of JSON takes a while: not on the event loop
                images = await anyio.to_thread.run_sync(
                    images_from_json, body, settings.max_batch_images, limiter=self.heavy_work
                )
        except ClientError as exc:
            return exc.response(ctx)
        return json_response([prediction(row) for row in await self._probabilities(images)])

    @bentoml.api(input_spec=BulkBody)
    async def predict_bulk(self, ctx: bentoml.Context) -> BulkPredictions:
        """High-throughput path: raw N x 784 uint8 bytes (application/octet-stream)."""
        request = ctx.request
        try:
            require_media_type(request, "application/octet-stream")
            body = await read_body(request, settings.max_bulk_images * 784)
            images = parse_bulk(body, settings.max_bulk_images)
        except ClientError as exc:
            return exc.response(ctx)
        probabilities = await self._probabilities(images)
        digits = probabilities.argmax(axis=1)
        confidences = probabilities[np.arange(len(digits)), digits]
        return json_response(
            {
                "count": len(digits),
                "digits": digits.tolist(),
                "confidences": np.round(confidences.astype(np.float64), 6).tolist(),
            }
        )

    @bentoml.api(input_spec=ImageUpload)
    async def preprocess_image(self, ctx: bentoml.Context) -> PreprocessedImage:
        """The 28x28 image the model sees for an upload: for debugging inputs."""
        request = ctx.request
        try:
            (data,) = await read_files(request, "image", settings.max_upload_bytes, max_files=1)
            array = await self._preprocess(data)
        except ClientError as exc:
            return exc.response(ctx)
        return json_response({"image": np.round(array.reshape(28, 28), 4).tolist()})

    @bentoml.api(input_spec=NoBody)
    async def model_info(self) -> ModelInfo:
        """Which model is served: tag, sha256, architecture, training config, accuracy."""
        return Response(self.model_info_body, media_type="application/json")


MNISTClassifier.add_asgi_middleware(RejectPickleMiddleware)
MNISTClassifier.add_asgi_middleware(JsonRoutingErrorsMiddleware)

if settings.api_key is not None:
    MNISTClassifier.add_asgi_middleware(
        ApiKeyMiddleware, api_key=settings.api_key.get_secret_value()
    )
