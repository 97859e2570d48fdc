"""`MnistClient`: the service's routes as Python calls, over one keep-alive connection.

Only httpx and the standard library: no torch, numpy or Pillow (arrays are accepted by duck
typing), so the client is light to install and quick to import. Every failed request raises
`MnistClientError` with the server's own message and status.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from mnist_client.errors import MnistClientError
from mnist_client.results import BulkPrediction, Prediction
from mnist_client.retry import retry_wait, should_retry

DEFAULT_URL = "http://127.0.0.1:3000"
URL_ENV = "MNIST_URL"
API_KEY_ENV = "MNIST_API_KEY"

# An image file: its path, or its bytes (PNG, JPEG, ... as the server accepts them).
ImageFile = str | os.PathLike[str] | bytes


class MnistClient:
    """A client of one server. `url` defaults to `$MNIST_URL`, else http://127.0.0.1:3000;
    `api_key` to `$MNIST_API_KEY` (sent as `Authorization: Bearer <key>`). A 503 is retried up
    to `retries` times, waiting what its `Retry-After` asks (at most `max_retry_wait` s)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        max_retry_wait: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, not {retries}")
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.timeout, self.retries, self.max_retry_wait = timeout, retries, max_retry_wait
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def predict_image(self, image: ImageFile) -> Prediction:
        """One image file (path or bytes) -> its prediction (`/predict_image`)."""
        return Prediction.from_json(
            self._call("POST", "/predict_image", files={"image": _image_part(image)})
        )

    def predict_images(self, images: Iterable[ImageFile]) -> list[Prediction]:
        """Several image files in one request (`/predict_images`), answers in input order."""
        files = [("images", _image_part(image)) for image in images]
        return [Prediction.from_json(p) for p in self._call("POST", "/predict_images", files=files)]

    def predict(self, image: Any) -> Prediction:
        """One MNIST-style image: 784 floats or 28x28 (lists or an array), in [0, 1], white on
        black (`/predict`)."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Iterable[Any]) -> list[Prediction]:
        """Several MNIST-style images in one `/predict` request, answers in input order."""
        # json.dumps, not httpx's encoder: that one raises on NaN, the server answers it with 400.
        body = json.dumps({"images": [_as_lists(image) for image in images]})
        headers = {"content-type": "application/json"}
        answer = self._call("POST", "/predict", content=body.encode(), headers=headers)
        return [Prediction.from_json(p) for p in answer]

    def predict_bulk(self, pixels: Any) -> BulkPrediction:
        """N x 784 uint8 pixels, row-major, white on black: bytes or a uint8 array
        (`/predict_bulk`, the fastest route for many images)."""
        if isinstance(pixels, bytes | bytearray | memoryview):
            body = bytes(pixels)
        elif str(getattr(pixels, "dtype", "")) == "uint8" and hasattr(pixels, "tobytes"):
            body = pixels.tobytes()
        else:
            raise TypeError(f"predict_bulk needs bytes or a uint8 array, not {type(pixels)!r}")
        headers = {"content-type": "application/octet-stream"}
        return BulkPrediction.from_json(
            self._call("POST", "/predict_bulk", content=body, headers=headers)
        )

    def model_info(self) -> dict[str, Any]:
        """What is served: tag, version, checkpoint sha256, architecture, test accuracy..."""
        return self._call("GET", "/model_info")

    def health(self) -> bool:
        """Whether the server is ready (`/readyz` 200); False while it starts or stops. Raises
        `MnistClientError` when no server answers."""
        return self._send("GET", "/readyz").status_code == 200

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MnistClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, **request: Any) -> Any:
        """The request's JSON answer, retrying 503s; any other failure raises."""
        for attempt in range(self.retries + 1):
            response = self._send(method, path, **request)
            if not should_retry(response) or attempt == self.retries:
                break
            self._sleep(retry_wait(response, attempt, self.max_retry_wait))
        if not response.is_success:
            raise MnistClientError(error_message(response), response.status_code, self.url + path)
        try:
            return response.json()
        except ValueError:
            raise MnistClientError(
                "the answer is not JSON", response.status_code, self.url + path
            ) from None

    def _send(self, method: str, path: str, **request: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **request)
        except httpx.TimeoutException:
            message = f"no answer from {self.url} within {self.timeout:g} s"
            raise MnistClientError(message, url=self.url + path) from None
        except httpx.TransportError as error:
            message = f"cannot connect to {self.url}: {error or type(error).__name__}"
            raise MnistClientError(message, url=self.url + path) from None


def error_message(response: httpx.Response) -> str:
    """The server's `{"error": ...}` message, else the start of the body, else the reason."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    text = response.text.strip().splitlines()
    return text[0][:200] if text else response.reason_phrase


def _image_part(image: ImageFile) -> tuple[str, bytes]:
    """A multipart file part: the file's name and bytes (OSError if it cannot be read)."""
    if isinstance(image, bytes):
        return "image", image
    path = Path(image)
    return path.name, path.read_bytes()


def _as_lists(image: Any) -> Any:
    """Arrays (anything with `tolist`, such as numpy's or torch's) as nested lists for JSON."""
    return image.tolist() if hasattr(image, "tolist") else image
