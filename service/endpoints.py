"""What each API route does: read the body, preprocess, predict, answer. Transport-neutral.

Every method takes a Starlette request and returns a response, raising `ClientError` for
anything the client must fix; the caller (the lean front door, or a BentoML `@api` method)
turns that into the JSON 4xx in one place. Nothing here knows BentoML.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from service.batcher import MicroBatcher
from service.inference import Classifier, prediction
from service.preprocess import NoDigitFoundError, PreprocessError, preprocess_image_bytes
from service.request_body import (
    ClientError,
    images_from_json,
    json_response,
    parse_bulk,
    read_body,
    read_files,
    require_media_type,
)
from service.settings import ServiceSettings

logger = logging.getLogger("service")

# Work bigger than this leaves the event loop for a worker thread, so one large request does
# not stall the many small ones. Compressed size bounds decoded size (zlib stays under ~1000:1),
# so a 4 KB upload decodes in milliseconds; anything larger could be a 6000x6000 photo.
INLINE_UPLOAD_BYTES = 4 * 1024
INLINE_JSON_BYTES = 256 * 1024
INLINE_BATCH_IMAGES = 256
HEAVY_WORK_THREADS = 2  # concurrent big decodes / big forward passes per worker (memory bound)

Handler = Callable[[Request], Awaitable[Response]]


class Endpoints:
    """The API of one worker: a loaded classifier, its adaptive batcher and the limits."""

    def __init__(
        self,
        classifier: Classifier,
        settings: ServiceSettings,
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.classifier = classifier
        self.settings = settings
        self.heavy_work = anyio.CapacityLimiter(HEAVY_WORK_THREADS)
        self.batcher = MicroBatcher(
            classifier.probabilities,
            max_batch_size=settings.max_batch_size if settings.batching else 1,
            max_latency_ms=settings.max_latency_ms,
            on_batch=on_batch,
        )
        self.model_info_body = json_response(classifier.info()).body

    def routes(self) -> dict[str, tuple[tuple[str, ...], Handler]]:
        """Path -> (HTTP methods, handler) for every route this class answers."""
        return {
            "/predict_image": (("POST",), self.predict_image),
            "/predict_images": (("POST",), self.predict_images),
            "/predict": (("POST",), self.predict),
            "/predict_bulk": (("POST",), self.predict_bulk),
            "/preprocess_image": (("POST",), self.preprocess_image),
            "/model_info": (("GET", "POST"), self.model_info),
        }

    async def predict_image(self, request: Request) -> Response:
        """One image file (multipart field `image`); concurrent calls share forward passes."""
        (data,) = await read_files(request, "image", self.settings.max_upload_bytes, max_files=1)
        row = await self.batcher.submit(await self.preprocess(data))
        return json_response(prediction(row))

    async def predict_images(self, request: Request) -> Response:
        """Many image files (repeated multipart field `images`), answered in order."""
        files = await read_files(
            request, "images", self.settings.max_upload_bytes, self.settings.max_batch_images
        )
        images = np.stack([await self.preprocess(data) for data in files])
        return json_response([prediction(row) for row in await self.probabilities(images)])

    async def predict(self, request: Request) -> Response:
        """A JSON batch of 28x28 (or 784) float arrays in [0, 1], white on black."""
        require_media_type(request, "application/json")
        body = await read_body(request, self.settings.max_json_bytes)
        limit = self.settings.max_batch_images
        if len(body) <= INLINE_JSON_BYTES:
            images = images_from_json(body, limit)
        else:  # parsing megabytes of JSON takes a while: not on the event loop
            images = await anyio.to_thread.run_sync(
                images_from_json, body, limit, limiter=self.heavy_work
            )
        return json_response([prediction(row) for row in await self.probabilities(images)])

    async def predict_bulk(self, request: Request) -> Response:
        """Raw N x 784 uint8 bytes (application/octet-stream) -> parallel digit/confidence lists."""
        require_media_type(request, "application/octet-stream")
        body = await read_body(request, self.settings.max_bulk_images * 784)
        images = parse_bulk(body, self.settings.max_bulk_images)
        probabilities = await self.probabilities(images)
        digits = probabilities.argmax(axis=1)
        confidences = probabilities[np.arange(len(digits)), digits]
        return json_response(
            {
                "count": len(digits),
                "digits": digits.tolist(),
                "confidences": np.round(confidences.astype(np.float64), 6).tolist(),
            }
        )

    async def preprocess_image(self, request: Request) -> Response:
        """The 28x28 image the model sees for an upload: for debugging inputs."""
        (data,) = await read_files(request, "image", self.settings.max_upload_bytes, max_files=1)
        array = await self.preprocess(data)
        return json_response({"image": np.round(array.reshape(28, 28), 4).tolist()})

    async def model_info(self, request: Request) -> Response:
        """Which model is served: tag, sha256, architecture, training config, accuracy."""
        return Response(self.model_info_body, media_type="application/json")

    async def preprocess(self, data: bytes) -> np.ndarray:
        """Upload bytes -> (784,) array; small files inline, big ones in a bounded thread pool."""

        def run() -> np.ndarray:
            return preprocess_image_bytes(data, max_pixels=self.settings.max_image_pixels)

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

    async def probabilities(self, images: np.ndarray) -> np.ndarray:
        if len(images) <= INLINE_BATCH_IMAGES:
            return self.classifier.probabilities(images)
        return await anyio.to_thread.run_sync(
            self.classifier.probabilities, images, limiter=self.heavy_work
        )
