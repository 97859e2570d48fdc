"""Training speed: the seed-style DataLoader-over-PIL loop vs the project's in-memory loop.

Both run the same recipe (Adam 1e-3, batch 256, cross-entropy, mean loss and train accuracy
tracked per batch, test evaluation every epoch) in one process. Their epochs alternate, seed
epoch after project epoch, so both see the same machine: on a shared 2-core VM the speed of the
Python-heavy seed loop drifts by 2x over minutes, and back-to-back runs measured that drift
rather than the loops. Prints seconds per epoch, totals, the ratio and accuracies.

    .venv/bin/python -m benchmarks.train_speed [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from training.data import SPLIT_FILES, ensure_mnist, load_split, raw_dir, read_idx
from training.model import MLP
from training.train import TrainConfig, train


class SeedStyleMNIST(Dataset):
    """What the seed's `torchvision.datasets.MNIST(transform=ToTensor())` does per item, without
    torchvision (which cannot be imported beside the CPU-only torch): the uint8 28x28 array made
    a PIL image, then `ToTensor` (array copy, HWC -> CHW, `.float().div(255)`), label as int."""

    def __init__(self, data_dir: Path, train: bool) -> None:
        files = [raw_dir(data_dir) / name for name in SPLIT_FILES[train]]
        images, labels = (read_idx(path.read_bytes()) for path in files)
        self.data = torch.from_numpy(images.copy())
        self.targets = torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(self.data[index].numpy(), mode="L")
        pixels = torch.from_numpy(np.array(image, np.uint8, copy=True))
        pixels = pixels.view(image.size[1], image.size[0], 1).permute((2, 0, 1)).contiguous()
        return pixels.to(dtype=torch.get_default_dtype()).div(255), int(self.targets[index])


def seed_style_loop(data_dir: Path, seed: int) -> Callable[[], tuple[float, float]]:
    """The loop this project started from: a DataLoader of PIL images through ToTensor.

    Returns a function that runs one epoch and returns (seconds, test accuracy).
    """
    torch.manual_seed(seed)
    train_set = SeedStyleMNIST(data_dir, train=True)
    test_set = SeedStyleMNIST(data_dir, train=False)
    # Generators of their own: the loaders draw a seed every epoch, and must not do so from
    # the global RNG that the project's train() runs between (and may one day use).
    shuffle = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, batch_size=256, shuffle=True, generator=shuffle)
    test_loader = DataLoader(test_set, batch_size=256, generator=torch.Generator())
    model = MLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()

    def run_epoch() -> tuple[float, float]:
        started = time.perf_counter()
        model.train()
        # the seed's per-epoch log (mean loss, train accuracy); the project loop keeps it too
        total_loss, train_correct = 0.0, 0
        for x, y in train_loader:
            optimizer.zero_grad()
            logits = model(x.view(len(x), -1))
            loss = criterion(logits, y)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(x)
            train_correct += (logits.argmax(1) == y).sum().item()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += (model(x.view(len(x), -1)).argmax(1) == y).sum().item()
        return time.perf_counter() - started, correct / len(test_set)

    return run_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    ensure_mnist(args.data_dir)

    seed_epoch = seed_style_loop(args.data_dir, args.seed)
    seed_epochs: list[tuple[float, float]] = []
    started = time.perf_counter()
    train_data, test_data = load_split(args.data_dir, True), load_split(args.data_dir, False)
    load_seconds = time.perf_counter() - started
    # train() times each epoch before calling on_epoch, so the seed epoch run there is not counted
    result = train(
        TrainConfig(epochs=args.epochs, seed=args.seed),
        train_data,
        test_data,
        on_epoch=lambda _: seed_epochs.append(seed_epoch()),
    )
    seed = [seconds for seconds, _ in seed_epochs]
    ours = [s.seconds for s in result.history]
    ours_total = sum(ours) + load_seconds
    epoch_ratios = [a / b for a, b in zip(seed, ours, strict=True)]
    results = {
        "epochs": args.epochs,
        "seed_style": {
            "seconds_per_epoch": sum(seed) / len(seed),
            "total_seconds": sum(seed),
            "epoch_seconds": seed,
            "test_accuracy": seed_epochs[-1][1],
        },
        "project": {
            "seconds_per_epoch": sum(ours) / len(ours),
            "load_seconds": load_seconds,
            "epoch_seconds": ours,
            "total_seconds": ours_total,
            "test_accuracy": result.test_accuracy,
        },
        "speedup": sum(seed) / ours_total,
        "epoch_speedups": {
            "min": min(epoch_ratios),
            "median": statistics.median(epoch_ratios),
            "max": max(epoch_ratios),
        },
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    for name in ("seed_style", "project"):
        r = results[name]
        print(
            f"{name:<11} {r['seconds_per_epoch']:6.2f} s/epoch  total {r['total_seconds']:7.2f} s  "
            f"test acc {100 * r['test_accuracy']:.2f}%"
        )
    per_epoch = results["epoch_speedups"]
    print(
        f"speedup {results['speedup']:.2f}x (project total includes loading the tensors); "
        f"per epoch min {per_epoch['min']:.2f}x, median {per_epoch['median']:.2f}x, "
        f"max {per_epoch['max']:.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
