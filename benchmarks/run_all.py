"""Run every benchmark and rewrite docs/benchmarks.md with the measured tables.

    make bench        # = .venv/bin/python -m benchmarks.run_all

The load generator (wrk, one thread) shares the machine with the server, as in the targets.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

DOC = Path("docs/benchmarks.md")


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"torch {version('torch')}, BentoML {version('bentoml')}, {wrk.strip()}, "
        f"{dt.date.today().isoformat()}"
    )


def run(module: str, json_path: Path, *args: str) -> dict:
    subprocess.run([sys.executable, "-m", module, "--json", str(json_path), *args], check=True)
    return json.loads(json_path.read_text())


def ms(value: float) -> str:
    return f"{value:.1f}"


def render(train: dict, serving: dict) -> str:
    seed, ours = train["seed_style"], train["project"]
    lines = [
        "# Benchmarks",
        "",
        "Rewritten by `make bench` (`.venv/bin/python -m benchmarks.run_all`).",
        f"Machine: {machine()}.",
        "",
        "## Training (`python -m benchmarks.train_speed`)",
        "",
        "Same recipe (Adam 1e-3, batch 256, cross-entropy, evaluation every epoch), one process;",
        "the two loops' epochs alternate, so both see the same machine.",
        "",
        "| loop | s/epoch | total s | test accuracy |",
        "|---|---|---|---|",
        f"| seed-style DataLoader over PIL | {seed['seconds_per_epoch']:.2f} | "
        f"{seed['total_seconds']:.1f} | {100 * seed['test_accuracy']:.2f} % |",
        f"| project (tensors in memory) | {ours['seconds_per_epoch']:.2f} | "
        f"{ours['total_seconds']:.1f} | {100 * ours['test_accuracy']:.2f} % |",
        "",
        f"Speed-up: **{train['speedup']:.2f}x** (target >= 10x: "
        f"{'met' if train['speedup'] >= 10 else 'not met'}),",
        "the project's total including loading the tensors; per epoch "
        + ", ".join(f"{k} {v:.2f}x" for k, v in train["epoch_speedups"].items())
        + ".",
        "",
        "## Serving (`python -m benchmarks.serving`)",
        "",
        f"Real `bentoml serve` on 127.0.0.1, MNIST_WORKERS={serving['workers']}, "
        f"wrk -t1 for {serving['duration_s']:.0f} s per row, 200 different MNIST test PNGs "
        "as multipart field `image`.",
        "",
        "| endpoint | batching | concurrency | req/s | p50 ms | p95 ms | p99 ms | errors | "
        "batch sizes (forward passes per size bucket) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in serving["predict_image"]:
        batches = ", ".join(f"<={le}: {n}" for le, n in row["batches"].items()) or "-"
        lines.append(
            f"| /predict_image | {row['batching']} | {row['concurrency']} | {row['rps']:.0f} | "
            f"{ms(row['p50_ms'])} | {ms(row['p95_ms'])} | {ms(row['p99_ms'])} | "
            f"{row['errors']} | {batches} |"
        )
    json_run, bulk = serving["predict_json_256"], serving["predict_bulk_10000"]
    memory = serving["memory"]
    cold = serving["cold_start_s"]
    lines += [
        "",
        "| bulk path | images/s | p99 ms | errors |",
        "|---|---|---|---|",
        f"| /predict, JSON batches of 256, c=8 | {json_run['images_per_s']:.0f} | "
        f"{ms(json_run['p99_ms'])} | {json_run['errors']} |",
        f"| /predict_bulk, 10,000 uint8 images per body, c=4 | {bulk['images_per_s']:.0f} | "
        f"{ms(bulk['p99_ms'])} | {bulk['errors']} |",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| cold start, process start to /readyz 200 | {', '.join(f'{c:.1f} s' for c in cold)} "
        "| <= 6 s |",
        f"| RSS of all server processes after start | {memory['rss_after_start_mb']:.0f} MB | "
        "<= 1 GB per worker |",
        f"| RSS after {memory['requests']:,} requests | {memory['rss_after_requests_mb']:.0f} MB "
        f"(+{memory['rss_after_requests_mb'] - memory['rss_after_warmup_mb']:.0f} MB after "
        "warm-up) | < 50 MB growth |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="15", help="seconds per serving run")
    parser.add_argument("--epochs", default="10")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        train = run("benchmarks.train_speed", Path(tmp) / "train.json", "--epochs", args.epochs)
        serving = run("benchmarks.serving", Path(tmp) / "serving.json", "--duration", args.duration)
    notes = ""
    if DOC.exists() and "<!-- notes -->" in DOC.read_text():
        notes = DOC.read_text().split("<!-- notes -->", 1)[1]
    DOC.write_text(render(train, serving) + "\n<!-- notes -->" + notes)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
