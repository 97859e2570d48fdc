"""Training speed: the seed-style DataLoader-over-PIL loop vs the project's in-memory loop.

Both run the same recipe (Adam 1e-3, batch 256, cross-entropy, per-epoch test evaluation) in
one process, one after the other. Prints seconds per epoch, totals, the ratio and accuracies.

    .venv/bin/python -m benchmarks.train_speed [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from training.data import ensure_mnist, load_split
from training.model import MLP
from training.train import TrainConfig, train


def seed_style_run(data_dir: Path, epochs: int, seed: int) -> tuple[list[float], float]:
    """The loop this project started from: a DataLoader of PIL images through ToTensor."""
    torch.manual_seed(seed)
    to_tensor = transforms.ToTensor()
    train_set = datasets.MNIST(str(data_dir), train=True, transform=to_tensor)
    test_set = datasets.MNIST(str(data_dir), train=False, transform=to_tensor)
    train_loader = DataLoader(train_set, batch_size=256, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=256)
    model = MLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    epoch_seconds, accuracy = [], 0.0
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(x.view(len(x), -1)), y)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += (model(x.view(len(x), -1)).argmax(1) == y).sum().item()
        accuracy = correct / len(test_set)
        epoch_seconds.append(time.perf_counter() - started)
    return epoch_seconds, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    ensure_mnist(args.data_dir)

    seed_epochs, seed_accuracy = seed_style_run(args.data_dir, args.epochs, args.seed)
    started = time.perf_counter()
    train_data, test_data = load_split(args.data_dir, True), load_split(args.data_dir, False)
    load_seconds = time.perf_counter() - started
    result = train(TrainConfig(epochs=args.epochs, seed=args.seed), train_data, test_data)
    ours = [s.seconds for s in result.history]
    ours_total = sum(ours) + load_seconds
    results = {
        "epochs": args.epochs,
        "seed_style": {
            "seconds_per_epoch": sum(seed_epochs) / len(seed_epochs),
            "total_seconds": sum(seed_epochs),
            "test_accuracy": seed_accuracy,
        },
        "project": {
            "seconds_per_epoch": sum(ours) / len(ours),
            "load_seconds": load_seconds,
            "total_seconds": ours_total,
            "test_accuracy": result.test_accuracy,
        },
        "speedup": sum(seed_epochs) / ours_total,
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
    print(f"speedup {results['speedup']:.1f}x (project total includes loading the tensors)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
