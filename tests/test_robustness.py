"""The robustness suite: deterministic, made of real upload-like files, and gated on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.pipeline.gate import (
    DIGITS_FLAGGED,
    FLOOR,
    NOT_DIGITS_FLAGGED,
    REGRESSION,
    ROBUSTNESS,
    Baseline,
    gate,
)
from training.pipeline.report import jsonable, refusals
from training.pipeline.robustness import (
    DIGIT_CATEGORIES,
    NOT_DIGITS,
    available_fonts,
    build_suite,
    score_suite,
    stroke_digit,
)


@pytest.fixture(scope="module")
def test_digits(mnist_test) -> tuple[np.ndarray, np.ndarray]:
    images, labels = mnist_test
    pixels = (images[:300] * 255).round().to(dtype=torch.uint8)
    return pixels.reshape(-1, 28, 28).numpy(), labels[:300].numpy()


@pytest.fixture(scope="module")
def small_suite(test_digits):
    return build_suite(*test_digits, count=30, seed=0)


def test_every_category_is_built_through_the_service_preprocessing(small_suite):
    names = [part.name for part in small_suite]
    assert names == [c.name for c in DIGIT_CATEGORIES + NOT_DIGITS]
    for part in small_suite:
        assert part.images.shape[1:] == (784,) and part.images.dtype == np.float32
        assert part.images.min() >= 0 and part.images.max() <= 1
        assert len(part.images) + part.refused == 30, part.name
    digits = {c.name for c in DIGIT_CATEGORIES}
    for part in small_suite:
        if part.name in digits:
            assert set(part.labels.tolist()) <= set(range(10))
        else:
            assert (part.labels == -1).all()


def test_the_font_packages_are_installed_so_the_fonts_category_is_not_empty(small_suite):
    assert available_fonts(), "scripts/system-deps.sh installs the handwriting fonts"
    fonts = next(part for part in small_suite if part.name == "fonts")
    assert len(fonts.images) == 30


def test_the_suite_is_the_same_every_time(test_digits, small_suite):
    again = build_suite(*test_digits, count=30, seed=0)
    for a, b in zip(small_suite, again, strict=True):
        np.testing.assert_array_equal(a.images, b.images)
    other = build_suite(*test_digits, count=30, seed=1)
    assert any(
        not np.array_equal(a.images, b.images) for a, b in zip(small_suite, other, strict=True)
    )


def test_drawn_digits_look_like_the_web_page_pad():
    pad = np.asarray(stroke_digit(7, np.random.default_rng(0)))
    assert pad.shape == (280, 280)
    assert pad[0, 0] == 0 and pad.max() == 255  # white ink on a black pad
    assert 0.02 < (pad > 128).mean() < 0.3


def test_scores_come_from_the_service_inference(small_suite, calibrated_checkpoint):
    scores = score_suite(calibrated_checkpoint, small_suite)
    by_name = {s.name: s for s in scores}
    for category in DIGIT_CATEGORIES:
        score = by_name[category.name]
        assert score.digits and score.accuracy is not None and 0 <= score.accuracy <= 1
    for category in NOT_DIGITS:
        score = by_name[category.name]
        assert not score.digits and score.accuracy is None
        assert score.flagged is not None
    assert by_name["large canvas"].accuracy > 0.5  # a short robust model still reads digits
    assert by_name["noise"].flagged > 0.5


def test_seed_model_scores_no_flag_for_non_digits(small_suite, trained_checkpoint):
    scores = score_suite(trained_checkpoint, small_suite)
    assert all(s.flagged is None for s in scores if s.refused == 0)


BASELINE = Baseline("mnist-mlp:old", 0.98, True, None, None)


def test_gate_refuses_a_loss_of_more_than_one_point_in_any_category():
    decision = gate(0.985, BASELINE, robustness={"rotated": (0.90, 0.915), "jpeg": (0.99, 0.98)})
    assert not decision.passed
    assert len(decision.reasons) == 1 and "'rotated'" in decision.reasons[0]
    assert "1.50 points below" in decision.reasons[0]


def test_gate_accepts_a_loss_of_exactly_the_tolerance_and_categories_without_a_baseline():
    decision = gate(0.985, BASELINE, robustness={"rotated": (0.90, 0.91), "new": (0.5, None)})
    assert decision.passed, decision.reasons


def test_force_promotes_a_robustness_refusal_and_says_so():
    decision = gate(0.985, BASELINE, robustness={"photo": (0.5, 0.7)}, force=True)
    assert decision.promote and decision.forced and not decision.passed


def test_robustness_tolerance_is_adjustable():
    loss = {"photo": (0.65, 0.7)}
    assert not gate(0.985, BASELINE, robustness=loss).passed
    assert gate(0.985, BASELINE, robustness=loss, robustness_tolerance=6).passed


def test_gate_refuses_a_not_a_digit_category_flagged_less_often_and_names_the_rule():
    flags = {"noise": (1.0, 1.0), "text": (0.95, 0.975), "blank-ish": (0.97, None)}
    decision = gate(0.985, BASELINE, flag_rates=flags)
    assert not decision.passed
    assert decision.rules == (NOT_DIGITS_FLAGGED,)
    (reason,) = decision.reasons
    assert "'text'" in reason and "95.00 % flagged" in reason and "2.50 points below" in reason
    # exactly the tolerance passes; a promoted model without a flag has nothing to lose
    assert gate(0.985, BASELINE, flag_rates={"text": (0.965, 0.975)}).passed
    assert gate(0.985, BASELINE, flag_rates={"text": (0.5, None)}).passed
    # a candidate that lost the flag altogether (a seed-recipe model after a robust one)
    lost = gate(0.985, BASELINE, flag_rates={"text": (None, 0.975)})
    assert not lost.passed and lost.rules == (NOT_DIGITS_FLAGGED,)
    assert "no uncertain flag" in lost.reasons[0] and "97.50 %" in lost.reasons[0]
    assert gate(0.985, BASELINE, flag_rates={"text": (None, 0.975)}, force=True).forced


def test_gate_refuses_more_test_digits_flagged_than_the_tolerance_above_the_promoted_model():
    decision = gate(0.985, BASELINE, test_flagged=(0.0290, 0.0174))
    assert not decision.passed and decision.rules == (DIGITS_FLAGGED,)
    assert "2.90 %" in decision.reasons[0] and "1.16 points above" in decision.reasons[0]
    assert gate(0.985, BASELINE, test_flagged=(0.0274, 0.0174)).passed  # exactly 1 point
    assert gate(0.985, BASELINE, test_flagged=(0.0100, 0.0174)).passed  # fewer is fine
    assert gate(0.985, BASELINE, test_flagged=(0.05, None)).passed  # promoted model: no flag
    assert gate(0.985, BASELINE, test_flagged=(0.03, 0.0174), robustness_tolerance=2).passed


def test_every_reason_comes_with_its_rule_and_the_report_names_it():
    decision = gate(
        0.97,
        BASELINE,
        robustness={"rotated": (0.80, 0.93)},
        flag_rates={"noise": (0.5, 1.0)},
        test_flagged=(0.05, 0.01),
    )
    assert decision.rules == (FLOOR, REGRESSION, ROBUSTNESS, NOT_DIGITS_FLAGGED, DIGITS_FLAGGED)
    lines = refusals(jsonable(decision.as_dict()))
    assert len(lines) == 5
    assert lines[0].startswith("the floor rule: candidate test accuracy 97.00 %")
    assert lines[3].startswith("the not-a-digit flag rate rule: not-a-digit category 'noise'")
    assert lines[4].startswith("the test digits flagged rule: 5.00 % of the MNIST test digits")
