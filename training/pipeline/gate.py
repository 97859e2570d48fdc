"""The promotion gate: may a candidate replace the served model? Pure rules, no I/O.

Accuracies are fractions in [0, 1]; the floor is in percent and the tolerance in percentage points,
as on the command line. docs/retraining.md states the rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

MIN_ACCURACY = 97.5  # percent
TOLERANCE = 0.2  # percentage points
ROBUSTNESS_TOLERANCE = 1.0  # percentage points a robustness category may lose
# The names of the rules, as the report shows which one refused a candidate.
FLOOR, REGRESSION, ROBUSTNESS = "floor", "no regression", "robustness"
NOT_DIGITS_FLAGGED, DIGITS_FLAGGED = "not-a-digit flag rate", "test digits flagged"
EPSILON = 1e-6  # accuracies are multiples of 0.01 %; this only absorbs float rounding


@dataclass(frozen=True)
class Baseline:
    """The model the service serves now, i.e. what a promotion would replace."""

    tag: str
    test_accuracy: float  # 0-1
    promoted: bool  # carries stage=production (else it is served as the newest model)
    sha256: str | None
    weights_sha256: str | None
    checkpoint: str | None = None  # its file in the store, to score the robustness suite


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    forced: bool
    candidate_accuracy: float  # 0-1
    baseline: Baseline | None
    min_accuracy: float  # percent
    tolerance: float  # percentage points
    reasons: tuple[str, ...]  # why it was refused; empty when it passed
    # per robustness category: (candidate accuracy, promoted model's accuracy or None), 0-1
    robustness: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    robustness_tolerance: float = ROBUSTNESS_TOLERANCE
    # per not-a-digit category: (candidate's flagged share, promoted model's or None), 0-1
    flag_rates: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    # share of the MNIST test digits flagged: (candidate, promoted model), None where unflagged
    test_flagged: tuple[float | None, float | None] = (None, None)
    rules: tuple[str, ...] = ()  # the rule behind each reason, in the same order

    @property
    def promote(self) -> bool:
        return self.passed or self.forced

    @property
    def decision(self) -> str:
        return "accept" if self.passed else "refuse"

    def summary(self) -> str:
        candidate = f"candidate {100 * self.candidate_accuracy:.2f} %"
        if self.baseline is None:
            against = f"no promoted model yet, floor {self.min_accuracy:.2f} %"
        else:
            against = (
                f"promoted {self.baseline.tag} {100 * self.baseline.test_accuracy:.2f} % "
                f"(tolerance {self.tolerance:g} points), floor {self.min_accuracy:.2f} %"
            )
        verdict = "accepted" if self.passed else ("REFUSED, FORCED" if self.forced else "REFUSED")
        return f"{verdict}: {candidate} vs {against}"

    def as_dict(self) -> dict[str, Any]:
        """The fields plus `decision`, `promoted` and `summary`, for the report."""
        return {
            **asdict(self),
            "decision": self.decision,
            "promoted": self.promote,
            "summary": self.summary(),
        }


def gate(
    candidate_accuracy: float,
    baseline: Baseline | None,
    *,
    min_accuracy: float = MIN_ACCURACY,
    tolerance: float = TOLERANCE,
    force: bool = False,
    robustness: Mapping[str, tuple[float, float | None]] | None = None,
    robustness_tolerance: float = ROBUSTNESS_TOLERANCE,
    flag_rates: Mapping[str, tuple[float | None, float | None]] | None = None,
    test_flagged: tuple[float | None, float | None] = (None, None),
) -> GateDecision:
    """Refuse below the floor, more than `tolerance` points below the promoted model on the
    MNIST test set, or, against the promoted model by more than `robustness_tolerance` points:
    lower accuracy in any robustness digit category (`robustness`: name -> (candidate, promoted
    model)), a lower flagged share in any not-a-digit category (`flag_rates`, likewise), or a
    higher share of the MNIST test digits flagged (`test_flagged`). None: not scored, not compared.

    Without a promoted model only the floor applies. Equal to a limit is not "below" it.
    `force` promotes a refused candidate; it marks the decision `forced` only when it was needed.
    """
    candidate = 100 * candidate_accuracy
    reasons: list[str] = []
    rules: list[str] = []

    def refuse(rule: str, reason: str) -> None:
        rules.append(rule)
        reasons.append(reason)

    if candidate < min_accuracy - EPSILON:
        refuse(
            FLOOR,
            f"candidate test accuracy {candidate:.2f} % is below the floor of "
            f"{min_accuracy:.2f} % (--min-accuracy)",
        )
    if baseline is not None:
        current = 100 * baseline.test_accuracy
        if current - candidate > tolerance + EPSILON:
            refuse(
                REGRESSION,
                f"candidate test accuracy {candidate:.2f} % is {current - candidate:.2f} "
                f"percentage points below the promoted model {baseline.tag} at {current:.2f} % "
                f"(--tolerance {tolerance:g})",
            )
    robustness = dict(robustness or {})
    for name, (ours, theirs) in robustness.items():
        if theirs is not None and 100 * (theirs - ours) > robustness_tolerance + EPSILON:
            refuse(
                ROBUSTNESS,
                f"robustness category {name!r}: {100 * ours:.2f} % is {100 * (theirs - ours):.2f} "
                f"points below the promoted model's {100 * theirs:.2f} % "
                f"(--robustness-tolerance {robustness_tolerance:g})",
            )
    flag_rates = dict(flag_rates or {})
    for name, (flagged, promoted) in flag_rates.items():
        if promoted is None:  # the promoted model has no flag (the seed recipe): nothing to lose
            continue
        if flagged is None:
            refuse(
                NOT_DIGITS_FLAGGED,
                f"not-a-digit category {name!r}: the candidate has no uncertain flag (trained "
                "without a held-out slice to calibrate it, as the seed recipe is) and the "
                f"promoted model flags {100 * promoted:.2f} %",
            )
            continue
        if 100 * (promoted - flagged) > robustness_tolerance + EPSILON:
            refuse(
                NOT_DIGITS_FLAGGED,
                f"not-a-digit category {name!r}: {100 * flagged:.2f} % flagged is "
                f"{100 * (promoted - flagged):.2f} points below the promoted model's "
                f"{100 * promoted:.2f} % (--robustness-tolerance {robustness_tolerance:g})",
            )
    ours_flagged, theirs_flagged = test_flagged
    if ours_flagged is not None and theirs_flagged is not None:
        rise = 100 * (ours_flagged - theirs_flagged)
        if rise > robustness_tolerance + EPSILON:
            refuse(
                DIGITS_FLAGGED,
                f"{100 * ours_flagged:.2f} % of the MNIST test digits flagged uncertain is "
                f"{rise:.2f} points above the promoted model's {100 * theirs_flagged:.2f} % "
                f"(--robustness-tolerance {robustness_tolerance:g})",
            )
    return GateDecision(
        passed=not reasons,
        forced=force and bool(reasons),
        candidate_accuracy=candidate_accuracy,
        baseline=baseline,
        min_accuracy=min_accuracy,
        tolerance=tolerance,
        reasons=tuple(reasons),
        robustness=robustness,
        robustness_tolerance=robustness_tolerance,
        flag_rates=flag_rates,
        test_flagged=test_flagged,
        rules=tuple(rules),
    )
