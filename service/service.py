"""The BentoML service: load the checkpoint once, answer digit predictions over HTTP.

Start it with `bentoml serve` in the repository root (see `[tool.bentoml.build]`).
Every endpoint reads its own body (`service.request_body`) so bad input gets a clear 4xx.
"""

from __future__ import annotations

import gc
import logging

import anyio
import bentoml
import numpy as np
import torch
from starlette.responses import Response

from service.auth import ApiKeyMiddleware
from service.batcher import MicroBatcher
from service.inference import Classifier, ModelSource, prediction
from service.preprocess import PreprocessError, preprocess_image_bytes
from service.request_body import (
    ClientError,
    json_response,
    parse_bulk,
    parse_image_array,
    parse_json,
    read_body,
    read_files,
    require_media_type,
)
from service.schemas import (
    ArrayBatch,
    BulkBody,
    BulkPredictions,
    ImagesUpload,
    ImageUpload,
    ModelInfo,
    Prediction,
    PreprocessedImage,
)
from service.settings import load_settings
from service.ui import ui_app
from training import CheckpointError
from training.registry import CHECKPOINT_FILE, MODEL_NAME, serving_tag

logger = logging.getLogger("service")
settings = load_settings()

# Work bigger than this leaves the event loop for a worker thread, so one large request does
# not stall the many small ones.
INLINE_UPLOAD_BYTES = 256 * 1024
INLINE_BATCH_IMAGES = 256
PROTECTED_ROUTES = (
    "/predict_image",
    "/predict_images",
    "/predict",
    "/predict_bulk",
    "/preprocess_image",
    "/model_info",
)

batch_size_histogram = bentoml.metrics.Histogram(
    name="mnist_adaptive_batch_size",
    documentation="Images per forward pass of the /predict_image adaptive batcher.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)


def model_source(stored_model: object | None) -> ModelSource:
    if settings.model_path is not None:
        return ModelSource(settings.model_path, None)
    assert stored_model is not None
    return ModelSource(stored_model.path_of(CHECKPOINT_FILE), str(stored_model.tag))


def check_model_or_exit() -> None:
    """Fail `bentoml serve` itself, with one line, when there is no usable model.

    BentoML keeps serving (never ready) when a worker's `__init__` raises, so the
    checkpoint is validated here, at import in the server process, before any worker starts.
    """
    try:
        stored = None if settings.model_path else bentoml.models.get(serving_tag())
        Classifier(model_source(stored))
    except CheckpointError as exc:
        raise SystemExit(f"error: cannot serve: {exc}") from None
    except bentoml.exceptions.NotFound:
        raise SystemExit(
            f"error: cannot serve: no model '{MODEL_NAME}' in the BentoML store and MODEL_PATH "
            "is not set; train one with `python -m training` or set MODEL_PATH"
        ) from None


check_model_or_exit()


@bentoml.service(
    name="mnist_classifier",
    workers=settings.workers,
    traffic={"timeout": 60},
    http={"port": 3000},
)
@bentoml.asgi_app(ui_app, path="/ui")
class MNISTClassifier:
    """Handwritten-digit classifier: a 784-256-10 MLP trained on MNIST."""

    # Referenced at class level so `bentoml build` packs the model. BentoML resolves class-level
    # models at start, so with MODEL_PATH (e.g. in the Docker image) there is no reference.
    if settings.model_path is None:
        stored_model = bentoml.models.BentoModel(serving_tag())

    def __init__(self) -> None:
        torch.set_num_threads(settings.torch_threads)
        stored = None if settings.model_path else self.stored_model
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
        try:
            if len(data) <= INLINE_UPLOAD_BYTES:
                array = preprocess_image_bytes(data, max_pixels=settings.max_image_pixels)
            else:
                array = await anyio.to_thread.run_sync(
                    lambda: preprocess_image_bytes(data, max_pixels=settings.max_image_pixels)
                )
        except PreprocessError as exc:
            status = 422 if type(exc).__name__ == "NoDigitFoundError" else 400
            raise ClientError(status, str(exc)) from None
        return array.reshape(784)

    async def _probabilities(self, images: np.ndarray) -> np.ndarray:
        if len(images) <= INLINE_BATCH_IMAGES:
            return self.classifier.probabilities(images)
        return await anyio.to_thread.run_sync(self.classifier.probabilities, images)

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
            payload = parse_json(await read_body(request, settings.max_json_bytes))
            images = parse_image_array(payload, settings.max_batch_images)
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

    @bentoml.api
    async def model_info(self) -> ModelInfo:
        """Which model is served: tag, sha256, architecture, training config, accuracy."""
        return Response(self.model_info_body, media_type="application/json")


if settings.api_key is not None:
    MNISTClassifier.add_asgi_middleware(
        ApiKeyMiddleware,
        api_key=settings.api_key.get_secret_value(),
        protected=PROTECTED_ROUTES,
    )
