"""Start the real `bentoml serve` on 127.0.0.1 for tests, and stop it by process id."""

from __future__ import annotations

import contextlib
import os
import re
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
    # Also the service's own _MNIST_ variables: a test that imports service.service sets some
    # in this process, and a server must not inherit them (another server's board, say).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MNIST_", "_MNIST_"))}
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


ACCEPTING = re.compile(r"accepting connections \(worker (\d+) of (\d+)\)")  # fair_accept's


def wait_all_workers(server: Server, timeout: float = 60) -> None:
    """After /readyz, with 2 or more workers: wait until every one of them accepts connections
    (each logs it once it does; a restarted one logs it again)."""
    deadline = time.monotonic() + timeout
    while True:
        found = ACCEPTING.findall(server.log())
        if found and len({n for n, _ in found}) >= int(found[0][1]):
            return
        if time.monotonic() > deadline or server.process.poll() is not None:
            raise RuntimeError(f"not every worker accepts:\n{server.log()[-3000:]}")
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
    """`bentoml serve` until the block ends; ready means `/readyz` 200 (one worker is up) and,
    unless `every_worker` is false, every worker accepting connections, so that a test neither
    shares the CPUs with a worker still starting nor sees its connections land on one worker."""
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
        if every_worker and len(worker_pids(process.pid)) > 1:
            wait_all_workers(server)
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
