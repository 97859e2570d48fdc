"""Open Inference Protocol speed against the service's own routes, one server, side by side.

    .venv/bin/python -m benchmarks.open_inference [--model artifacts/model.pt] [--duration 10]

Issue 14's targets: binary UINT8 and FP32 `[10000, 784]` infers >= 0.8x `/predict_bulk`'s
images/s (4 connections); a one-image binary infer at c=32 >= 0.8x `/predict_image` at c=32.
The contenders alternate (A B, B A, ...) for `--rounds` rounds; medians and ratios are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.serving import write_bodies, wrk
from tests.support.images import png_bytes
from tests.support.multipart import content_type, multipart_body
from tests.support.servers import running_server, server_env
from training.data import ensure_mnist, load_split


def binary_infer(pixels: np.ndarray, datatype: str) -> tuple[bytes, int]:
    """An infer body with one binary input; returns (body, JSON header length)."""
    data = pixels if datatype == "UINT8" else (pixels.astype(np.float32) / 255)
    raw = data.tobytes()
    header = {
        "inputs": [
            {
                "name": "images",
                "datatype": datatype,
                "shape": list(pixels.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [{"name": "digit", "parameters": {"binary_data": True}}],
    }
    text = json.dumps(header).encode()
    return text + raw, len(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--model", type=Path, default=Path("artifacts/model.pt"))
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_mnist(Path("data"))
    images, _ = load_split(Path("data"), train=False)
    pixels = (images * 255).round().byte().numpy().reshape(-1, 784)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        uint8, uint8_header = binary_infer(pixels[:10_000], "UINT8")
        fp32, fp32_header = binary_infer(pixels[:10_000], "FP32")
        single = [binary_infer(pixels[i : i + 1], "UINT8") for i in range(200)]
        pngs = [
            multipart_body([("image", "d.png", png_bytes(p.reshape(28, 28)))], "b")
            for p in pixels[:200]
        ]
        form = content_type("b")
        contenders = {
            "bulk": (
                "/predict_bulk",
                write_bodies(tmp / "b", [pixels[:10_000].tobytes()]),
                "application/octet-stream",
                None,
                4,
                10_000,
            ),
            "infer UINT8": (
                "/v2/models/mnist/infer",
                write_bodies(tmp / "u", [uint8]),
                "application/octet-stream",
                uint8_header,
                4,
                10_000,
            ),
            "infer FP32": (
                "/v2/models/mnist/infer",
                write_bodies(tmp / "f", [fp32]),
                "application/octet-stream",
                fp32_header,
                4,
                10_000,
            ),
            "predict_image c=32": (
                "/predict_image",
                write_bodies(tmp / "p", pngs),
                form,
                None,
                32,
                1,
            ),
            "infer 1 image c=32": (
                "/v2/models/mnist/infer",
                write_bodies(tmp / "s", [b for b, _ in single]),
                "application/octet-stream",
                single[0][1],
                32,
                1,
            ),
        }
        home = tmp / "home"
        env = server_env(home, MODEL_PATH=str(args.model))
        home.mkdir()
        results: dict[str, list[float]] = {name: [] for name in contenders}
        with running_server(env, home / "server.log") as server:
            for round_index in range(args.rounds):
                names = list(contenders) if round_index % 2 == 0 else list(reversed(contenders))
                for name in names:
                    route, bodies, ctype, header, connections, per = contenders[name]
                    extra = ("Inference-Header-Content-Length", str(header)) if header else ("", "")
                    run = wrk(server.url, route, bodies, ctype, connections, args.duration, extra)
                    results[name].append(run["rps"] * per)
                    print(
                        f"round {round_index + 1} {name}: {run['rps'] * per:,.0f} images/s, "
                        f"p99 {run['p99_ms']:.1f} ms, errors {run['errors']}",
                        flush=True,
                    )
    median = {name: statistics.median(values) for name, values in results.items()}
    for name in ("infer UINT8", "infer FP32"):
        ratio = median[name] / median["bulk"]
        print(f"{name} / bulk: {ratio:.2f}x ({'met' if ratio >= 0.8 else 'not met'}: >= 0.8x)")
    ratio = median["infer 1 image c=32"] / median["predict_image c=32"]
    print(
        f"one-image infer / predict_image at c=32: {ratio:.2f}x "
        f"({'met' if ratio >= 0.8 else 'not met'}: >= 0.8x)"
    )


if __name__ == "__main__":
    main()
