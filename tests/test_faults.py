"""Faults around the real server: clients that vanish mid-upload, a worker killed outright, and
a bad setting that must stop `bentoml serve` before it starts (every setting's check runs in
process in tests/test_settings.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.multipart import file_part_head
from tests.support.processes import worker_pids
from tests.support.servers import Server, running_server, serve_until_exit, server_env

pytestmark = pytest.mark.e2e
UPLOAD_HEAD = file_part_head("image", "digit.png", "XyZ")


def upload_headers(port: int, content_length: int) -> bytes:
    return (
        f"POST /predict_image HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    ).encode()


async def abandoned_upload(port: int, hold_s: float, reset: bool) -> None:
    """Promise 200,000 bytes, send a few thousand, wait, then close (FIN) or reset (RST)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upload_headers(port, 200_000) + UPLOAD_HEAD + b"\x89PNG\r\n\x1a\n" + bytes(4000))
    await writer.drain()
    await asyncio.sleep(hold_s)
    if reset:
        writer.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
    writer.close()


async def slow_upload(port: int, png: bytes, pause_s: float) -> tuple[float, bytes]:
    """Send half of a good upload, pause, send the rest; (time it finished, raw answer)."""
    body = UPLOAD_HEAD + png + b"\r\n--XyZ--\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upload_headers(port, len(body)) + body[: len(body) // 2])
    await writer.drain()
    await asyncio.sleep(pause_s)
    writer.write(body[len(body) // 2 :])
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), timeout=30)
    writer.close()
    return time.monotonic(), answer


def test_clients_vanishing_mid_upload_do_not_disturb_others(server, mnist_test_pngs):
    port = int(server.url.rsplit(":", 1)[1])
    log_start = len(server.log())
    pngs = mnist_test_pngs[:48]

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

            async def good(png: bytes) -> tuple[float, httpx.Response]:
                response = await client.post("/predict_image", files={"image": ("d.png", png)})
                return time.monotonic(), response

            vanishing = [abandoned_upload(port, 0.05 * i, reset=i % 2 == 1) for i in range(8)]
            slow = slow_upload(port, pngs[0][0], pause_s=3.0)
            goods = [good(png) for png, _ in pngs]
            results = await asyncio.gather(slow, *goods, *vanishing)
            return results[0], results[1 : 1 + len(goods)]

    (slow_done, slow_answer), goods = asyncio.run(scenario())
    assert [response.status_code for _, response in goods] == [200] * len(pngs)
    assert [r.json()["digit"] for _, r in goods] == [digit for _, digit in pngs]
    assert max(done for done, _ in goods) < slow_done, "a stalled upload held up other requests"
    assert slow_answer.startswith(b"HTTP/1.1 200"), slow_answer[:200]

    after = httpx.post(f"{server.url}/predict_image", files={"image": ("d.png", pngs[1][0])})
    assert after.status_code == 200
    log = server.log()[log_start:]
    assert "Traceback" not in log, log[-3000:]
    assert "-> 499: client disconnected" in log


@pytest.fixture
def own_server(trained_checkpoint, tmp_path) -> Iterator[Server]:
    """A server of its own, so killing its worker disturbs no other test.

    It has its own BENTOML_HOME too: every `bentoml serve` empties the home's Prometheus
    directory at start, which would silently stop the session server's /metrics updating.
    """
    # One worker (the default is one per CPU), so that killing it leaves none to answer.
    env = server_env(tmp_path, MODEL_PATH=str(trained_checkpoint), MNIST_WORKERS="1")
    with running_server(env, tmp_path / "server.log") as server:
        yield server


def wait_for_new_worker(server: Server, old: int, timeout: float = 30) -> tuple[int, float]:
    """Poll until a different worker answers a prediction; (its pid, seconds it took)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        workers = [pid for pid in worker_pids(server.process.pid) if pid != old]
        try:
            response = httpx.post(f"{server.url}/model_info", timeout=2)
        except httpx.HTTPError:
            response = None
        if workers and response is not None and response.status_code == 200:
            return workers[0], time.monotonic() - started
        time.sleep(0.2)
    pytest.fail(f"no worker answered {timeout} s after SIGKILL:\n{server.log()[-3000:]}")


def test_a_killed_worker_is_replaced_and_service_resumes(own_server, mnist_test_pngs):
    png, digit = mnist_test_pngs[0]
    for _ in range(2):  # twice: the replacement is not a one-off
        (worker,) = worker_pids(own_server.process.pid)
        os.kill(worker, signal.SIGKILL)
        new_worker, seconds = wait_for_new_worker(own_server, worker)
        print(f"worker {worker} killed; {new_worker} answered after {seconds:.1f} s")
        assert own_server.process.poll() is None
        response = httpx.post(
            f"{own_server.url}/predict_image", files={"image": ("d.png", png)}, timeout=30
        )
        assert response.status_code == 200
        assert response.json()["digit"] == digit
    assert httpx.get(f"{own_server.url}/readyz").status_code == 200


@pytest.mark.parametrize(("variable", "value"), [("MNIST_WORKERS", "abc"), ("API_KEY", "")])
def test_a_bad_setting_stops_the_server_with_one_line_naming_it(
    variable, value, trained_checkpoint, tmp_path
):
    # A BENTOML_HOME of its own (see `own_server`): the CLI empties its Prometheus directory
    # before it even imports the service.
    env = server_env(tmp_path, **{"MODEL_PATH": str(trained_checkpoint), variable: value})
    result = serve_until_exit(env)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    assert errors[0].startswith(f"error: invalid service settings: {variable}: "), errors[0]
