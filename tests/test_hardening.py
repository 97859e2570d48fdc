"""Resource exhaustion against the real server: each attack gets a clear 4xx (or 503) quickly,
the worker keeps answering /livez within 100 ms meanwhile, and its memory stays bounded."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from tests.support.multipart import content_type, multipart_body
from tests.support.processes import process_tree_rss_mb
from tests.support.raw_http import read_response
from tests.support.servers import running_server, server_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def guarded_server(trained_checkpoint, tmp_path_factory):
    home = tmp_path_factory.mktemp("hardening")
    env = server_env(
        home,
        MODEL_PATH=str(trained_checkpoint),
        MNIST_WORKERS="1",
        MNIST_HEADER_TIMEOUT_S="2",
        MNIST_BODY_TIMEOUT_S="2",
        MNIST_MAX_BODY_BYTES_IN_FLIGHT=str(100 * 1024 * 1024),
    )
    with running_server(env, home / "server.log") as server:
        yield server


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def livez_ms(url: str) -> float:
    started = time.perf_counter()
    assert httpx.get(f"{url}/livez", timeout=5).status_code == 200
    return (time.perf_counter() - started) * 1000


def upload(field: str, files: list[bytes]) -> dict:
    body = multipart_body([(field, f"{i}.img", data) for i, data in enumerate(files)], "bnd")
    return {"content": body, "headers": {"content-type": content_type("bnd")}}


def huge_canvas_gif() -> bytes:
    """A ~40-byte GIF whose logical screen is 6324 x 6324 (a 1x1 frame in its corner)."""
    header = b"GIF89a" + struct.pack("<HHBBB", 6324, 6324, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + frame + b"\x3b"


def test_many_tiny_large_canvas_images_stay_off_the_event_loop(guarded_server):
    gifs = [huge_canvas_gif()] * 40
    result: dict = {}

    def attack():
        result["answer"] = httpx.post(
            f"{guarded_server.url}/predict_images", timeout=60, **upload("images", gifs)
        )

    thread = threading.Thread(target=attack)
    thread.start()
    time.sleep(0.2)
    delays = []
    while thread.is_alive():
        delays.append(livez_ms(guarded_server.url))
        time.sleep(0.05)
    thread.join()
    answer = result["answer"]
    assert answer.status_code in (400, 413, 422), answer.text
    assert "error" in answer.json()
    assert not delays or max(delays) < 100, delays


# Posts a file from its own process, so that the client's work does not delay /livez: with the
# client in a thread of the test process, CI once saw one 232 ms /livez as the upload began.
# The answer goes to a file (a pipe would fill while the test polls, and the poster would hang).
POST_FILE = """
import sys, httpx
answer = httpx.post(sys.argv[1], content=open(sys.argv[2], "rb").read(),
                    headers={"content-type": sys.argv[3]}, timeout=120)
open(sys.argv[4], "wb").write(answer.content)
print(answer.status_code)
"""


@contextlib.contextmanager
def posting(url: str, path: Path, content_type: str = "application/json") -> Iterator[Popen]:
    """Posts `path` from its own process meanwhile; `answer_of` then reads the answer. A test
    that fails while it runs stops it, so that it does not keep loading the shared server."""
    answer = path.with_suffix(".answer")
    poster = Popen(
        [sys.executable, "-c", POST_FILE, url, str(path), content_type, str(answer)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield poster
    finally:
        if poster.poll() is None:
            poster.kill()
            poster.wait()


def answer_of(poster: Popen) -> Any:
    """The JSON answer of a `posting` process, which must have been a 200."""
    status = poster.communicate(timeout=120)[0].strip()
    answer = Path(poster.args[-1])
    assert status == "200", (status, answer.read_text() if answer.exists() else "no answer")
    return json.loads(answer.read_text())


def test_a_maximal_json_body_does_not_stall_the_event_loop(guarded_server, tmp_path):
    """4096 full-precision images, ~61 MiB of JSON (the default limit is 64 MiB): one json.loads
    of it held the GIL for 2-3 s, in a thread too, and /livez waited that long."""
    image = [0.1234567890123456] * 392 + [0.9876543210987654] * 392
    body = tmp_path / "maximal.json"
    body.write_bytes(json.dumps({"images": [image] * 4096}).encode())
    delays = []
    with (
        posting(f"{guarded_server.url}/predict", body) as attack,
        httpx.Client() as client,  # one connection: the delays are the server's, not a setup
    ):
        while attack.poll() is None:
            started = time.perf_counter()
            assert client.get(f"{guarded_server.url}/livez", timeout=5).status_code == 200
            delays.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)
    assert len(answer_of(attack)) == 4096
    assert len(delays) > 5 and max(delays) < 100, delays


def test_a_maximal_open_inference_json_body_does_not_stall_the_event_loop(guarded_server, tmp_path):
    """4096 images of 18-digit floats as one flat FP32 "data" array, ~61 MiB (the JSON limit is
    64 MiB): it was one json.loads on the event loop, seconds of /livez."""
    image = [0.1234567890123456] * 392 + [0.9876543210987654] * 392
    tensor = {"name": "images", "datatype": "FP32", "shape": [4096, 784], "data": image * 4096}
    body = tmp_path / "maximal-infer.json"
    body.write_bytes(json.dumps({"inputs": [tensor]}).encode())
    url = f"{guarded_server.url}/v2/models/mnist/infer"
    delays = []
    with posting(url, body) as attack, httpx.Client() as client:
        while attack.poll() is None:
            started = time.perf_counter()
            assert client.get(f"{guarded_server.url}/livez", timeout=5).status_code == 200
            delays.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)
    outputs = answer_of(attack)["outputs"]
    assert outputs and all(output["shape"][0] == 4096 for output in outputs), outputs
    assert len(delays) > 5 and max(delays) < 100, delays


def test_json_bodies_over_their_limits_get_413_naming_the_limit(guarded_server):
    with socket.create_connection(("127.0.0.1", port_of(guarded_server))) as s:
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n{}" % (64 * 2**20 + 1)
        )
        s.settimeout(10)
        answer = read_response(s)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"the limit is 67108864" in answer
    # Any other form is parsed in one piece, so it may be at most 256 KiB.
    other_form = json.dumps({"id": "x", "images": [[0.0] * 392 + [1.0] * 392] * 200}).encode()
    answer = httpx.post(
        f"{guarded_server.url}/predict",
        content=other_form,
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 413
    assert "above 262,144 bytes" in answer.json()["error"]


def test_oversized_header_block_is_431(guarded_server):
    with socket.create_connection(("127.0.0.1", port_of(guarded_server))) as s:
        s.sendall(b"GET /livez HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        s.settimeout(5)
        assert read_response(s).startswith(b"HTTP/1.1 431")


def test_trickled_headers_get_408(guarded_server):
    with socket.create_connection(("127.0.0.1", port_of(guarded_server))) as s:
        s.sendall(b"GET /livez HTTP/1.1\r\n")
        s.settimeout(0.3)
        started = time.monotonic()
        answer = b""
        while not answer and time.monotonic() - started < 10:
            try:
                s.sendall(b"X-Slow: 1\r\n")
                answer = s.recv(200)
            except TimeoutError:
                continue
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - started < 5


def test_slow_body_gets_408_not_504(guarded_server):
    with socket.create_connection(("127.0.0.1", port_of(guarded_server))) as s:
        s.sendall(
            b"POST /predict_bulk HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream"
            b"\r\nContent-Length: 7840\r\n\r\n" + b"\0" * 100
        )
        s.settimeout(10)
        answer = read_response(s)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"not complete within" in answer


def test_concurrent_large_bodies_are_bounded_by_the_body_budget(guarded_server):
    """Ten max-size bulk bodies at once: what exceeds the worker's body budget gets 503 with
    Retry-After at once, and the server's memory grows by at most a few budgets."""
    body = bytes(784 * 60_000)  # 47 MB
    rss_before = process_tree_rss_mb(guarded_server.process.pid)
    answers: list[httpx.Response] = []
    peak = [rss_before]

    def post():
        answers.append(
            httpx.post(
                f"{guarded_server.url}/predict_bulk",
                content=body,
                headers={"content-type": "application/octet-stream"},
                timeout=60,
            )
        )

    threads = [threading.Thread(target=post) for _ in range(10)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        peak.append(process_tree_rss_mb(guarded_server.process.pid))
        time.sleep(0.05)
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses and 200 in statuses, statuses
    assert all(a.headers.get("retry-after") for a in answers if a.status_code == 503)
    # 100 MB of bodies held at once, each turned into a float32 copy (4x) and probabilities.
    assert max(peak) - rss_before < 1500, (rss_before, max(peak))


def test_a_maximal_bulk_body_is_predicted_in_chunks(guarded_server, tmp_path):
    """100,000 images (78 MB, the most one body may hold): once a float32 copy of all of them
    (313 MB) plus the body twice over while its chunks were joined on the event loop. Now the
    pixels go through the model 8,192 at a time, and /livez keeps answering meanwhile."""
    count = 100_000
    image = np.zeros((28, 28), np.uint8)
    image[4:24, 12:16] = 255  # a 1, so that no image is blank
    body = tmp_path / "maximal.bin"
    body.write_bytes(np.broadcast_to(image.reshape(1, 784), (count, 784)).tobytes())
    rss_before = process_tree_rss_mb(guarded_server.process.pid)
    peak, delays = [rss_before], []
    url = f"{guarded_server.url}/predict_bulk"
    with httpx.Client() as client:  # one connection: the delays are the server's, not a setup
        client.get(f"{guarded_server.url}/livez")
        with posting(url, body, "application/octet-stream") as attack:
            while attack.poll() is None:
                peak.append(process_tree_rss_mb(guarded_server.process.pid))
                started = time.perf_counter()
                assert client.get(f"{guarded_server.url}/livez", timeout=5).status_code == 200
                delays.append((time.perf_counter() - started) * 1000)
                time.sleep(0.01)
    answer = answer_of(attack)
    assert answer["count"] == count and set(answer["digits"]) == {1}
    # The body (78 MB) and its chunks until joined (78 MB), one chunk's float32 copy (25 MB)
    assert max(peak) - rss_before < 250, (rss_before, max(peak))
    assert max(delays) < 100, delays


def test_log_lines_cannot_be_forged(guarded_server):
    httpx.get(f"{guarded_server.url}/x%0aFORGED%20line%00")
    log = Path(guarded_server.log_path).read_text(errors="replace")
    assert "\nFORGED line" not in log
    assert "x\\nFORGED line\\x00" in log


def test_la_tiff_is_accepted(guarded_server, mnist_test_pngs):
    png, digit = mnist_test_pngs[0]
    gray = Image.open(io.BytesIO(png)).convert("L")
    la = Image.merge("LA", (gray, Image.new("L", gray.size, 255)))
    buffer = io.BytesIO()
    la.save(buffer, format="TIFF", tiffinfo={338: 1})  # ExtraSamples = associated alpha
    answer = httpx.post(
        f"{guarded_server.url}/predict_image", **upload("image", [buffer.getvalue()])
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["digit"] == digit


def test_ui_redirect_does_not_echo_the_host(guarded_server):
    answer = httpx.get(f"{guarded_server.url}/ui", headers={"host": "evil.example"})
    assert answer.status_code in (301, 302, 307, 308)
    assert "evil.example" not in answer.headers["location"]


def test_bad_range_on_the_page_is_json(guarded_server):
    answer = httpx.get(f"{guarded_server.url}/ui/app.js", headers={"range": "bytes=999999-"})
    assert answer.status_code == 416
    assert "error" in answer.json()


def test_server_memory_is_unchanged_by_unique_paths(guarded_server):
    process = psutil.Process(guarded_server.process.pid)
    before = process_tree_rss_mb(process.pid)
    for i in range(400):
        httpx.get(f"{guarded_server.url}/unique-{i}-" + "p" * 4000)
    assert process_tree_rss_mb(process.pid) - before < 50
    metrics = httpx.get(f"{guarded_server.url}/metrics").text
    assert "unique-" not in metrics
    assert len(metrics) < 200_000
