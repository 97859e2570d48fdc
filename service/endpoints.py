"""What each API route does: read the body, preprocess, predict, answer. Transport-neutral.

Every method takes a Starlette request and returns a response, raising `ClientError` for
anything the client must fix; the caller (the lean front door, or a BentoML `@api` method)
turns that into the JSON 4xx in one place. Nothing here knows BentoML.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import anyio
import numpy as np
from PIL import Image
from starlette.requests import Request
from starlette.responses import Response

from service.batcher import MicroBatcher
from service.budget import Budget
from service.decode_policy import ImageHeader, open_image
from service.inference import (
    UNCERTAIN,
    Classifier,
    prediction,
    predictions,
    probabilities_of,
    uncertain_of,
)
from service.json_batch import images_from_json
from service.preprocess import (
    NoDigitFoundError,
    PreprocessError,
    preprocess_image_bytes,
    preprocess_opened,
)
from service.request_body import (
    ClientError,
    bulk_pixels,
    bulk_to_float,
    json_response,
    read_body,
    read_files,
    require_media_type,
)
from service.settings import ServiceSettings

# Work bigger than this leaves the event loop for a worker thread, so one large request does
# not stall the many small ones. Decode cost comes from what the image's header declares
# (`inspect_image`: ~26 ns per work pixel here), never from the file's size: a 450-byte GIF can
# declare a 40 M-pixel canvas. 100k work pixels is at most ~3 ms on the loop.
INLINE_WORK_PIXELS = 100_000
INLINE_JSON_BYTES = 256 * 1024
BULK_CHUNK_IMAGES = 8192  # /predict_bulk converts and predicts this many at a time (25 MB)
INLINE_BATCH_IMAGES = 256
HEAVY_WORK_THREADS = 2  # concurrent big decodes / big forward passes per worker (memory bound)
MAX_WAITING_HEAVY_WORK = 16  # more queued than this: 503, rather than a queue without bound

Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")


@contextlib.contextmanager
def preprocess_errors() -> Iterator[None]:
    """A refused image as its 4xx: one line, no traceback, the upload's fault."""
    try:
        yield
    except NoDigitFoundError as exc:
        raise ClientError(422, str(exc)) from None
    except PreprocessError as exc:
        raise ClientError(400, str(exc)) from None


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
        self.body_budget = Budget("request body bytes", settings.max_body_bytes_in_flight)
        self.decode_budget = Budget("decode memory bytes", settings.max_decode_bytes_in_flight)
        self.batcher = MicroBatcher(
            classifier.outputs,
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
        headers = [self.inspect(data) for data in files]
        work = sum(header.work_pixels for header in headers)
        if work > self.settings.max_request_work_pixels:
            raise ClientError(
                413,
                f"the images declare {work:,} pixels of decoding work in all; the limit per "
                f"request is {self.settings.max_request_work_pixels:,}",
            )
        images = np.stack(
            [await self.preprocess(d, h) for d, h in zip(files, headers, strict=True)]
        )
        return json_response(predictions(await self.outputs(images)))

    async def predict(self, request: Request) -> Response:
        """A JSON batch of 28x28 (or 784) float arrays in [0, 1], white on black."""
        require_media_type(request, "application/json")
        body = await read_body(request, self.settings.max_json_bytes)
        limit = self.settings.max_batch_images
        if len(body) <= INLINE_JSON_BYTES:
            images = images_from_json(body, limit)
        else:  # megabytes of JSON: in a thread, in slices that let the loop run between
            images = await self.in_thread(images_from_json, body, limit)
        rows = await self.outputs(images)
        if len(rows) <= INLINE_BATCH_IMAGES:
            return json_response(predictions(rows))
        # 4096 answers take ~35 ms of Python to build: off the event loop too
        return await self.in_thread(lambda: json_response(predictions(rows)))

    async def predict_bulk(self, request: Request) -> Response:
        """Raw N x 784 uint8 bytes (application/octet-stream) -> parallel digit/confidence lists."""
        require_media_type(request, "application/octet-stream")
        body = await read_body(request, self.settings.max_bulk_images * 784)
        pixels = bulk_pixels(body, self.settings.max_bulk_images)
        if len(pixels) <= INLINE_BATCH_IMAGES:
            return self.bulk_answer(self.classifier.outputs(bulk_to_float(pixels)))
        # 100,000 images: converted and predicted a chunk at a time (a float32 copy of all of
        # them is 313 MB), and the answer's three long lists built, all off the event loop
        return await self.in_thread(lambda: self.bulk_answer(self.bulk_outputs(pixels)))

    def bulk_outputs(self, pixels: np.ndarray) -> np.ndarray:
        """`Classifier.outputs` of (N, 784) uint8 pixels, BULK_CHUNK_IMAGES at a time."""
        outputs = np.empty((len(pixels), UNCERTAIN + 1), np.float32)
        for start in range(0, len(pixels), BULK_CHUNK_IMAGES):
            chunk = bulk_to_float(pixels[start : start + BULK_CHUNK_IMAGES])
            outputs[start : start + len(chunk)] = self.classifier.outputs(chunk)
        return outputs

    @staticmethod
    def bulk_answer(outputs: np.ndarray) -> Response:
        probabilities = probabilities_of(outputs)
        digits = probabilities.argmax(axis=1)
        confidences = probabilities[np.arange(len(digits)), digits]
        return json_response(
            {
                "count": len(digits),
                "digits": digits.tolist(),
                "confidences": np.round(confidences.astype(np.float64), 6).tolist(),
                "uncertain": uncertain_of(outputs),
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

    def inspect(self, data: bytes) -> ImageHeader:
        """What decoding `data` will cost, from its header alone; refusals are 400s."""
        return self.open(data)[1]

    def open(self, data: bytes) -> tuple[Image.Image, ImageHeader]:
        try:
            return open_image(data, max_pixels=self.settings.max_image_pixels)
        except PreprocessError as exc:
            raise ClientError(400, str(exc)) from None

    async def preprocess(self, data: bytes, header: ImageHeader | None = None) -> np.ndarray:
        """Upload bytes -> (784,) array: cheap images inline, costly ones in a bounded thread
        pool, holding their declared peak memory from the decode budget until the thread ends
        (a decode cannot be cancelled, so its memory is held even if the client leaves)."""
        if header is None:
            image, header = self.open(data)
            if header.work_pixels <= INLINE_WORK_PIXELS:  # the common case: opened once
                with preprocess_errors():
                    return preprocess_opened(image).reshape(784)
            image.close()
        if header.work_pixels > self.settings.max_request_work_pixels:
            raise ClientError(
                413,
                f"the image declares {header.work_pixels:,} pixels of decoding work; the "
                f"limit per request is {self.settings.max_request_work_pixels:,}",
            )

        def run() -> np.ndarray:
            return preprocess_image_bytes(data, max_pixels=self.settings.max_image_pixels)

        with preprocess_errors():
            if header.work_pixels <= INLINE_WORK_PIXELS:
                return run().reshape(784)
            self.decode_budget.take(header.peak_bytes)
            try:
                return (await self.in_thread(run)).reshape(784)
            finally:
                self.decode_budget.release(header.peak_bytes)

    async def outputs(self, images: np.ndarray) -> np.ndarray:
        """`Classifier.outputs`: one image through the adaptive batcher, small batches inline,
        big ones in the heavy-work pool.

        One-image requests of every route share forward passes: a one-image Open Inference
        infer at c=32 ran the model (and the calibration) once per request, 44 % of the
        worker's time, and reached 0.6x `/predict_image`'s rate (docs/benchmarks.md).
        """
        if len(images) == 1:
            return (await self.batcher.submit(images[0]))[np.newaxis]
        if len(images) <= INLINE_BATCH_IMAGES:
            return self.classifier.outputs(images)
        return await self.in_thread(self.classifier.outputs, images)

    async def in_thread(self, function: Callable[..., T], *args: object) -> T:
        """Run heavy work in the bounded pool; 503 when too much is already waiting for it."""
        if self.heavy_work.statistics().tasks_waiting >= MAX_WAITING_HEAVY_WORK:
            raise ClientError(
                503,
                "the server is busy (heavy work queue full); retry shortly",
                headers={"retry-after": "1"},
            )
        return await anyio.to_thread.run_sync(function, *args, limiter=self.heavy_work)
