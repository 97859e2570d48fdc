"""Serving's model side: where the checkpoint comes from; arrays in, probabilities out.

torch is imported when a model is loaded, not with this module, so that `bentoml serve`'s
supervisor process (which imports the service only to read its configuration) stays small.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.open_inference import model_version


@dataclass(frozen=True)
class ModelSource:
    path: Path
    # The BentoML store tag: of the entry served, or the one a plain file was promoted as
    # (MNIST_MODEL_TAG, set by the Docker image); None when unknown.
    tag: str | None
    from_store: bool = False


class Classifier:
    """A loaded MLP plus the metadata that describes it; thread-safe for inference."""

    def __init__(self, source: ModelSource) -> None:
        import torch

        from training import Checkpoint
        from training.calibration import calibrated_array

        self.torch, self.calibrated = torch, calibrated_array  # imported once, not on every batch
        checkpoint = Checkpoint.load(source.path)  # raises CheckpointError with a one-line reason
        self.model = checkpoint.model
        self.metadata: dict[str, Any] = checkpoint.metadata
        self.source = source
        self.calibration = checkpoint.calibration  # None: probabilities as trained, no flag

    def outputs(self, images: np.ndarray) -> np.ndarray:
        """(N, 784) float32 in [0, 1] -> (N, 11) float32: the 10 calibrated probabilities, then
        the uncertain flag (1 not a digit the model knows, 0 a digit, NaN: model not calibrated).

        One array so the batcher can hand each request its rows without knowing what they hold.
        Only the forward pass is torch; the rest is NumPy on the (N, 10) logits, where torch's
        per-op cost dominates a one-image request (see `training.calibration.calibrated_array`).
        """
        torch = self.torch
        outputs = np.empty((len(images), UNCERTAIN + 1), np.float32)
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(images))
            if self.calibration is None:
                outputs[:, :UNCERTAIN] = logits.softmax(dim=1).numpy()
                outputs[:, UNCERTAIN] = np.nan
                return outputs
            logits = logits.numpy()
        outputs[:, :UNCERTAIN], outputs[:, UNCERTAIN] = self.calibrated(logits, self.calibration)
        return outputs

    def info(self) -> dict[str, Any]:
        meta = self.metadata
        metrics = meta.get("metrics", {})
        return {
            "tag": self.source.tag,
            "version": model_version(self.source.tag, meta["sha256"]),
            "source": "bentoml-store" if self.source.from_store else "file",
            "sha256": meta["sha256"],
            "weights_sha256": meta["weights_sha256"],
            "architecture": meta["architecture"],
            "config": meta.get("config", {}),
            "test_accuracy": metrics.get("test_accuracy"),
            "history": metrics.get("history", []),
            "data_md5": meta.get("data_md5", {}),
            "torch_version": meta.get("torch_version", ""),
            "git_commit": meta.get("git_commit"),
            "created_at": meta.get("created_at", ""),
            "calibration": {**(meta.get("calibration") or {}), **metrics.get("calibration", {})}
            or None,
        }


PROBABILITY_DECIMALS = 6  # float32 carries ~7 digits; more would only be noise on the wire


UNCERTAIN = 10  # the column of `Classifier.outputs` that holds the flag


def probabilities_of(outputs: np.ndarray) -> np.ndarray:
    """The (N, 10) probabilities of `Classifier.outputs` rows."""
    return outputs[..., :UNCERTAIN]


def uncertain_of(outputs: np.ndarray) -> list[bool | None]:
    """The flag of each `Classifier.outputs` row: True, False, or None (not calibrated)."""
    flags = outputs[..., UNCERTAIN]
    if np.isnan(flags).any():  # a model is calibrated or not: all rows are NaN then
        return [None] * len(flags)
    return (flags > 0.5).tolist()


def prediction(row: np.ndarray) -> dict[str, Any]:
    """One outputs row as the public `{"digit", "confidence", "probabilities", "uncertain"}`."""
    return predictions(row[np.newaxis])[0]


def predictions(rows: np.ndarray) -> list[dict[str, Any]]:
    """`prediction` of each outputs row, with one numpy call per batch instead of per row
    (building 256 answers one by one was a quarter of a /predict request's time)."""
    probabilities = probabilities_of(rows)
    rounded = np.round(probabilities.astype(np.float64), PROBABILITY_DECIMALS).tolist()
    digits = np.argmax(probabilities, axis=1).tolist()
    return [
        {"digit": digit, "confidence": row[digit], "probabilities": row, "uncertain": flag}
        for digit, row, flag in zip(digits, rounded, uncertain_of(rows), strict=True)
    ]
