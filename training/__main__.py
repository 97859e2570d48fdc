"""CLI: `python -m training` fetches MNIST, trains, evaluates, saves and registers a model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.checkpoint import read_metadata, save_checkpoint
from training.data import DataError, ensure_mnist, load_split
from training.train import LOSSES, TrainConfig, format_epoch, resolve_device, train

DEFAULTS = TrainConfig()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train the 784-256-10 MLP on MNIST and write a self-describing checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="passes over the data")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="images per step")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr, help="Adam learning rate")
    p.add_argument("--hidden", type=int, default=DEFAULTS.hidden, help="hidden layer width")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed for init and shuffling")
    p.add_argument("--loss", choices=LOSSES, default=DEFAULTS.loss, help="training loss")
    p.add_argument("--limit", type=int, default=None, help="train on the first N images only")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="MNIST location")
    p.add_argument(
        "--output", type=Path, default=Path("artifacts/model.pt"), help="checkpoint path"
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="device")
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
    for name in ("epochs", "batch_size", "hidden"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be at least 1")
    if not args.lr > 0:
        p.error("--lr must be positive")
    if args.dry_run:
        args.epochs, args.limit, args.register = 1, args.limit or 2000, False
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
        data_md5 = ensure_mnist(args.data_dir)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        hidden=args.hidden,
        seed=args.seed,
        loss=args.loss,
        limit=args.limit,
        device=str(device),
    )
    print(f"training {config}")
    result = train(
        config,
        load_split(args.data_dir, train=True),
        load_split(args.data_dir, train=False),
        on_epoch=lambda stats: print(format_epoch(stats, config.epochs), flush=True),
    )
    metrics = {
        "test_accuracy": result.test_accuracy,
        "history": [vars(s) for s in result.history],
        "train_seconds": sum(s.seconds for s in result.history),
    }
    sha256 = save_checkpoint(
        args.output, result.model, config=config.as_dict(), metrics=metrics, data_md5=data_md5
    )
    print(f"test accuracy {100 * result.test_accuracy:.2f}%")
    print(f"saved {args.output} sha256 {sha256}")
    if args.register:
        from training.registry import register_checkpoint

        tag = register_checkpoint(args.output, read_metadata(args.output))
        print(f"registered {tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
