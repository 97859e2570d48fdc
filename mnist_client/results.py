"""The service's answers as typed objects, read from its JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Prediction:
    """One image's answer: the digit, its probability, and the probability of each digit 0-9;
    `uncertain` when the server flags it (None when it does not say)."""

    digit: int
    confidence: float
    probabilities: list[float]
    uncertain: bool | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Prediction:
        digit, confidence = int(body["digit"]), float(body["confidence"])
        return cls(digit, confidence, list(body["probabilities"]), body.get("uncertain"))


@dataclass(frozen=True)
class BulkPrediction:
    """`/predict_bulk`'s answer: a digit and a confidence per image, in input order."""

    count: int
    digits: list[int]
    confidences: list[float]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> BulkPrediction:
        return cls(int(body["count"]), list(body["digits"]), list(body["confidences"]))
