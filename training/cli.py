"""The command lines of `python -m training` and `scripts/build`: every flag, default and check.

The training flags are defined once and shared; their defaults are the seed recipe
(`TrainConfig()`), so both commands train the same model unless told otherwise.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

from training.gate import MIN_ACCURACY, TOLERANCE
from training.ship import LOCAL_BASE_IMAGE
from training.train import LOSSES, TrainConfig, resolve_device

REPO = Path(__file__).resolve().parents[1]
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


def parse_training_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`python -m training`'s options, checked; --dry-run applied."""
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train the 784-256-10 MLP on MNIST and write a self-describing checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_training_arguments(p, data_dir=Path("data"))
    p.add_argument(
        "--output", type=Path, default=Path("artifacts/model.pt"), help="checkpoint path"
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
    return args


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/build",
        description=(
            "Retrain the MNIST MLP and, if the gate accepts it, promote it: fetch and verify "
            "MNIST, train, evaluate on the test set, gate against the promoted model, register "
            "it in the BentoML store as stage=production, copy it to --output, build the Docker "
            "image, and write a report. See docs/retraining.md."
        ),
        epilog=(
            "Exit status: 0 promoted (or dry run), 1 refused by the gate, 2 error before "
            "promotion (nothing changed), 3 promoted but a later step (copy to --output, image "
            "or bento build) failed."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_training_arguments(p, data_dir=REPO / "data")
    g = p.add_argument_group("gate")
    g.add_argument(
        "--min-accuracy",
        type=float,
        default=MIN_ACCURACY,
        metavar="PERCENT",
        help="refuse a candidate whose test accuracy is below this floor",
    )
    g.add_argument(
        "--tolerance",
        type=float,
        default=TOLERANCE,
        metavar="POINTS",
        help="refuse a candidate more than this many percentage points below the promoted model",
    )
    g.add_argument(
        "--force", action="store_true", help="promote even when the gate refuses (logged loudly)"
    )
    m = p.add_argument_group("modes")
    m.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_EPOCHS} epoch on {QUICK_LIMIT:,} images unless --epochs/--limit say "
        "otherwise; gated like any run, so it is refused by the default floor",
    )
    m.add_argument(
        "--dry-run",
        action="store_true",
        help="--quick, and promote nothing: run every step up to the gate, report what the gate "
        "would decide (exit 0), touch neither the store, --output nor Docker",
    )
    o = p.add_argument_group("outputs")
    o.add_argument(
        "--output",
        type=Path,
        default=REPO / "artifacts" / "model.pt",
        help="where the promoted checkpoint is copied (atomically); the Docker image packs it",
    )
    o.add_argument(
        "--reports-dir",
        type=Path,
        default=REPO / "reports",
        help="reports land in DIR/<version>/ (refused runs: DIR/refused-<time>/)",
    )
    s = p.add_argument_group("shipping")
    s.add_argument(
        "--no-docker", action="store_true", help="skip the Docker image build on purpose"
    )
    s.add_argument(
        "--image-name",
        default="mnist-service",
        help="image repository: tags NAME:<version>, NAME:latest",
    )
    s.add_argument(
        "--base-image",
        help=f"BASE_IMAGE build argument; when None: {LOCAL_BASE_IMAGE} if that image exists, "
        "else the Dockerfile's own default",
    )
    s.add_argument(
        "--bentoml-build",
        action="store_true",
        help="also run `bentoml build` for a bento of the promoted model (needs uv, see docs)",
    )
    return p


def parse_build_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`scripts/build`'s options, checked; --quick/--dry-run defaults applied."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.quick or args.dry_run:  # smaller defaults; explicit --epochs/--limit still win
        p.set_defaults(epochs=QUICK_EPOCHS, limit=QUICK_LIMIT, quick=True)
        args = p.parse_args(argv)
    check_training_arguments(p, args)
    if not 0 <= args.min_accuracy <= 100:
        p.error("--min-accuracy is a percentage between 0 and 100")
    if not args.tolerance >= 0:
        p.error("--tolerance must be zero or more percentage points")
    if not re.fullmatch(r"[a-z0-9]+([._/-][a-z0-9]+)*", args.image_name):
        p.error("--image-name must be a lowercase Docker repository name")
    return args
