"""Every service setting, read from the environment in one place and validated at start."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

# service.decode_policy.MAX_IMAGE_PIXELS, written out: importing it would bring PIL into
# `bentoml serve`'s supervisor, which never decodes (tests/test_settings.py checks they agree).
MAX_IMAGE_PIXELS = 40_000_000
MODEL_TAG = re.compile(r"[a-z0-9][a-z0-9._-]*:[A-Za-z0-9][A-Za-z0-9._-]*")


class ServiceSettings(BaseSettings):
    """Environment variables `MNIST_*` (and the two plain names `MODEL_PATH`, `API_KEY`)."""

    model_config = SettingsConfigDict(
        env_prefix="MNIST_", extra="ignore", protected_namespaces=(), frozen=True
    )

    model_path: Path | None = Field(
        None,
        validation_alias=AliasChoices("MODEL_PATH", "MNIST_MODEL_PATH"),
        description="Checkpoint file to serve; unset: mnist-mlp:latest from the BentoML store.",
    )
    model_tag: str | None = Field(
        None,
        description="With MODEL_PATH: the store tag its checkpoint was promoted as, for "
        "/model_info (the Docker image sets it from its MODEL_TAG build argument); empty: none.",
    )
    api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("API_KEY", "MNIST_API_KEY"),
        description="When set, every route but health, metrics, docs and /ui needs `Bearer <key>`.",
    )
    api_key_file: Path | None = Field(
        None,
        validation_alias=AliasChoices("API_KEY_FILE", "MNIST_API_KEY_FILE"),
        description="File holding the API key (a Docker or Kubernetes secret); not with API_KEY.",
    )
    workers: int | Literal["auto"] = Field(
        "auto",
        description="Server worker processes; auto: the CPUs this process may use (cgroup aware).",
    )
    torch_threads: int = Field(1, ge=1, le=256, description="torch threads per worker.")
    batching: bool = Field(True, description="Adaptive batching of concurrent one-image requests.")
    max_batch_size: int = Field(64, ge=1, le=4096, description="Largest adaptive batch.")
    max_latency_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="How long a batch waits for more requests; 0: none (one event-loop turn).",
    )
    max_body_bytes_in_flight: int = Field(
        256 * 1024 * 1024, ge=1024, description="Request body bytes one worker holds at once."
    )
    max_decode_bytes_in_flight: int = Field(
        1536 * 1024 * 1024,
        ge=1024 * 1024,
        description="Peak memory of the image decodes one worker runs at once (declared cost).",
    )
    max_request_work_pixels: int = Field(
        120_000_000,
        ge=784,
        description="Decoding work one request may declare (pixels x passes; ~26 ns each).",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=600, description="Time a request's headers may take (408 after)."
    )
    body_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Time a request's body may take (408 after)."
    )
    drain_s: float = Field(
        2.0,
        ge=0,
        le=60,
        description="After SIGTERM: seconds /readyz answers 503 (all else served) before shutdown.",
    )
    access_log: bool = Field(False, description="One line per request on the service.access log.")
    tracing: bool = Field(False, description="OpenTelemetry spans for the prediction routes too.")
    lean_path: bool = Field(
        True, description="Serve the API routes ahead of BentoML's middleware stack (measured)."
    )
    max_upload_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Largest accepted image upload body (413 above)."
    )
    max_json_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest accepted JSON body (413 above)."
    )
    max_bulk_images: int = Field(
        100_000, ge=1, description="Most images in one /predict_bulk body."
    )
    max_batch_images: int = Field(
        4096, ge=1, description="Most images in one /predict or /predict_images request."
    )
    max_image_pixels: int = Field(
        MAX_IMAGE_PIXELS, ge=784, description="Largest decoded image (width x height) accepted."
    )

    @model_validator(mode="after")
    def _key_from_file(self) -> ServiceSettings:
        if self.api_key_file is None:
            return self
        if self.api_key is not None:
            raise ValueError("set API_KEY or API_KEY_FILE, not both")
        try:
            key = self.api_key_file.read_text().strip()
        except OSError as exc:
            raise ValueError(
                f"cannot read API_KEY_FILE {self.api_key_file}: {exc.strerror}"
            ) from None
        if not key:
            raise ValueError(f"{self.api_key_file} is empty")
        object.__setattr__(self, "api_key", SecretStr(key))
        return self

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        if isinstance(value, str | int) and str(value).strip().isdigit():
            if not 1 <= int(value) <= 64:
                raise ValueError("must be auto or a whole number from 1 to 64")
            return int(value)
        raise ValueError("must be auto or a whole number from 1 to 64")

    @field_validator("model_tag", mode="before")
    @classmethod
    def _model_tag(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None  # a Dockerfile cannot leave an ENV unset: empty means no tag
        if isinstance(value, str) and not MODEL_TAG.fullmatch(value):
            raise ValueError("must be a BentoML tag NAME:VERSION, such as mnist-mlp:abc123")
        return value

    @property
    def worker_count(self) -> int:
        return usable_cpus() if self.workers == "auto" else self.workers

    @field_validator("model_path", "api_key", mode="before")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        # `API_KEY=` would be matched by a bare `Authorization: Bearer`; `MODEL_PATH=` means "."
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty; unset the variable instead")
        return value


def load_settings() -> ServiceSettings:
    """Read the settings; a bad value is a one-line error naming the variable."""
    try:
        return ServiceSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{_variable(err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise SystemExit(f"error: invalid service settings: {problems}") from None


def _variable(loc: tuple) -> str:
    """The environment variable behind an error location.

    Plain fields report their field name (`workers` -> MNIST_WORKERS); pydantic reports aliased
    ones by their first alias, so name the alias that is actually set (API_KEY or MNIST_API_KEY).
    """
    if not loc:
        return "API_KEY_FILE"  # the one check across fields
    name = str(loc[0])
    field = ServiceSettings.model_fields.get(name)
    if field is not None:
        return "MNIST_" + name.upper()
    for field in ServiceSettings.model_fields.values():
        choices = getattr(field.validation_alias, "choices", [])
        if name in choices:
            given = [alias for alias in choices if alias.upper() in map(str.upper, os.environ)]
            return (given or choices)[0]
    return name


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 (or v1) CPU quota.

    `docker run --cpus 1.5` or a Kubernetes CPU limit shows up only as a quota, not in the mask.
    """
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_quota(root: Path) -> float | None:
    try:
        max_line = (root / "cpu.max").read_text().split()  # v2: "<quota> <period>" or "max ..."
        if max_line and max_line[0] != "max":
            return int(max_line[0]) / int(max_line[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:  # v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None
