"""SIGTERM on a real `bentoml serve`: readiness turns false at once, requests in flight finish.

So a load balancer that health-checks /readyz (HAProxy in the Swarm stack, a Kubernetes
readinessProbe) takes the replica out before it stops accepting, and nobody's answer is lost.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import httpx

from service.draining import install
from tests.support.multipart import content_type, multipart_body
from tests.support.raw_http import read_response
from tests.support.servers import running_server, server_env

DRAIN_S = 3.0
EXIT_BUDGET_S = 10.0


def readyz(url: str) -> int | None:
    """The status of a fresh GET /readyz; None when no answer came."""
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code
    except httpx.HTTPError:
        return None


def test_readiness_turns_false_on_sigterm_and_requests_in_flight_finish(
    trained_checkpoint: Path, mnist_test_pngs, tmp_path: Path
) -> None:
    env = server_env(
        tmp_path / "bentoml",
        MODEL_PATH=str(trained_checkpoint),
        MNIST_WORKERS="1",
        MNIST_DRAIN_S=str(DRAIN_S),
    )
    png, digit = mnist_test_pngs[0]
    body = multipart_body([("image", "d.png", png)], "drain")
    with running_server(env, tmp_path / "server.log") as server:
        assert readyz(server.url) == 200
        port = int(server.url.rsplit(":", 1)[1])
        in_flight = socket.create_connection(("127.0.0.1", port), timeout=15)
        head = (
            f"POST /predict_image HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type('drain')}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        in_flight.sendall(head + body[:10])  # the server is reading this request's body

        os.kill(server.process.pid, signal.SIGTERM)
        sent = time.monotonic()
        statuses = []
        while time.monotonic() - sent < DRAIN_S - 1:
            statuses.append(readyz(server.url))
            if statuses[-1] == 503:
                break
            time.sleep(0.05)
        not_ready_after = time.monotonic() - sent
        # Still draining: everything but readiness is answered as usual.
        during = httpx.post(
            f"{server.url}/predict_image", files={"image": ("d.png", png, "image/png")}, timeout=5
        )

        in_flight.sendall(body[10:])
        answer = read_response(in_flight)
        in_flight.close()
        exit_code = server.process.wait(timeout=EXIT_BUDGET_S + DRAIN_S)
        exited_after = time.monotonic() - sent
        log = server.log()

    assert statuses[-1] == 503, f"readyz after SIGTERM: {statuses}\n{log[-2000:]}"
    assert not_ready_after < 1.0
    assert during.status_code == 200 and during.json()["digit"] == digit
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert f'"digit":{digit}'.encode() in answer.replace(b" ", b"")
    assert DRAIN_S <= exited_after < DRAIN_S + EXIT_BUDGET_S, exited_after
    assert exit_code in (0, -signal.SIGTERM), log[-2000:]
    assert "/readyz answers 503 now" in log


def test_nothing_is_wrapped_outside_the_main_thread() -> None:
    import threading

    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(install(1.0)))
    thread.start()
    thread.join()
    assert results == [False]
