"""The Open Inference Protocol's REST routes (KServe v2 / Triton HTTP) over the same endpoints.

`service.open_inference` is the codec (bodies in, arrays out, and back); this file matches the
`/v2/...` paths, checks the model name and version, and runs the prediction through the same
`Endpoints` (limits, thread offloading, preprocessing) as the service's own routes.
"""

from __future__ import annotations

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from service import open_inference as oip
from service.endpoints import INLINE_BATCH_IMAGES, INLINE_JSON_BYTES, Endpoints, Handler
from service.inference import UNCERTAIN, probabilities_of
from service.openapi import package_version
from service.request_body import ClientError, json_response, read_body

# Route templates, used as metrics labels (a client cannot add series with made-up names).
SERVER = "/v2"
LIVE = "/v2/health/live"
READY = "/v2/health/ready"
MODEL = "/v2/models/{model}"
MODEL_VERSION = "/v2/models/{model}/versions/{version}"


class OpenInferenceRoutes:
    """`/v2` routes for the one served model, named `mnist` (`open_inference.MODEL_NAME`)."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        info = endpoints.classifier.info()
        self.version = oip.model_version(info["tag"], info["sha256"])
        self.server_body = json_response(oip.server_metadata(package_version())).body
        self.flagged = endpoints.classifier.calibration is not None  # has `uncertain`
        metadata = oip.model_metadata(
            oip.MODEL_NAME,
            self.version,
            max_batch=endpoints.settings.max_bulk_images,
            flagged=self.flagged,
        )
        self.model_body = json_response(metadata).body
        settings = endpoints.settings
        # Binary FP32 needs 4 bytes a pixel; a body without binary data is JSON, held to the
        # JSON limit (its JSON header to oip.WHOLE_JSON_BYTES).
        # Both within the body budget: a larger body could never be held (413, not 503).
        self.binary_limit = min(
            max(settings.max_json_bytes, settings.max_bulk_images * 784 * 4),
            settings.max_body_bytes_in_flight,
        )

    def match(self, path: str) -> tuple[str, tuple[str, ...], Handler] | None:
        """(metrics label, methods, handler) for a `/v2` path, or None for no such route."""
        if path == SERVER:
            return SERVER, ("GET",), self.server_metadata
        if path == LIVE:
            return LIVE, ("GET",), self.live
        if path == READY:
            return READY, ("GET",), self.ready
        parts = path.split("/")
        if len(parts) < 4 or parts[:3] != ["", "v2", "models"] or not parts[3]:
            return None
        name, rest = parts[3], parts[4:]
        model_version = None
        template = MODEL
        if rest[:1] == ["versions"] and len(rest) >= 2 and rest[1]:
            model_version, rest, template = rest[1], rest[2:], MODEL_VERSION
        if rest == []:
            return template, ("GET",), self._checked(name, model_version, self.model_metadata)
        if rest == ["ready"]:
            return template + "/ready", ("GET",), self._checked(name, model_version, self.ready)
        if rest == ["infer"]:
            return template + "/infer", ("POST",), self._checked(name, model_version, self.infer)
        return None

    def _checked(self, name: str, model_version: str | None, handler: Handler) -> Handler:
        async def checked(request: Request) -> Response:
            oip.check_model(name, model_version, oip.MODEL_NAME, self.version)
            return await handler(request)

        return checked

    async def server_metadata(self, request: Request) -> Response:
        return Response(self.server_body, media_type="application/json")

    async def model_metadata(self, request: Request) -> Response:
        return Response(self.model_body, media_type="application/json")

    async def live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def ready(self, request: Request) -> Response:
        return json_response({"ready": True})  # these routes exist once the model is loaded

    async def infer(self, request: Request) -> Response:
        settings = self.endpoints.settings
        binary = oip.HEADER_LENGTH in request.headers
        declared = request.headers.get("content-length", "")
        if not binary and declared.isdigit() and int(declared) > settings.max_json_bytes:
            raise ClientError(
                413,
                f"request body is {declared} bytes; the limit is {settings.max_json_bytes} for a "
                f"JSON body and {self.binary_limit} with binary tensor data "
                f"({oip.HEADER_LENGTH})",
            )
        body = await read_body(request, self.binary_limit if binary else settings.max_json_bytes)
        args = (
            body,
            request.headers,
            settings.max_bulk_images,
            settings.max_upload_bytes,
            self.flagged,
        )
        if len(body) <= INLINE_JSON_BYTES:
            parsed = oip.parse_infer_request(*args)
        else:  # megabytes: JSON parsed in slices, binary pixels converted, off the event loop
            parsed = await self.endpoints.in_thread(oip.parse_infer_request, *args)
        images = parsed.images if parsed.images is not None else await self.decode(parsed)
        outputs = await self.endpoints.outputs(images)
        flags = outputs[:, UNCERTAIN] > 0.5 if self.flagged else None
        answer = (parsed, oip.MODEL_NAME, self.version, probabilities_of(outputs), flags)
        if parsed.batch_size <= INLINE_BATCH_IMAGES:
            payload, headers = oip.encode_infer_response(*answer)
        else:  # thousands of answers: JSON outputs take long to build
            payload, headers = await self.endpoints.in_thread(oip.encode_infer_response, *answer)
        return Response(payload, headers=headers)

    async def decode(self, parsed: oip.InferRequest) -> np.ndarray:
        """BYTES elements through the service's own preprocessing, errors naming the element."""
        encoded = parsed.encoded or ()
        limit = self.endpoints.settings.max_batch_images
        if len(encoded) > limit:
            raise ClientError(413, f"{len(encoded)} images in one request; the limit is {limit}")
        rows = []
        for index, data in enumerate(encoded):
            try:
                rows.append(await self.endpoints.preprocess(data))
            except ClientError as exc:
                raise ClientError(
                    exc.status, f"input '{oip.INPUT_NAME}' element {index}: {exc.message}"
                ) from None
        return np.stack(rows)
