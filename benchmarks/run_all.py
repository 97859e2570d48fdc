"""Run every benchmark and rewrite docs/benchmarks.md with the measured tables.

    make bench        # = .venv/bin/python -m benchmarks.run_all
    .venv/bin/python -m benchmarks.run_all --only side-by-side --side-duration 10 --rounds 3

The load generator (wrk, one thread) shares the machine with the server, as in the targets.
Each benchmark writes one `## ` section, headed by its own machine line and date; `--only`
re-runs some and keeps the other sections as they are in the document. Hand-written notes
follow the `<!-- notes -->` marker and are kept.
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
PLOT = Path("docs/serving.png")
NOTES = "<!-- notes -->"
SECTIONS = {  # the heading that opens each benchmark's section, in document order
    "train": "## Training",
    "serving": "## Serving (",
    "side-by-side": "## Side by side",
}


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


def render_train(train: dict) -> str:
    seed, ours = train["seed_style"], train["project"]
    lines = [
        "## Training (`python -m benchmarks.train_speed`)",
        "",
        f"Machine: {machine()}.",
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
    ]
    return "\n".join(lines)


def render_serving(serving: dict) -> str:
    lines = [
        "## Serving (`python -m benchmarks.serving`)",
        "",
        f"Machine: {machine()}.",
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


def render_side_by_side(results: dict, command: str) -> str:
    """Issue 12's comparison: the tables come from benchmarks.side_by_side itself."""
    from benchmarks.side_by_side import markdown

    return "\n".join(
        [
            "## Side by side: this service, TorchServe 0.12, bare ASGI "
            "(`python -m benchmarks.side_by_side`)",
            "",
            f"Machine: {machine()}. Command: `{command}`.",
            "",
            "A = `bentoml serve` with default settings (MNIST_WORKERS unset: auto), "
            "B = TorchServe 0.12 with benchmarks/torchserve_handler.py (1 worker, batch 64 / "
            "5 ms, WARN logging, job_queue_size 1000), C = benchmarks/bare_app.py under uvicorn "
            "(uvloop, httptools, 2 workers, no access log). Same checkpoint, same decode, same "
            "JSON answer; the harness checks the three agree before it measures.",
            "",
            markdown(results),
            f"![req/s and p99 against concurrency]({PLOT.name})",
            "",
        ]
    )


def kept_sections(text: str) -> dict[str, str]:
    """The generated sections of an existing document, by name (what `--only` leaves alone)."""
    header, *chunks = ("\n" + text.split(NOTES, 1)[0]).split("\n## ")
    # Documents from before per-section machine lines had one for all, in the header.
    legacy = next((line for line in header.splitlines() if line.startswith("Machine:")), None)
    found: dict[str, str] = {}
    for chunk in chunks:
        heading, _, rest = ("## " + chunk).rstrip("\n").partition("\n")
        if legacy and "\nMachine:" not in rest:
            rest = f"\n{legacy}\n{rest}"
        for name, prefix in SECTIONS.items():
            if heading.startswith(prefix):
                found[name] = f"{heading}\n{rest}\n"
    return found


def document(sections: dict[str, str], notes: str) -> str:
    header = [
        "# Benchmarks",
        "",
        "Rewritten by `make bench` (`.venv/bin/python -m benchmarks.run_all`); each section",
        "names the machine and date it was measured on.",
        "",
        "",
    ]
    body = [sections[name] for name in SECTIONS if name in sections]
    return "\n".join(header) + "\n".join(body) + "\n" + NOTES + notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--duration", default="15", help="seconds per serving run")
    parser.add_argument("--epochs", default="10")
    parser.add_argument("--side-duration", default="10", help="seconds per side-by-side run")
    parser.add_argument("--rounds", default="3", help="side-by-side rounds")
    parser.add_argument("--model", help="side-by-side checkpoint (default: its own)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    args = parser.parse_args()
    old = DOC.read_text() if DOC.exists() else ""
    sections = kept_sections(old)
    notes = old.split(NOTES, 1)[1] if NOTES in old else "\n"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "train" in args.only:
            train = run("benchmarks.train_speed", tmp / "train.json", "--epochs", args.epochs)
            sections["train"] = render_train(train)
        if "serving" in args.only:
            serving = run("benchmarks.serving", tmp / "serving.json", "--duration", args.duration)
            sections["serving"] = render_serving(serving)
        if "side-by-side" in args.only:
            options = ["--duration", args.side_duration, "--rounds", args.rounds]
            options += [*(["--model", args.model] if args.model else []), "--plot", str(PLOT)]
            results = run("benchmarks.side_by_side", tmp / "side.json", *options)
            command = "python -m benchmarks.side_by_side " + " ".join(options)
            sections["side-by-side"] = render_side_by_side(results, command)
    DOC.write_text(document(sections, notes))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
