"""The build report: report.json, report.md and PNG plots, published as one complete folder.

Files are written into a hidden temp folder beside the destination and renamed into place at
the end, so a report folder is either complete or absent, and an existing one is never changed.
Plots use matplotlib's Agg renderer through `Figure` objects (no pyplot, no display needed).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

DPI = 100
PLOTS = {
    "training_curves": "training_curves.png",
    "confusion_matrix": "confusion_matrix.png",
    "misclassified": "misclassified.png",
    "reliability": "reliability.png",
}
GRID_ROWS, GRID_COLS = 4, 6
WORST_EXAMPLES = GRID_ROWS * GRID_COLS


@dataclass(frozen=True)
class Misclassified:
    """One test digit the model got wrong, and how sure it was of the wrong answer."""

    index: int  # position in the MNIST test set
    image: np.ndarray  # (28, 28) floats in [0, 1], white digit on black
    true: int
    predicted: int
    confidence: float


@dataclass
class ErrorAnalysis:
    """Where a model goes wrong on a labelled set: the confusion matrix and the worst digits."""

    confusion: np.ndarray  # (10, 10) counts, rows = true digit, columns = predicted
    misclassified: list[Misclassified]  # most confident first

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    @property
    def total(self) -> int:
        return int(self.confusion.sum())

    @property
    def per_class_accuracy(self) -> list[float]:
        return (np.diag(self.confusion) / np.maximum(self.confusion.sum(axis=1), 1)).tolist()


@torch.no_grad()
def analyse_errors(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, worst: int = WORST_EXAMPLES
) -> ErrorAnalysis:
    """One forward pass of an eval-mode model; predictions are the argmax, as in `evaluate`."""
    logits = model(images)
    predicted = logits.argmax(dim=1)
    confidence = logits.softmax(dim=1).gather(1, predicted[:, None]).squeeze(1)
    confusion = np.zeros((logits.shape[1], logits.shape[1]), dtype=np.int64)
    np.add.at(confusion, (labels.numpy(), predicted.numpy()), 1)
    wrong = (predicted != labels).nonzero().flatten()
    order = wrong[confidence[wrong].argsort(descending=True, stable=True)][:worst]
    examples = [
        Misclassified(
            index=int(i),
            image=images[i].reshape(28, 28).numpy().copy(),
            true=int(labels[i]),
            predicted=int(predicted[i]),
            confidence=float(confidence[i]),
        )
        for i in order
    ]
    return ErrorAnalysis(confusion, examples)


def _figure(width_px: int, height_px: int):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")


def plot_training_curves(history: Sequence[Mapping[str, float]], path: Path) -> None:
    """Loss (left) and train/test accuracy in % (right) per epoch, 1200 x 600 px."""
    epochs = [h["epoch"] for h in history]
    fig = _figure(1200, 600)
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [h["loss"] for h in history], "o-", color="tab:red")
    loss_ax.set(title="Training loss", xlabel="epoch", ylabel="mean loss per image")
    acc_ax.plot(epochs, [100 * h["train_accuracy"] for h in history], "o-", label="train")
    acc_ax.plot(epochs, [100 * h["test_accuracy"] for h in history], "s-", label="test")
    acc_ax.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    acc_ax.legend(loc="lower right")
    for ax in (loss_ax, acc_ax):
        ax.set_xticks(epochs if len(epochs) <= 20 else ax.get_xticks())
        ax.grid(alpha=0.3)
    fig.savefig(path, format="png")


def plot_confusion_matrix(confusion: np.ndarray, path: Path) -> None:
    """Counts per (true, predicted) pair; colour is the share of the true class, 800 x 700 px."""
    confusion = np.asarray(confusion)
    share = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig = _figure(800, 700)
    ax = fig.subplots()
    shown = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, label="share of the true digit")
    for (row, col), count in np.ndenumerate(confusion):
        if count:
            color = "white" if share[row, col] > 0.5 else "black"
            ax.text(col, row, str(count), ha="center", va="center", fontsize=8, color=color)
    ticks = range(confusion.shape[0])
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted digit", ylabel="true digit")
    ax.set_title(f"Confusion matrix ({int(confusion.sum()):,} test images)")
    fig.savefig(path, format="png")


def plot_misclassified(examples: Sequence[Misclassified], path: Path) -> None:
    """The most confidently wrong test digits, titled true/predicted/confidence, 900 x 760 px."""
    fig = _figure(900, 760)
    axes = fig.subplots(GRID_ROWS, GRID_COLS)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, example in zip(axes.flat, examples, strict=False):
        ax.imshow(example.image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(
            f"true {example.true}, pred {example.predicted}\n"
            f"{100 * example.confidence:.1f} % (#{example.index})",
            fontsize=9,
        )
    if not examples:
        fig.text(0.5, 0.5, "no misclassified test digits", ha="center", va="center")
    fig.suptitle("Most confidently misclassified test digits")
    fig.savefig(path, format="png")


def plot_reliability(calibration: Mapping[str, Any], path: Path) -> None:
    """Accuracy against confidence per bin, before and after temperature scaling, 700 x 600 px.

    A calibrated model's bars sit on the diagonal; bars below it are over-confident.
    """
    fig = _figure(700, 600)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    for key, label, style in (
        ("reliability_before", f"before (ECE {100 * calibration['ece_before']:.2f} %)", "o-"),
        ("reliability_after", "after temperature scaling (ECE {:.2f} %)", "s-"),
    ):
        rows = [r for r in calibration.get(key) or [] if r["count"]]
        if not rows:
            continue
        if key == "reliability_after":
            label = label.format(100 * calibration["ece_after"])
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], style, label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    ax.set_title("Reliability on the MNIST test set")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.savefig(path, format="png")


def robustness_rows(candidate: Sequence[Any], baseline: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per category: the candidate's score, the promoted model's, the difference."""
    theirs = {s.name: s for s in baseline}
    rows = []
    for ours in candidate:
        other = theirs.get(ours.name)
        row = {**asdict(ours), "baseline_accuracy": None, "baseline_flagged": None}
        if other is not None:
            row |= {"baseline_accuracy": other.accuracy, "baseline_flagged": other.flagged}
        rows.append(row)
    return rows


def jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays become numbers/lists, paths strings, NaN null."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def refusals(gate: Mapping[str, Any]) -> list[str]:
    """Each reason the gate refused, after the rule that refused it: "the floor rule: ..."."""
    rules = gate.get("rules") or [None] * len(gate["reasons"])
    return [
        f"the {rule} rule: {reason}" if rule else reason
        for rule, reason in zip(rules, gate["reasons"], strict=True)
    ]


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def render_markdown(report: Mapping[str, Any]) -> str:
    """A human summary of report.json, embedding the plots by relative path."""
    model, gate = report["model"], report["gate"]
    baseline = gate.get("baseline") or {}
    image = report.get("image") or {}
    title = model.get("tag") or report["name"]
    lines = [f"# Retraining report: {title}", ""]
    status = report["status"].upper()
    if gate.get("forced"):
        lines += [
            f"> **FORCED**: the gate refused this candidate and `--force` promoted it: "
            f"{'; '.join(refusals(gate))}.",
            "",
        ]
    for error in report.get("errors") or []:
        lines += [f"> **ERROR after promotion**: {error}", ""]
    lines += [
        _row("", ""),
        _row("---", "---"),
        _row("status", f"**{status}**"),
        _row(
            "candidate test accuracy",
            f"**{_percent(model['test_accuracy'])}** "
            f"({model['test_correct']:,} / {model['test_total']:,})",
        ),
        _row(
            "promoted model before",
            f"{baseline.get('tag') or 'none'} ({_percent(baseline.get('test_accuracy'))})",
        ),
        _row("gate", gate["summary"]),
        _row("store tag", model.get("tag") or "not registered"),
        _row("weights sha256 (model identity)", f"`{model['weights_sha256']}`"),
        _row("checkpoint file sha256", f"`{model['file_sha256']}`"),
        _row("checkpoint", report.get("artifacts", {}).get("checkpoint") or "not written"),
        _row("image", ", ".join(image.get("tags") or []) or f"not built ({image.get('note', '')})"),
        *([_row("deployed", report["deploy"]["note"])] if report.get("deploy") else []),
        _row("git commit", model.get("git_commit") or "unknown"),
        _row("created at", model.get("created_at")),
        _row("total time", f"{report['total_seconds']:.1f} s"),
        "",
        "## Gate",
        "",
        f"- floor (`--min-accuracy`): {gate['min_accuracy']:.2f} %",
        f"- tolerance against the promoted model (`--tolerance`): {gate['tolerance']:g} "
        "percentage points",
        f"- robustness (`--robustness-tolerance`): at most {gate['robustness_tolerance']:g} "
        "points worse than the promoted model in each digit category's accuracy, each "
        "not-a-digit category's flagged share and the share of MNIST test digits flagged",
        f"- decision: **{gate['decision']}**" + (" (forced)" if gate.get("forced") else ""),
    ]
    lines += [f"- refused by {refusal}" for refusal in refusals(gate)]
    lines += ["", "## Training", "", "![training curves](training_curves.png)", ""]
    lines += [_row("epoch", "loss", "train acc", "test acc", "seconds")]
    lines += [_row("---:", "---:", "---:", "---:", "---:")]
    for h in report["history"]:
        lines.append(
            _row(
                h["epoch"],
                f"{h['loss']:.4f}",
                _percent(h["train_accuracy"]),
                _percent(h["test_accuracy"]),
                f"{h['seconds']:.2f}",
            )
        )
    lines += ["", "## Evaluation on the MNIST test set", ""]
    lines += ["![confusion matrix](confusion_matrix.png)", ""]
    lines += [_row("digit", *range(10)), _row("---", *["---:"] * 10)]
    lines += [_row("accuracy", *[f"{100 * a:.1f}" for a in model["per_class_accuracy"]]), ""]
    lines += ["![most confidently misclassified](misclassified.png)", ""]
    lines += robustness_markdown(report.get("robustness") or [])
    lines += calibration_markdown(report.get("calibration"))
    lines += ["## Hyperparameters", "", _row("option", "value"), _row("---", "---")]
    lines += [_row(k, v) for k, v in report["hyperparameters"].items()]
    lines += [
        "",
        "## Data (MD5 of the raw MNIST files)",
        "",
        _row("file", "md5"),
        _row("---", "---"),
    ]
    lines += [_row(k, f"`{v}`") for k, v in report["data_md5"].items()]
    lines += ["", "## Steps", "", _row("step", "status", "seconds", "note")]
    lines += [_row("---", "---", "---:", "---")]
    for step in report["steps"]:
        lines.append(_row(step["step"], step["status"], f"{step['seconds']:.2f}", step["note"]))
    lines += ["", f"Command: `{' '.join(report['command'])}`", ""]
    return "\n".join(lines)


def _points(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.2f}"


def robustness_markdown(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The suite's table: digits by accuracy, non-digits by how much is flagged."""
    if not rows:
        return []
    lines = [
        "## Robustness suite (each upload through the service's preprocessing)",
        "",
        _row("category", "uploads", "refused", "accuracy", "promoted model", "change", "flagged"),
        _row("---", "---:", "---:", "---:", "---:", "---:", "---:"),
    ]
    for r in (r for r in rows if r["digits"]):
        change = None
        if r["baseline_accuracy"] is not None:
            change = r["accuracy"] - r["baseline_accuracy"]
        lines.append(
            _row(
                f"{r['name']}: {r['description']}",
                r["uploads"],
                r["refused"],
                _percent(r["accuracy"]),
                _percent(r["baseline_accuracy"]),
                _points(change),
                _percent(r["flagged"]),
            )
        )
    lines += [
        "",
        "Not digits: the share answered `uncertain: true` or refused (the goal is 95 % or more).",
        "",
        _row("category", "uploads", "refused", "flagged", "promoted model flagged"),
        _row("---", "---:", "---:", "---:", "---:"),
    ]
    for r in (r for r in rows if not r["digits"]):
        lines.append(
            _row(
                f"{r['name']}: {r['description']}",
                r["uploads"],
                r["refused"],
                _percent(r["flagged"]),
                _percent(r["baseline_flagged"]),
            )
        )
    return [*lines, ""]


def calibration_markdown(calibration: Mapping[str, Any] | None) -> list[str]:
    if not calibration:
        return []
    lines = ["## Calibration (MNIST test set)", ""]
    lines.append(f"- expected calibration error before temperature scaling: "
                 f"{_percent(calibration['ece_before'])}")  # fmt: skip
    if "temperature" in calibration:
        lines += [
            f"- temperature {calibration['temperature']:.4f} (fitted on the held-out slice "
            f"of the training set): ECE after {_percent(calibration['ece_after'])}",
            f"- test digits flagged `uncertain`: {_percent(calibration['flagged'])} "
            "(the goal is 2 % or less)",
        ]
    else:
        lines.append("- not calibrated: the recipe holds no training images out")
    return [*lines, "", "![reliability diagram](reliability.png)", ""]


class ReportFolder:
    """A report in the making: files go to a hidden temp folder until `publish` renames it."""

    def __init__(self, reports_dir: Path) -> None:
        self.reports_dir = Path(reports_dir)
        self.reports_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.reports_dir, prefix=".build-"))
        os.chmod(self.tmp, 0o755)  # mkdtemp's 0700 would hide the report from other users
        self.published: Path | None = None

    def path(self, name: str) -> Path:
        return self.tmp / name

    def write_plots(
        self,
        history: Sequence[Mapping[str, float]],
        confusion: np.ndarray,
        misclassified: Sequence[Misclassified],
        calibration: Mapping[str, Any],
    ) -> dict[str, str]:
        plot_training_curves(history, self.path(PLOTS["training_curves"]))
        plot_confusion_matrix(confusion, self.path(PLOTS["confusion_matrix"]))
        plot_misclassified(misclassified, self.path(PLOTS["misclassified"]))
        plot_reliability(calibration, self.path(PLOTS["reliability"]))
        return dict(PLOTS)

    def publish(self, name: str, report: Mapping[str, Any]) -> Path:
        """Write report.json and report.md, then rename the folder to `reports_dir/name`.

        A name already taken gets a `-2`, `-3`... suffix; nothing existing is overwritten.
        """
        final, n = self.reports_dir / name, 1
        while final.exists():
            n += 1
            final = self.reports_dir / f"{name}-{n}"
        report = jsonable({**report, "name": final.name})
        text = json.dumps(report, indent=2, allow_nan=False) + "\n"
        self.path("report.json").write_text(text)
        self.path("report.md").write_text(render_markdown(report))
        os.rename(self.tmp, final)
        self.published = final
        return final

    def discard(self) -> None:
        if self.published is None:
            shutil.rmtree(self.tmp, ignore_errors=True)
