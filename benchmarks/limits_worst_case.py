"""The worst case each request limit admits, against the real server: time, memory, loop stall.

    .venv/bin/python -m benchmarks.limits_worst_case [--model artifacts/model.pt] [CASE_WORDS...]

One `bentoml serve` worker with the default settings. Each case sends the largest request (or
set of concurrent requests) a limit lets through, and one just past the limit where there is
one, and prints a markdown row: the answers, the slowest answer's seconds, the peak RSS of the
server's processes above their level before the case (psutil, every 10 ms), and the slowest
`/livez` answer meanwhile (polled every 20 ms from a separate process, so this process's own
work does not count). The README's limits table and docs/benchmarks.md come from this output.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

from benchmarks.decode_worst_case import SIDE, WEBP_SIDE, digit, encode
from service.json_batch import GENERAL_JSON_BYTES
from service.open_inference import HEADER_LENGTH
from tests.support.multipart import content_type, multipart_body
from tests.support.processes import process_tree_rss_mb
from tests.support.servers import running_server, server_env

POLLER = """
import sys, time, httpx
url, stop = sys.argv[1], sys.argv[2]
worst = 0.0
with httpx.Client() as client:
    client.get(url + "/livez", timeout=30)
    print("ready", flush=True)
    while True:
        started = time.perf_counter()
        client.get(url + "/livez", timeout=30)
        worst = max(worst, time.perf_counter() - started)
        try:
            open(stop).close()
            break
        except FileNotFoundError:
            time.sleep(0.02)
print(worst * 1000)
"""

Request = (
    tuple[str, bytes, str] | tuple[str, bytes, str, dict[str, str]]
)  # route, body, type[, headers]
INFER = "/v2/models/mnist/infer"


def upload(field: str, files: list[bytes]) -> tuple[bytes, str]:
    body = multipart_body([(field, f"{i}.img", data) for i, data in enumerate(files)], "bnd")
    return body, content_type("bnd")


def json_images(count: int) -> bytes:
    """`count` images of 784 full-precision floats (18 digits), as `json.dumps` writes them."""
    image = [0.1234567890123456] * 392 + [0.9876543210987654] * 392
    return json.dumps({"images": [image] * count}).encode()


def infer_json(count: int) -> bytes:
    """An Open Inference JSON request: `count` images of 18-digit floats, one flat FP32 array."""
    image = [0.1234567890123456] * 392 + [0.9876543210987654] * 392
    tensor = {"name": "images", "datatype": "FP32", "shape": [count, 784], "data": image * count}
    return json.dumps({"inputs": [tensor]}).encode()


def infer_binary(count: int, header_bytes: int = 0) -> Request:
    """A binary-extension UINT8 request of `count` images, its JSON header padded to at least
    `header_bytes` (with a long request id)."""
    tensor = {"name": "images", "datatype": "UINT8", "shape": [count, 784],
              "parameters": {"binary_data_size": count * 784}}  # fmt: skip
    header = json.dumps({"id": "", "inputs": [tensor]}).encode()
    header = header.replace(
        b'"id": ""', b'"id": "' + b"x" * max(0, header_bytes - len(header)) + b'"'
    )
    kind = "application/octet-stream"
    return INFER, header + bytes(count * 784), kind, {HEADER_LENGTH: str(len(header))}


def other_form_json(size: int) -> bytes:
    """A body of `size` bytes that is not sliced (it has a string): the most empty lists."""
    head, tail = b'{"id": "x", "images": [', b"[]]}"
    return head + b"[]," * ((size - len(head) - len(tail)) // 3) + tail


def cases(tmp: Path) -> list[tuple[str, str, Callable[[], list[Request]]]]:
    """(limit, what is sent, requests to send at once) for every limit in the README table."""
    webp = tmp / "webp.bin"
    png = tmp / "png.bin"
    tiff = tmp / "tiff.bin"

    def lossless_webp(width: int = WEBP_SIDE) -> bytes:  # WebP at (or past) its own limit
        path = webp.with_suffix(f".{width}")
        if not path.exists():
            image = Image.new("RGBA", (width, WEBP_SIDE))
            path.write_bytes(encode(image, "WEBP", lossless=True, method=0))
        return path.read_bytes()

    def float_tiff() -> bytes:  # the costliest single image (benchmarks.decode_worst_case)
        if not tiff.exists():
            tiff.write_bytes(encode(digit(mode="F"), "TIFF", compression="tiff_deflate"))
        return tiff.read_bytes()

    def big_png() -> bytes:
        if not png.exists():
            png.write_bytes(encode(digit(), "PNG"))
        return png.read_bytes()

    def image_requests(route: str, field: str, files: list[bytes], copies: int) -> list[Request]:
        body, kind = upload(field, files)
        return [(route, body, kind)] * copies

    json_type = "application/json"
    bulk_type = "application/octet-stream"
    return [
        (
            "none (baseline: the machine's own noise)",
            "one 256-image JSON batch",
            lambda: [("/predict", json_images(256), json_type)],
        ),
        (
            "JSON body (`MNIST_MAX_JSON_BYTES`), sliced form",
            "4096 images of 18-digit floats, 61 MiB",
            lambda: [("/predict", json_images(4096), json_type)],
        ),
        (
            "JSON body (`MNIST_MAX_JSON_BYTES`), sliced form",
            "64 MiB + 1 byte",
            lambda: [("/predict", b" " * (64 * 2**20 + 1), json_type)],
        ),
        (
            "JSON body of any other form",
            f"{GENERAL_JSON_BYTES // 1024} KiB of empty lists (the most objects per byte; 413"
            " for their number after the parse)",
            lambda: [("/predict", other_form_json(GENERAL_JSON_BYTES), json_type)],
        ),
        (
            "JSON body of any other form",
            f"{GENERAL_JSON_BYTES // 1024} KiB + 3 bytes",
            lambda: [("/predict", other_form_json(GENERAL_JSON_BYTES + 3), json_type)],
        ),
        (
            "one image",
            f"TIFF float32 {SIDE}x{SIDE} (the costliest decode)",
            lambda: image_requests("/predict_image", "image", [float_tiff()], 1),
        ),
        (
            "one image, WebP",
            f"lossless WebP {WEBP_SIDE}x{WEBP_SIDE} RGBA (WebP's own limit)",
            lambda: image_requests("/predict_image", "image", [lossless_webp()], 1),
        ),
        (
            "one image, WebP",
            f"lossless WebP {WEBP_SIDE + 1}x{WEBP_SIDE}",
            lambda: image_requests("/predict_image", "image", [lossless_webp(WEBP_SIDE + 1)], 1),
        ),
        (
            "decoding work per request",
            f"3 PNGs of {SIDE}x{SIDE} in one /predict_images (120 M work pixels)",
            lambda: image_requests("/predict_images", "images", [big_png()] * 3, 1),
        ),
        (
            "decoding work per request",
            f"4 PNGs of {SIDE}x{SIDE} (160 M work pixels)",
            lambda: image_requests("/predict_images", "images", [big_png()] * 4, 1),
        ),
        (
            "decode memory in flight",
            f"4 TIFF float32 {SIDE}x{SIDE} at once",
            lambda: image_requests("/predict_image", "image", [float_tiff()], 4),
        ),
        (
            "body bytes in flight",
            "4 max /predict_bulk bodies (100,000 images, 78 MB) at once",
            lambda: [("/predict_bulk", bytes(784 * 100_000), bulk_type)] * 4,
        ),
        (
            "Open Inference JSON body (`MNIST_MAX_JSON_BYTES`)",
            "4096 images of 18-digit floats, one flat FP32 array, 61 MiB",
            lambda: [(INFER, infer_json(4096), json_type)],
        ),
        (
            "Open Inference JSON body (`MNIST_MAX_JSON_BYTES`)",
            "64 MiB + 1 byte",
            lambda: [(INFER, b" " * (64 * 2**20 + 1), json_type)],
        ),
        (
            "Open Inference binary request",
            "100,000 UINT8 images (78 MB)",
            lambda: [infer_binary(100_000)],
        ),
        (
            "Open Inference JSON header of a binary request",
            f"{GENERAL_JSON_BYTES // 1024} KiB + 1 byte",
            lambda: [infer_binary(1, GENERAL_JSON_BYTES + 1)],
        ),
        (
            "queued heavy work",
            f"24 PNGs of {SIDE}x{SIDE} at once to /predict_image",
            lambda: image_requests("/predict_image", "image", [big_png()], 24),
        ),
    ]


def poll_livez(url: str, tmp: Path) -> tuple[subprocess.Popen, Path]:
    stop = tmp / "stop-poller"
    stop.unlink(missing_ok=True)
    poller = subprocess.Popen(
        [sys.executable, "-c", POLLER, url, str(stop)], stdout=subprocess.PIPE, text=True
    )
    assert poller.stdout is not None and poller.stdout.readline().strip() == "ready"
    return poller, stop


def run_case(url: str, pid: int, tmp: Path, requests: list[Request]) -> dict:
    """Send `requests` at once; answers, slowest seconds, peak RSS above before, worst /livez."""
    before = process_tree_rss_mb(pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(process_tree_rss_mb(pid))
            time.sleep(0.01)

    def send(request: Request) -> tuple[int, float]:
        route, body, kind, *extra = request
        headers = {"content-type": kind, **(extra[0] if extra else {})}
        started = time.perf_counter()
        answer = httpx.post(url + route, content=body, headers=headers, timeout=120)
        return answer.status_code, time.perf_counter() - started

    poller, stop = poll_livez(url, tmp)
    sampler = threading.Thread(target=sample)
    sampler.start()
    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(send, requests))
    done.set()
    sampler.join()
    stop.touch()
    livez_ms = float(poller.communicate(timeout=30)[0])
    statuses: dict[int, int] = {}
    for status, _ in answers:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "answers": ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items())),
        "seconds": max(seconds for _, seconds in answers),
        "peak_mb": max(peak) - before,
        "livez_ms": livez_ms,
    }


def header_cases(url: str, pid: int, tmp: Path) -> list[tuple[str, str, dict]]:
    """Headers: a 64 KiB block (the limit) and 200 connections trickling headers until 408."""
    host, port = url.removeprefix("http://").split(":")
    rows = []
    poller, stop = poll_livez(url, tmp)
    before = process_tree_rss_mb(pid)
    started = time.perf_counter()
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"GET /livez HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 65_000 + b"\r\n\r\n")
        s.settimeout(10)
        status = s.recv(12).decode(errors="replace")
    stop.touch()
    rows.append(
        (
            "header block",
            "one 64 KiB header block",
            {
                "answers": status,
                "seconds": time.perf_counter() - started,
                "peak_mb": process_tree_rss_mb(pid) - before,
                "livez_ms": float(poller.communicate(timeout=30)[0]),
            },
        )
    )
    poller, stop = poll_livez(url, tmp)
    started = time.perf_counter()
    sockets = [socket.create_connection((host, int(port))) for _ in range(200)]
    peak = before
    for s in sockets:
        s.sendall(b"GET /livez HTTP/1.1\r\nHost: t\r\n")
        s.settimeout(0.001)
    answered = 0
    while answered < len(sockets) and time.perf_counter() - started < 30:
        for s in sockets:
            try:
                s.sendall(b"X-Slow: " + b"a" * 300 + b"\r\n")
                if s.recv(12).startswith(b"HTTP/1.1 408"):
                    answered += 1
            except OSError:
                continue
        peak = max(peak, process_tree_rss_mb(pid))
        time.sleep(0.2)
    for s in sockets:
        s.close()
    stop.touch()
    rows.append(
        (
            "header time",
            "200 connections trickling headers",
            {
                "answers": f"{answered} x 408",
                "seconds": time.perf_counter() - started,
                "peak_mb": peak - before,
                "livez_ms": float(poller.communicate(timeout=30)[0]),
            },
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--model", type=Path, default=Path("artifacts/model.pt"))
    parser.add_argument("words", nargs="*", help="run only cases whose limit contains a word")
    args = parser.parse_args()
    if not args.model.is_file():
        sys.exit(f"error: no model at {args.model}; run `make train` first")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = server_env(tmp, MODEL_PATH=str(args.model.resolve()), MNIST_WORKERS="1")
        print("| limit | worst case sent | answers | slowest s | peak RSS +MB | worst /livez ms |")
        print("|---|---|---|---|---|---|")
        with running_server(env, tmp / "server.log") as server:
            pid = server.process.pid
            httpx.post(server.url + "/predict_bulk", content=bytes(784 * 300),
                       headers={"content-type": "application/octet-stream"})  # fmt: skip
            rows = []
            for limit, sent, build in cases(tmp):
                if args.words and not any(w.lower() in limit.lower() for w in args.words):
                    continue
                rows.append((limit, sent, run_case(server.url, pid, tmp, build())))
                print_row(*rows[-1])
            if not args.words or any("header" in w.lower() for w in args.words):
                for row in header_cases(server.url, pid, tmp):
                    print_row(*row)


def print_row(limit: str, sent: str, row: dict) -> None:
    print(
        f"| {limit} | {sent} | {row['answers']} | {row['seconds']:.2f} | "
        f"{row['peak_mb']:.0f} | {row['livez_ms']:.0f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
