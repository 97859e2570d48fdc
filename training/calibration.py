"""Calibrated confidence and the "not a digit" flag, fitted on held-out training images.

Temperature scaling (Guo et al., 2017) divides the logits by one number T, fitted to minimise
the negative log-likelihood on images the model did not train on: the argmax never changes,
but "0.9 confident" then means right about 90 % of the time. The flag marks an input as
`uncertain` when its calibrated confidence is below `min_confidence` or its energy score
(-T * logsumexp(logits / T), Liu et al., 2020) is above `max_energy`; both thresholds are
quantiles of the held-out digits, so about `flag_rate` of real digits are flagged.
Everything here is a pure function of tensors or arrays; the checkpoint stores
`Calibration.as_dict()`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

ECE_BINS = 15
FLAG_RATE = 0.01  # share of held-out digits each threshold flags (together at most twice it)


@dataclass(frozen=True)
class Calibration:
    temperature: float
    min_confidence: float  # calibrated top probability below this: uncertain
    max_energy: float  # energy score above this: uncertain
    heldout_images: int
    heldout_flagged: float  # share of the held-out digits the two rules flag together

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Calibration:
        """Raises ValueError unless every field is there as a finite number, T > 0."""
        try:
            calibration = cls(
                temperature=float(values["temperature"]),
                min_confidence=float(values["min_confidence"]),
                max_energy=float(values["max_energy"]),
                heldout_images=int(values["heldout_images"]),
                heldout_flagged=float(values["heldout_flagged"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"calibration is malformed: {exc}") from None
        numbers = (calibration.temperature, calibration.min_confidence, calibration.max_energy)
        if not all(torch.isfinite(torch.tensor(numbers))) or calibration.temperature <= 0:
            raise ValueError("calibration is malformed: non-finite or non-positive values")
        return calibration


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T); optimised in log T with L-BFGS."""
    log_t = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    nll = nn.CrossEntropyLoss()
    logits = logits.detach().float()

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = nll(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def uncertain(logits: Tensor, calibration: Calibration) -> Tensor:
    """(N,) bool: the flag, from raw logits."""
    return calibrated(logits, calibration)[1]


def calibrated(logits: Tensor, calibration: Calibration) -> tuple[Tensor, Tensor]:
    """(N, 10) calibrated probabilities and the (N,) bool flag, from raw logits.

    `calibrated_array` on the logits' values (returned on the CPU): the flag rates training,
    the gate and the robustness suite measure come from the same function as the service's
    answers.
    """
    probabilities, flags = calibrated_array(logits.detach().cpu().numpy(), calibration)
    return torch.from_numpy(probabilities), torch.from_numpy(flags)


def calibrated_array(logits: np.ndarray, calibration: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """`calibrated` for (N, 10) float32 logits as NumPy arrays: the service's hot path."""
    probabilities, confidence, energies = scores(logits, calibration.temperature)
    flags = (confidence < calibration.min_confidence) | (energies > calibration.max_energy)
    return probabilities, flags


def scores(logits: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: softmax(logits / T), its max (the confidence) and the energy score
    -T * logsumexp(logits / T), low for inputs like the training digits, high for others.

    What the flag compares and what its thresholds are fitted on, so both are one arithmetic.
    NumPy rather than torch: for one image, with the CPU caches cold as they are in a server
    between requests, the seven torch ops this took cost 140-160 us (of a ~300 us pass), the
    NumPy arithmetic 50-65 us (docs/benchmarks.md). One scaling and one exponentiation.
    """
    temperature = logits.dtype.type(temperature)
    scaled = logits / temperature
    top = scaled.max(axis=1, keepdims=True)
    exps = np.exp(scaled - top)
    totals = exps.sum(axis=1, keepdims=True)
    # The top class's exp is exp(0) = 1 exactly, so its probability (the confidence) is
    # 1 / total; logsumexp(logits / T) is top + log(total).
    confidence = (1 / totals)[:, 0]
    energies = (-temperature * (top + np.log(totals)))[:, 0]
    return exps / totals, confidence, energies


def reliability(
    probabilities: Tensor, labels: Tensor, bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """Per confidence bin: its range, how many predictions, mean confidence and accuracy."""
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    rows = []
    for low, high in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        inside = (confidence > low) & (confidence <= high)
        count = int(inside.sum())
        rows.append(
            {
                "low": low,
                "high": high,
                "count": count,
                "confidence": float(confidence[inside].mean()) if count else 0.0,
                "accuracy": float(correct[inside].mean()) if count else 0.0,
            }
        )
    return rows


def expected_calibration_error(
    probabilities: Tensor, labels: Tensor, bins: int = ECE_BINS
) -> float:
    """The count-weighted mean gap between confidence and accuracy over equal-width bins."""
    total = len(labels)
    return sum(
        row["count"] / total * abs(row["confidence"] - row["accuracy"])
        for row in reliability(probabilities, labels, bins)
    )


@torch.no_grad()
def calibrate(
    model: nn.Module, images: Tensor, labels: Tensor, flag_rate: float = FLAG_RATE
) -> Calibration:
    """Fit T and the two flag thresholds on held-out digits (never the test set)."""
    model.eval()
    logits = model(images)
    with torch.enable_grad():
        temperature = fit_temperature(logits, labels)
    _, confidence, energies = scores(logits.cpu().numpy(), temperature)
    fitted = Calibration(
        temperature=temperature,
        min_confidence=float(np.quantile(confidence, flag_rate)),
        max_energy=float(np.quantile(energies, 1 - flag_rate)),
        heldout_images=len(labels),
        heldout_flagged=0.0,
    )
    flagged = float(uncertain(logits, fitted).float().mean())
    return Calibration(**{**fitted.as_dict(), "heldout_flagged": flagged})


@torch.no_grad()
def calibration_report(
    model: nn.Module, calibration: Calibration | None, images: Tensor, labels: Tensor
) -> dict[str, Any]:
    """ECE before and after temperature scaling, reliability rows and the flag rate, on a set."""
    model.eval()
    logits = model(images)
    before = logits.softmax(dim=1)
    report: dict[str, Any] = {
        "ece_before": expected_calibration_error(before, labels),
        "reliability_before": reliability(before, labels),
    }
    if calibration is not None:
        after = (logits / calibration.temperature).softmax(dim=1)
        report |= {
            "temperature": calibration.temperature,
            "ece_after": expected_calibration_error(after, labels),
            "reliability_after": reliability(after, labels),
            "flagged": float(uncertain(logits, calibration).float().mean()),
        }
    return report
