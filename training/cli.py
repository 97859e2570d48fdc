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
from pathlib import Path

from training.checkpoint import creation_time
from training.data import DataError, ensure_mnist, load_split
from training.train import LOSSES, TrainConfig, format_epoch, resolve_device, train_and_save

DEFAULTS = TrainConfig()
QUICK_EPOCHS, QUICK_LIMIT = 1, 2000


def add_training_arguments(parser: argparse.ArgumentParser, *, data_dir: Path) -> None:
    """Add --epochs, --batch-size, --lr, --hidden, --seed, --loss, --limit, --device, --data-dir."""
    t = parser.add_argument_group("training (the seed recipe by default)")
    t.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="passes over the data")
    t.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="images per step")
    t.add_argument("--lr", type=float, default=DEFAULTS.lr, help="Adam learning rate")
    t.add_argument("--hidden", type=int, default=DEFAULTS.hidden, help="hidden layer width")
    t.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed for init and shuffling")
    t.add_argument("--loss", choices=LOSSES, default=DEFAULTS.loss, help="training loss")
    t.add_argument(
        "--limit",
        type=int,
        default=None,
        help="train on the first N images only; all 60,000 when None",
    )
    t.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="training device (auto: CUDA when available)",
    )
    t.add_argument(
        "--data-dir", type=Path, default=data_dir, help="MNIST location (fetched if missing)"
    )


def check_training_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error (status 2) naming the first bad training flag."""
    for name in ("epochs", "batch_size", "hidden"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if not args.lr > 0:
        parser.error("--lr must be positive")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config; raises ValueError when --device cuda is asked for without CUDA."""
    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        hidden=args.hidden,
        seed=args.seed,
        loss=args.loss,
        limit=args.limit,
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
        args.epochs, args.limit, args.register = 1, args.limit or QUICK_LIMIT, False
    if args.output is None:
        args.output = DRY_RUN_OUTPUT if args.dry_run else DEFAULT_OUTPUT
    return args


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
    print(f"saved {args.output} sha256 {checkpoint.sha256}")
    if args.register:
        from training.registry import register_checkpoint

        tag = register_checkpoint(args.output, checkpoint.metadata)
        print(f"registered {tag}")
    return 0
