"""Cold start and memory of `bentoml serve` per worker count (issue 12's RSS and start targets).

    .venv/bin/python -m benchmarks.cold_start [--workers 1 2] [--starts 3] [--model PATH]

Each start: the real server on 127.0.0.1 (the tests' own starter, as benchmarks.serving), timed
from launching `bentoml serve` to `/readyz` 200, with the CPU seconds its processes used by then;
then one `/predict_bulk` request and the RSS of every process (supervisor, each worker). Prints
one JSON line per start, then the medians. Targets: all processes <= 800 MB with one worker,
+500 MB per extra worker; cold start <= 3 s. To compare two environments (say a CPU-only and a
CUDA torch) on a shared machine, alternate single starts of each:

    for i in 1 2 3; do for repo in A B; do (cd $repo && .venv/bin/python -m benchmarks.cold_start
        --starts 1 --json-lines); done; done
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks import compile_service, disk_read_bytes
from tests.support import REPO
from tests.support.processes import process_tree, worker_pids
from tests.support.servers import running_server, server_env, wait_all_workers


def start_once(model: Path, workers: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        env = server_env(Path(tmp), MODEL_PATH=str(model), MNIST_WORKERS=workers)
        load = os.getloadavg()[0]
        read_before = disk_read_bytes()
        started = time.perf_counter()
        with running_server(env, Path(tmp) / "server.log", every_worker=False) as server:
            cold = server.ready_after_s
            read_mib = (disk_read_bytes() - read_before) / 2**20
            cpu = 0.0
            for process in process_tree(server.process.pid):
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = process.cpu_times()
                    cpu += times.user + times.system
            every_worker = cold
            if len(worker_pids(server.process.pid)) > 1:
                wait_all_workers(server)
                every_worker = time.perf_counter() - started
            answer = httpx.post(
                f"{server.url}/predict_bulk",
                content=bytes(784),
                headers={"content-type": "application/octet-stream"},
                timeout=30,
            )
            answer.raise_for_status()
            time.sleep(1)  # let the first request's allocations settle
            rss = {}
            for process in process_tree(server.process.pid):
                with contextlib.suppress(psutil.NoSuchProcess):
                    rss[process.pid] = process.memory_info().rss / 2**20
            workers_mb = [round(rss[pid]) for pid in worker_pids(server.process.pid)]
    return {
        "workers": int(workers),
        "torch": importlib.metadata.version("torch"),  # the build measured
        "cold_start_s": round(cold, 2),
        "cpu_s_to_ready": round(cpu, 2),
        "disk_read_mib_to_ready": round(read_mib, 1),  # file cache the VM had paged out
        "every_worker_accepting_s": round(every_worker, 2),
        "total_mb": round(sum(rss.values())),
        "supervisor_mb": round(rss[server.process.pid]),
        "workers_mb": workers_mb,
        "load_average_1m": round(load, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--workers", nargs="+", default=["1", "2"], help="MNIST_WORKERS values")
    parser.add_argument("--starts", type=int, default=3, help="starts per worker count")
    parser.add_argument("--model", type=Path, default=REPO / "artifacts/model.pt")
    parser.add_argument("--json-lines", action="store_true", help="only the per-start lines")
    args = parser.parse_args()
    if not args.model.is_file():
        parser.error(f"no model at {args.model}; run `make train` or pass --model")
    compile_service()
    runs = []
    for _ in range(args.starts):
        for workers in args.workers:
            runs.append(start_once(args.model.resolve(), workers))
            print(json.dumps(runs[-1]), flush=True)
    if args.json_lines:
        return
    for workers in args.workers:
        mine = [r for r in runs if r["workers"] == int(workers)]
        print(
            f"{workers} worker(s), torch {mine[0]['torch']}: cold start median "
            f"{statistics.median(r['cold_start_s'] for r in mine):.2f} s "
            f"(min {min(r['cold_start_s'] for r in mine):.2f}), all processes "
            f"{statistics.median(r['total_mb'] for r in mine):.0f} MB (workers "
            f"{mine[-1]['workers_mb']} MB, supervisor {mine[-1]['supervisor_mb']} MB); "
            f"limit {800 + 500 * (int(workers) - 1)} MB, 3 s"
        )


if __name__ == "__main__":
    main()
