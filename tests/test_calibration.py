"""Temperature scaling, the expected calibration error and the not-a-digit flag."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.calibration import (
    Calibration,
    calibrate,
    calibrated,
    expected_calibration_error,
    fit_temperature,
    reliability,
    uncertain,
)


def overconfident(n: int = 4000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Calibrated logits (labels drawn from their softmax), then multiplied by 4."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 10, generator=g) * 2
    labels = torch.multinomial(logits.softmax(1), 1, generator=g).squeeze(1)
    return logits * 4, labels


def test_fit_temperature_undoes_a_known_scaling():
    logits, labels = overconfident()
    temperature = fit_temperature(logits, labels)
    assert 3.0 < temperature < 5.0  # the logits were multiplied by 4


def test_temperature_scaling_lowers_the_calibration_error():
    logits, labels = overconfident()
    before = expected_calibration_error(logits.softmax(1), labels)
    after = expected_calibration_error(
        (logits / fit_temperature(logits, labels)).softmax(1), labels
    )
    assert before > 0.1
    assert after < 0.03


def test_ece_is_zero_when_confidence_matches_accuracy():
    probabilities = torch.full((10, 10), 0.0)
    probabilities[:, 0] = 1.0
    labels = torch.zeros(10, dtype=torch.long)
    assert expected_calibration_error(probabilities, labels) == 0.0
    rows = reliability(probabilities, labels)
    assert sum(r["count"] for r in rows) == 10
    assert rows[-1]["accuracy"] == 1.0


def test_calibrate_flags_about_the_asked_share_of_heldout_digits_and_round_trips():
    torch.manual_seed(0)
    model = nn.Linear(784, 10)
    images = torch.rand(3000, 784)
    labels = model(images).argmax(1)
    calibration = calibrate(model, images, labels, flag_rate=0.02)
    assert 0.015 < calibration.heldout_flagged <= 0.04
    assert Calibration.from_dict(calibration.as_dict()) == calibration


def test_uncertain_flags_flat_answers_and_passes_sharp_ones():
    calibration = Calibration(
        1.0, min_confidence=0.5, max_energy=-5.0, heldout_images=1, heldout_flagged=0.0
    )
    sharp = torch.zeros(1, 10)
    sharp[0, 3] = 20.0
    flat = torch.zeros(1, 10)
    assert uncertain(sharp, calibration).tolist() == [False]
    assert uncertain(flat, calibration).tolist() == [True]


def test_calibrated_matches_the_textbook_definitions():
    """softmax(logits / T), and flagged when its max is under min_confidence or the energy
    -T * logsumexp(logits / T) over max_energy; computed here in float64 with torch."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5000, 10, generator=g) * torch.rand(5000, 1, generator=g) * 12
    temperature = 1.7
    exact = (logits.double() / temperature).softmax(1)
    confidence = exact.amax(1)
    energies = -temperature * torch.logsumexp(logits.double() / temperature, dim=1)
    calibration = Calibration(
        temperature,
        min_confidence=float(confidence.quantile(0.2)),
        max_energy=float(energies.quantile(0.8)),
        heldout_images=1,
        heldout_flagged=0.0,
    )
    probabilities, flags = calibrated(logits, calibration)
    assert probabilities.dtype == torch.float32
    torch.testing.assert_close(probabilities.double(), exact, atol=1e-6, rtol=1e-5)
    expected = (confidence < calibration.min_confidence) | (energies > calibration.max_energy)
    clear = ((confidence - calibration.min_confidence).abs() > 1e-5) & (
        (energies - calibration.max_energy).abs() > 1e-4
    )  # float32 rounding may decide the few right at a threshold either way
    assert 0.2 < float(expected.double().mean()) < 0.45  # both rules flag, neither all
    assert torch.equal(flags[clear], expected[clear])


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "temperature": 0,
            "min_confidence": 0.5,
            "max_energy": 1,
            "heldout_images": 1,
            "heldout_flagged": 0,
        },
        {
            "temperature": float("nan"),
            "min_confidence": 0.5,
            "max_energy": 1,
            "heldout_images": 1,
            "heldout_flagged": 0,
        },
        {
            "temperature": "x",
            "min_confidence": 0.5,
            "max_energy": 1,
            "heldout_images": 1,
            "heldout_flagged": 0,
        },
    ],
)
def test_malformed_calibration_is_refused(values):
    with pytest.raises(ValueError, match="calibration is malformed"):
        Calibration.from_dict(values)
