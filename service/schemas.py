"""The public HTTP contract: request bodies and answers, with descriptions and examples.

These models document the API in the OpenAPI spec (`/docs.json`, Swagger at `/`). Request
bodies are read by `service.request_body` (size limits, clear 4xx), not by BentoML, so the
input specs here only describe what a client sends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar

import bentoml
from bentoml.validators import ContentType
from pydantic import BaseModel, ConfigDict, Field, RootModel, WithJsonSchema

EXAMPLE_PROBABILITIES = [
    0.0001,
    0.0002,
    0.0003,
    0.0012,
    0.0001,
    0.0004,
    0.0,
    0.9968,
    0.0002,
    0.0007,
]
EXAMPLE_PREDICTION: dict[str, Any] = {
    "digit": 7,
    "confidence": 0.9968,
    "probabilities": EXAMPLE_PROBABILITIES,
    "uncertain": False,
}


def nullable(json_type: str) -> WithJsonSchema:
    """OpenAPI 3.0 `nullable`: BentoML flattens pydantic's `anyOf: [T, null]` to plain T."""
    return WithJsonSchema({"type": json_type, "nullable": True})


class Prediction(BaseModel):
    """One classified image."""

    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE_PREDICTION})

    digit: int = Field(description="The predicted digit, 0-9.", ge=0, le=9)
    confidence: float = Field(description="Probability of the predicted digit.", ge=0, le=1)
    probabilities: list[float] = Field(
        description="Softmax probability of each digit 0-9; sums to 1.",
        min_length=10,
        max_length=10,
    )
    uncertain: Annotated[bool | None, nullable("boolean")] = Field(
        description="True when the input does not look like a digit the model knows (noise, "
        "a blank page, a letter) or it is unsure: calibrated confidence below the model's "
        "threshold or energy score above it (docs/retraining.md). null for a model trained "
        "without a held-out slice (the seed recipe), which has no thresholds."
    )


class Predictions(RootModel[list[Prediction]]):
    """Predictions in input order."""


class BulkPredictions(BaseModel):
    """Compact answer for bulk input: parallel arrays, in input order."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "count": 2,
                "digits": [7, 2],
                "confidences": [0.99, 0.98],
                "uncertain": [False, False],
            }
        }
    )

    count: int = Field(description="Number of images classified.")
    digits: list[int] = Field(description="Predicted digit of each image.")
    confidences: list[float] = Field(description="Probability of each predicted digit.")
    uncertain: list[bool | None] = Field(
        description="The `uncertain` flag of each image (see Prediction); null entries for a "
        "model without calibration."
    )


class PreprocessedImage(BaseModel):
    """What the model sees: the upload after MNIST-style normalization."""

    image: list[list[float]] = Field(
        description="28 rows of 28 gray values in [0, 1], white digit on black."
    )


class ModelInfo(BaseModel):
    """Which model answers, and how it was made."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "tag": "mnist-mlp:nbtqajxkus7joax4",
                "version": "nbtqajxkus7joax4",
                "source": "bentoml-store",
                "sha256": "df5262ab913c9286b0a6d0854c342bdfd9c5fdeb39c7e167225a1a4586ac5487",
                "weights_sha256": "ce1a3ff01e2744ba" + "0" * 48,
                "architecture": {"xdim": 784, "hdim": 256, "ydim": 10},
                "config": {"epochs": 10, "batch_size": 256, "lr": 0.001, "hidden": 256},
                "test_accuracy": 0.9793,
                "created_at": "2026-11-27T20:52:07+00:00",
            }
        }
    )

    tag: Annotated[str | None, nullable("string")] = Field(
        description="BentoML store tag: of the entry served, or the one the served file was "
        "promoted as (`MNIST_MODEL_TAG`, set in the Docker image); null when unknown."
    )
    version: str = Field(
        description="The tag's version, else the first 16 hex digits of sha256: the Open "
        "Inference Protocol's model version."
    )
    source: str = Field(description="`bentoml-store` or `file`.")
    sha256: str = Field(description="sha256 of the checkpoint file.")
    weights_sha256: str = Field(
        description="sha256 of the weights alone: the model's identity across rebuilds."
    )
    architecture: dict[str, int] = Field(description="Layer sizes of the MLP.")
    config: dict[str, Any] = Field(description="The training configuration.")
    test_accuracy: Annotated[float | None, nullable("number")] = Field(
        description="Accuracy on the MNIST test set, 0-1."
    )
    history: list[dict[str, Any]] = Field(description="Per-epoch training log.")
    data_md5: dict[str, str] = Field(description="MD5 of each MNIST file it was trained on.")
    torch_version: str = Field(description="torch version that trained it.")
    git_commit: Annotated[str | None, nullable("string")] = Field(
        description="Commit of the training code, if known."
    )
    created_at: str = Field(description="When the checkpoint was written (UTC, ISO 8601).")
    calibration: Annotated[dict[str, Any] | None, nullable("object")] = Field(
        description="Temperature, flag thresholds (fitted on held-out training images) and, "
        "on the MNIST test set, the expected calibration error before and after scaling and "
        "the share of digits flagged; null for a model without a held-out slice."
    )


# Input specs: they document the request body; the endpoints read it themselves.

ImageFile = Annotated[Path, ContentType("image/*")]


class RequestSpec(bentoml.IODescriptor):
    """Base for input specs that describe a body for OpenAPI and leave reading it to the API.

    BentoML's own parsing spools uploads to temp files, answers a missing file field with 500
    and logs a traceback for every client error; `service.request_body` reads the body with
    size limits and answers clear 4xx instead.
    """

    @classmethod
    async def from_http_request(cls, request: Any, serde: Any) -> Any:
        return _NO_ARGUMENTS


class _NoArguments:
    model_fields: ClassVar[dict] = {}


_NO_ARGUMENTS = _NoArguments()


class ImageUpload(RequestSpec):
    image: ImageFile = Field(
        description="One image file (PNG, JPEG, BMP, GIF, WebP, TIFF) of a single digit."
    )


class ImagesUpload(RequestSpec):
    images: list[ImageFile] = Field(
        description="Image files, one digit each, as repeated `images` fields; answered in order."
    )


class ArrayBatch(RequestSpec):
    model_config = ConfigDict(json_schema_extra={"example": {"images": [[[0.0] * 28] * 28]}})
    images: list[list[list[float]] | list[float]] = Field(
        description=(
            "Batch of 28x28 images as nested lists (or flat lists of 784) of floats in [0, 1], "
            "white digit on black (the MNIST convention). At most 4096 per request by default."
        )
    )


class NoBody(RequestSpec):
    """No request body: whatever is sent is ignored."""


class BulkBody(RequestSpec):
    """Raw bytes: N images of 784 uint8 pixels each (row-major 28x28, white on black)."""

    media_type: ClassVar[str | None] = "application/octet-stream"
