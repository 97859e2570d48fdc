"""Start the real `bentoml serve` on 127.0.0.1 for tests, and stop it by process id."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support import REPO
from tests.support.processes import worker_pids

BENTOML = str(Path(sys.executable).with_name("bentoml"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path
    ready_after_s: float = 0.0  # from launch to the first /readyz 200

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def server_env(bentoml_home: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNIST_")}
    env.pop("MODEL_PATH", None)
    env.pop("API_KEY", None)
    env.update(BENTOML_HOME=str(bentoml_home), BENTOML_DO_NOT_TRACK="true", **overrides)
    return env


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 60) -> bool:
    """Polls /readyz every 10 ms with one client: a client per poll (its TLS context) cost ~35 ms
    of CPU each time, taken from the starting server, and the 50 ms sleep showed in cold starts."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}/readyz").status_code == 200:
                    return True
            time.sleep(0.01)
    return False


ACCEPTING = "accepting connections (worker"  # service.fair_accept's line, one per worker


def wait_all_workers(server: Server, workers: int, timeout: float = 60) -> None:
    """After /readyz: wait until each of `workers` (2 or more) accepts connections; the later
    ones start after the first (service.staggered_start)."""
    deadline = time.monotonic() + timeout
    while server.log().count(ACCEPTING) < workers:
        if time.monotonic() > deadline or server.process.poll() is not None:
            raise RuntimeError(f"not all {workers} workers accept:\n{server.log()[-3000:]}")
        time.sleep(0.05)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@contextlib.contextmanager
def running_server(
    env: dict[str, str], log_path: Path, every_worker: bool = True
) -> Iterator[Server]:
    """`bentoml serve` until the block ends; ready means `/readyz` 200 and, unless
    `every_worker` is false, every worker accepting connections (they start one after the
    other, service.staggered_start), so a test never shares the CPUs with a starting worker."""
    port = free_port()
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [BENTOML, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        if not wait_ready(server.url, process):
            raise RuntimeError(f"server did not become ready:\n{server.log()[-3000:]}")
        server.ready_after_s = time.perf_counter() - started
        if every_worker and (count := len(worker_pids(process.pid))) > 1:
            wait_all_workers(server, count)
        yield server
    finally:
        stop(process)


def serve_until_exit(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `bentoml serve` expecting it to stop by itself (a bad model or setting)."""
    return subprocess.run(
        [BENTOML, "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
