"""The seed recipe beside the robust one: training time, MNIST accuracy, robustness, calibration.

Each round trains both recipes in this process, alternating which goes first, with
`train_and_save` (so calibration is included in the time), then scores both checkpoints on the
robustness suite through the service's preprocessing and inference. Prints one markdown table
and writes the numbers as JSON. The issue's targets: the robust recipe trains in 90 s or less,
reaches 98.3 % or more on the MNIST test set, has an ECE of 1 % or less after scaling, flags 2 %
or less of the test digits and 95 % or more of each non-digit set.

    .venv/bin/python -m benchmarks.recipes [--rounds 1] [--suite-size 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from training.checkpoint import Checkpoint
from training.data import ensure_mnist, load_split
from training.pipeline.robustness import build_suite, score_suite
from training.train import RECIPES, train_and_save

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
TARGETS = {"seconds": 90.0, "accuracy": 0.983, "ece_after": 0.01, "flagged": 0.02, "odd": 0.95}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--suite-size", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    md5 = ensure_mnist(DATA_DIR)
    train_data, test_data = load_split(DATA_DIR, train=True), load_split(DATA_DIR, train=False)
    seconds: dict[str, list[float]] = {"seed": [], "robust": []}
    work = Path(tempfile.mkdtemp(prefix="recipes-"))
    paths = {}
    for round_number in range(args.rounds):
        order = ("seed", "robust") if round_number % 2 == 0 else ("robust", "seed")
        for name in order:
            path = work / f"{name}-{round_number}.pt"
            started = time.perf_counter()
            train_and_save(RECIPES[name], train_data, test_data, path, data_md5=md5)
            seconds[name].append(time.perf_counter() - started)
            paths[name] = path
            print(f"round {round_number + 1}: {name} trained in {seconds[name][-1]:.1f} s")

    images, labels = test_data
    digits = (images * 255).round().to(torch.uint8).reshape(-1, 28, 28).numpy()
    suite = build_suite(digits, labels.numpy(), count=args.suite_size)
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, torch threads "
        f"{torch.get_num_threads()}",
        "suite_size": args.suite_size,
        "recipes": {},
    }
    for name, path in paths.items():
        metrics = Checkpoint.load(path).metadata["metrics"]
        results["recipes"][name] = {
            "train_seconds": seconds[name],
            "test_accuracy": metrics["test_accuracy"],
            "calibration": metrics["calibration"],
            "suite": {
                s.name: {"accuracy": s.accuracy, "flagged": s.flagged}
                for s in score_suite(path, suite)
            },
        }
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def render(results: dict[str, Any]) -> str:
    seed, robust = results["recipes"]["seed"], results["recipes"]["robust"]

    def spread(times: list[float]) -> str:
        return f"{statistics.median(times):.1f} s ({min(times):.1f}-{max(times):.1f})"

    rows = [
        ("train time (median, range)", spread(seed["train_seconds"]),
         spread(robust["train_seconds"])),
        ("MNIST test accuracy", _pct(seed["test_accuracy"]), _pct(robust["test_accuracy"])),
        ("ECE before scaling", _pct(seed["calibration"]["ece_before"]),
         _pct(robust["calibration"]["ece_before"])),
        ("ECE after scaling", "not calibrated", _pct(robust["calibration"].get("ece_after"))),
        ("test digits flagged", "no flag", _pct(robust["calibration"].get("flagged"))),
    ]  # fmt: skip
    for name, theirs in seed["suite"].items():
        ours = robust["suite"][name]
        key = "accuracy" if ours["accuracy"] is not None else "flagged"
        label = name if key == "accuracy" else f"{name}: flagged or refused"
        rows.append((label, _pct(theirs[key]), _pct(ours[key])))
    robust_times = robust["train_seconds"]
    odd = [v["flagged"] or 0 for v in robust["suite"].values() if v["accuracy"] is None]
    checks = [
        ("robust trains in <= 90 s", statistics.median(robust_times) <= TARGETS["seconds"]),
        ("robust >= 98.3 % on MNIST test", robust["test_accuracy"] >= TARGETS["accuracy"]),
        ("robust >= seed on MNIST test", robust["test_accuracy"] >= seed["test_accuracy"]),
        ("ECE after <= 1 %", robust["calibration"].get("ece_after", 1) <= TARGETS["ece_after"]),
        ("<= 2 % of test digits flagged", robust["calibration"].get("flagged", 1) <= 0.02),
        (">= 95 % of each non-digit set flagged", min(odd) >= TARGETS["odd"]),
    ]
    lines = [
        f"Recipes side by side, {results['date']}, {results['machine']}, "
        f"{results['suite_size']} uploads per suite category",
        "",
        "| | seed | robust |",
        "|---|---:|---:|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        *[f"- {'met' if ok else 'NOT MET'}: {text}" for text, ok in checks],
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
