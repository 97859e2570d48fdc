"""Serving benchmarks against the real `bentoml serve` on 127.0.0.1, driven by Debian's `wrk`.

    .venv/bin/python -m benchmarks.serving [--duration 15] [--json out.json]

Scenarios: /predict_image (single MNIST PNGs) at concurrency 1/8/32/128 with batching on, and
at 32 with batching off; /predict with JSON batches of 256; /predict_bulk with 10,000-image
bodies; cold start to /readyz; RSS after start and after 100,000 requests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.images import png_bytes as png
from tests.support.metrics import batch_histogram, histogram_delta
from tests.support.multipart import multipart_body
from tests.support.processes import process_tree_rss_mb
from tests.support.servers import running_server, server_env
from training.data import ensure_mnist, load_split

LUA = Path(__file__).with_name("bodies.lua")


@contextlib.contextmanager
def server(model_path: Path, home: Path, **settings: str) -> Iterator[tuple[str, int, float]]:
    """The real server (tests' own starter); yields its URL, pid and process-start-to-ready s."""
    env = server_env(home, MODEL_PATH=str(model_path), **settings)
    started = time.perf_counter()
    with running_server(env, home / "server.log") as running:
        yield running.url, running.process.pid, time.perf_counter() - started


def wrk(
    url: str,
    route: str,
    bodies: Path,
    content_type: str,
    connections: int,
    seconds: float,
    header: tuple[str, str] = ("", ""),
) -> dict:
    """One `wrk -t1` run POSTing the bodies in turn (with one extra `header`, if named)."""
    count = len(list(bodies.glob("*.bin")))
    env = {
        **os.environ,
        "WRK_BODIES": str(bodies),
        "WRK_COUNT": str(count),
        "WRK_CONTENT_TYPE": content_type,
        "WRK_HEADER_NAME": header[0],
        "WRK_HEADER_VALUE": header[1],
    }
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{int(seconds)}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            f"{url}{route}",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["rps"] = result["requests"] / result["duration_s"]
    result["errors"] = result["non_2xx"] + result["socket_errors"]
    return result


def summary(run: dict) -> str:
    images = f" = {run['images_per_s']:.0f} images/s" if "images_per_s" in run else ""
    return (
        f"{run['rps']:.0f} req/s{images}, p50 {run['p50_ms']:.1f} ms, "
        f"p99 {run['p99_ms']:.1f} ms, errors {run['errors']}"
    )


def write_bodies(directory: Path, bodies: list[bytes]) -> Path:
    directory.mkdir(parents=True)
    for i, body in enumerate(bodies):
        (directory / f"{i}.bin").write_bytes(body)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--model", type=Path, default=Path("artifacts/model.pt"))
    parser.add_argument("--duration", type=float, default=15, help="seconds per wrk run")
    parser.add_argument("--soak-requests", type=int, default=100_000)
    parser.add_argument("--workers", default=os.environ.get("MNIST_WORKERS", "auto"))
    parser.add_argument("--json", type=Path, help="write all results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("error: wrk not found; install it (Debian: apt-get install wrk)")
    if not args.model.is_file():
        sys.exit(f"error: no model at {args.model}; run `make train` first")
    ensure_mnist(Path("data"))
    images, _ = load_split(Path("data"), train=False)
    pixels = (images * 255).round().byte().numpy().reshape(-1, 28, 28)

    results: dict = {"workers": args.workers, "duration_s": args.duration}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        image_bodies = write_bodies(
            tmp / "png",
            [
                multipart_body([("image", "d.png", png(p))], "mnistbenchboundary")
                for p in pixels[:200]
            ],
        )
        json_bodies = write_bodies(
            tmp / "json",
            [
                json.dumps(
                    {
                        "images": (pixels[i * 256 : (i + 1) * 256] / 255)
                        .reshape(256, 784)
                        .round(4)
                        .tolist()
                    }
                ).encode()
                for i in range(4)
            ],
        )
        bulk_bodies = write_bodies(tmp / "bulk", [pixels[:10_000].tobytes()])
        home = tmp / "bentoml"
        home.mkdir()
        form = "multipart/form-data; boundary=mnistbenchboundary"

        for batching in ("true", "false"):
            settings = {"MNIST_BATCHING": batching, "MNIST_WORKERS": args.workers}
            with server(args.model, home, **settings) as (url, _, cold):
                results.setdefault("cold_start_s", []).append(cold)
                levels = (1, 8, 32, 128) if batching == "true" else (32, 128)
                for c in levels:
                    wrk(url, "/predict_image", image_bodies, form, c, 2)  # warm-up
                    before = batch_histogram(url)
                    run = wrk(url, "/predict_image", image_bodies, form, c, args.duration)
                    run["batches"] = histogram_delta(before, batch_histogram(url))
                    results.setdefault("predict_image", []).append(
                        {"batching": batching, "concurrency": c, **run}
                    )
                    print(f"/predict_image batching={batching} c={c}: {summary(run)}", flush=True)
                if batching == "true":
                    run = wrk(url, "/predict", json_bodies, "application/json", 8, args.duration)
                    run["images_per_s"] = run["rps"] * 256
                    results["predict_json_256"] = run
                    print(f"/predict 256 per request: {summary(run)}", flush=True)
                    run = wrk(
                        url,
                        "/predict_bulk",
                        bulk_bodies,
                        "application/octet-stream",
                        4,
                        args.duration,
                    )
                    run["images_per_s"] = run["rps"] * 10_000
                    results["predict_bulk_10000"] = run
                    print(f"/predict_bulk 10,000 per request: {summary(run)}", flush=True)

        with server(args.model, home, MNIST_WORKERS=args.workers) as (url, pid, cold):
            start_rss = process_tree_rss_mb(pid)
            wrk(url, "/predict_image", image_bodies, form, 32, 5)
            warm_rss = process_tree_rss_mb(pid)
            served = 0
            while served < args.soak_requests:
                served += wrk(url, "/predict_image", image_bodies, form, 32, 20)["requests"]
            results["memory"] = {
                "rss_after_start_mb": start_rss,
                "rss_after_warmup_mb": warm_rss,
                "requests": served,
                "rss_after_requests_mb": process_tree_rss_mb(pid),
            }
            print(f"memory: {results['memory']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
