"""CLI: `python -m training` fetches MNIST, trains, evaluates, saves and registers a model."""

from __future__ import annotations

import sys

from training.checkpoint import read_metadata, save_checkpoint
from training.cli import config_from_args, parse_training_args
from training.data import DataError, ensure_mnist, load_split
from training.train import format_epoch, train


def main(argv: list[str] | None = None) -> int:
    args = parse_training_args(argv)
    try:
        config = config_from_args(args)
        data_md5 = ensure_mnist(args.data_dir)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
