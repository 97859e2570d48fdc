"""`mnist-train` (= `python -m training`): fetch MNIST, train, evaluate, save, register.

The training flags are defined here once; the retraining pipeline's command line
(`training.pipeline.cli`) adds its own to them. Their defaults are the seed recipe
(`TrainConfig()`), so both commands train the same model unless told otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from training.checkpoint import creation_time
from training.data import DataError, ensure_mnist, load_split
from training.train import (
    LOSSES,
    RECIPES,
    TrainConfig,
    format_epoch,
    resolve_device,
    train_and_save,
)

DEFAULTS = TrainConfig()
QUICK_EPOCHS, QUICK_LIMIT = 1, 2000


def add_training_arguments(
    parser: argparse.ArgumentParser, *, data_dir: Path, recipe: str = "seed"
) -> None:
    """Add --recipe and the flags that override it (--epochs, --lr, ...), plus --data-dir.

    A flag left out takes the recipe's value, so `--recipe robust --epochs 3` is the robust
    recipe, shorter.
    """
    t = parser.add_argument_group(f"training (the {recipe} recipe unless told otherwise)")
    t.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        default=recipe,
        help="seed: the reference MLP recipe; robust: augmentation, outlier exposure, "
        "one-cycle schedule and a held-out slice for calibration (docs/retraining.md)",
    )
    robust = RECIPES["robust"]

    def override(flag: str, kind: type, what: str, field: str, **extra: Any) -> None:
        values = f"seed {getattr(DEFAULTS, field)}, robust {getattr(robust, field)}"
        t.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=f"{what} ({values})",
                       **extra)  # fmt: skip

    override("--epochs", int, "passes over the data", "epochs")
    override("--batch-size", int, "images per step", "batch_size")
    override("--lr", float, "Adam (peak) learning rate", "lr")
    override("--hidden", int, "hidden layer width", "hidden")
    override("--seed", int, "seed for init, shuffling and augmentation", "seed")
    override("--loss", str, "training loss", "loss", choices=LOSSES)
    override("--limit", int, "train on the first N images only; None: all", "limit")
    t.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="training device (auto: CUDA when available)",
    )
    t.add_argument(
        "--data-dir", type=Path, default=data_dir, help="MNIST location (fetched if missing)"
    )


OVERRIDABLE = ("epochs", "batch_size", "lr", "hidden", "seed", "loss", "limit")


def check_training_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error (status 2) naming the first bad training flag."""
    for name in ("epochs", "batch_size", "hidden", "limit"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not getattr(args, "lr", 1.0) > 0:  # NaN too
        parser.error("--lr must be positive")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The recipe's config with the given flags applied; ValueError for CUDA without CUDA."""
    overrides = {name: getattr(args, name, None) for name in OVERRIDABLE}
    recipe = RECIPES[args.recipe]
    return replace(
        recipe,
        **{k: v for k, v in overrides.items() if v is not None},
        device=str(resolve_device(args.device)),
    )


DEFAULT_OUTPUT = Path("artifacts/model.pt")
DRY_RUN_OUTPUT = Path(tempfile.gettempdir()) / "mnist-dry-run" / "model.pt"


def parse_training_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`python -m training`'s options, checked; --dry-run applied."""
    p = argparse.ArgumentParser(
        prog="mnist-train",
        description="Train the 784-256-10 MLP on MNIST and write a self-describing checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # `--epoch 3` or `--no` must be errors, not guesses
    )
    add_training_arguments(p, data_dir=Path("data"))
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"checkpoint path (default {DEFAULT_OUTPUT}; with --dry-run {DRY_RUN_OUTPUT}, "
        "so a quick check never replaces the model the Docker image ships)",
    )
    p.add_argument(
        "--register",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="save the model in the BentoML model store as mnist-mlp",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="quick check: 1 epoch on 2,000 images, no register"
    )
    args = p.parse_args(argv)
    check_training_arguments(p, args)
    if args.dry_run:
        args.epochs, args.register = QUICK_EPOCHS, False
        args.limit = getattr(args, "limit", None) or QUICK_LIMIT
    if args.output is None:
        args.output = DRY_RUN_OUTPUT if args.dry_run else DEFAULT_OUTPUT
    return args


def describe_calibration(report: dict[str, Any]) -> str:
    """One line: ECE on the test set before/after temperature scaling, and the flag rate."""
    before = f"ECE on the test set {100 * report['ece_before']:.2f}%"
    if "temperature" not in report:
        return f"{before}; not calibrated (the recipe holds no images out), no uncertain flag"
    return (
        f"{before} -> {100 * report['ece_after']:.2f}% at temperature "
        f"{report['temperature']:.3f}; {100 * report['flagged']:.2f}% of test digits flagged"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Train one model and save it (and register it unless --no-register); the exit status."""
    args = parse_training_args(argv)
    try:
        config = config_from_args(args)
        created_at = creation_time()
        data_md5 = ensure_mnist(args.data_dir)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"training {config}")
    result, checkpoint = train_and_save(
        config,
        load_split(args.data_dir, train=True),
        load_split(args.data_dir, train=False),
        args.output,
        data_md5=data_md5,
        on_epoch=lambda stats: print(format_epoch(stats, config.epochs), flush=True),
        created_at=created_at,
    )
    print(f"test accuracy {100 * result.test_accuracy:.2f}%")
    print(describe_calibration(checkpoint.metadata["metrics"]["calibration"]))
    print(f"saved {args.output} sha256 {checkpoint.sha256}")
    if args.register:
        from training.registry import register_checkpoint

        tag = register_checkpoint(args.output, checkpoint.metadata)
        print(f"registered {tag}")
    return 0
