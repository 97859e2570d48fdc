"""Worst-case decode cost of the largest image each decode-policy limit admits, per format.

    .venv/bin/python benchmarks/decode_worst_case.py            # every case
    .venv/bin/python benchmarks/decode_worst_case.py jpeg tiff  # cases whose name contains a word

Each case runs ``preprocess_image_bytes`` once in its own subprocess (so peaks are separate) and
prints wall and CPU seconds, the peak RSS above the process's baseline (ru_maxrss, which sees
Pillow's and libwebp's C buffers), the decoder's own estimate ``ImageHeader.peak_bytes``, and
the longest the main thread, ticking every 1 ms while the decode runs in another thread, had
to wait ("GIL ms": how long the decode can stall a worker's event loop).
The files are built once and cached in the temp directory (building them takes ~1 minute).
The table in ``service/decode_policy.py``'s docstring comes from this output.
"""

import contextlib
import io
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image, ImageDraw  # noqa: E402

from service.decode_policy import (  # noqa: E402
    MAX_GIF_BLOCKS,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    MAX_JPEG_SCAN_PIXELS,
    MAX_JPEG_SCANS,
    MAX_JPEG_SEGMENTS,
    MAX_PNG_CHUNKS,
    MAX_RLE_BMP_PIXELS,
    MAX_TIFF_TAGS,
    MAX_WEBP_PIXELS,
    MIN_TIFF_BLOCK_AREA,
)
from tests.support.gil import longest_wait_ms  # noqa: E402

SIDE = int(MAX_IMAGE_PIXELS**0.5)  # 6324: the largest square the pixel limit admits
WEBP_SIDE = int(MAX_WEBP_PIXELS**0.5)  # 4000: WebP's own limit
CACHE = Path(tempfile.gettempdir()) / "decode_worst_case"


def digit(side: int = SIDE, mode: str = "L") -> Image.Image:
    """A dark 7 on white paper, ``side`` pixels square."""
    image = Image.new("L", (side, side), 255)
    draw = ImageDraw.Draw(image)
    width = max(2, side // 12)
    draw.line([(side // 5, side // 5), (4 * side // 5, side // 5)], fill=0, width=width)
    draw.line([(4 * side // 5, side // 5), (2 * side // 5, 9 * side // 10)], fill=0, width=width)
    return image.convert(mode)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_rgba16() -> bytes:
    """16-bit RGBA (8 bytes a pixel as stored): zero rows, compressed."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        checksum = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + checksum

    row = b"\x00" * (1 + SIDE * 8)
    packer = zlib.compressobj(1)
    idat = b"".join(packer.compress(row) for _ in range(SIDE)) + packer.flush()
    header = struct.pack(">IIBBBBB", SIDE, SIDE, 16, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + b"".join(chunk(b"IDAT", idat[i : i + 65536]) for i in range(0, len(idat), 65536))
        + chunk(b"IEND", b"")
    )


def jpeg_with_scans(side: int, scans: int) -> bytes:
    """A progressive JPEG whose last scan is repeated until it has ``scans`` scans."""
    data = encode(digit(side, "RGB"), "JPEG", progressive=True, quality=90)
    have = data.count(b"\xff\xda")
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * (scans - have) + b"\xff\xd9"


def rle8_eol_flood(side: int) -> bytes:
    """RLE8: one pixel then end-of-line per row, which Pillow pads a pixel at a time."""
    rows = b"\x01\x00\x00\x00" * side + b"\x00\x01"
    palette = b"".join(bytes((v, v, v, 0)) for v in range(256))
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 8, 1, len(rows), 0, 0, 256, 0)
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset) + info + palette + rows


def tiff_strips(width: int, height: int, compression: str | None) -> bytes:
    """Gray TIFF with one-row strips: ``height`` strips."""
    params: dict[str, object] = {"tiffinfo": {278: 1}}
    if compression:
        params["compression"] = compression
    return encode(digit(max(width, height)).resize((width, height)), "TIFF", **params)


def tiff_big_tile() -> bytes:
    """28x28 gray, deflate, one tile of MIN_TIFF_BLOCK_AREA pixels (the largest tile allowed)."""
    side = int(MIN_TIFF_BLOCK_AREA**0.5)
    tile = zlib.compress(b"\xff" * (side * side))
    tags = [(256, 28), (257, 28), (258, 8), (259, 8), (262, 1), (277, 1), (322, side)]
    tags += [(323, side), (324, 8 + 2 + 12 * 10 + 4), (325, len(tile))]
    entries = b"".join(struct.pack("<HHII", tag, 4, 1, value) for tag, value in tags)
    return b"II*\x00" + struct.pack("<IH", 8, len(tags)) + entries + b"\0\0\0\0" + tile


def png_chunk_limit() -> bytes:
    """A 28x28 PNG with as many (empty, unknown) chunks as MAX_PNG_CHUNKS allows."""
    data = encode(digit(28), "PNG")
    empty = b"\0\0\0\0zzZz" + struct.pack(">I", zlib.crc32(b"zzZz"))
    return data[:33] + empty * (MAX_PNG_CHUNKS - 4) + data[33:]


def jpeg_segment_limit() -> bytes:
    """A 28x28 JPEG with as many (empty comment) segments as MAX_JPEG_SEGMENTS allows."""
    data = encode(digit(28), "JPEG")
    return data[:2] + b"\xff\xfe\x00\x02" * (MAX_JPEG_SEGMENTS - 10) + data[2:]


def gif_block_limit() -> bytes:
    """A 28x28 GIF whose comment has as many 1-byte sub-blocks as MAX_GIF_BLOCKS allows."""
    data = encode(digit(28), "GIF")
    start = data.index(b",")
    return data[:start] + b"!\xfe" + b"\x01a" * (MAX_GIF_BLOCKS - 2) + b"\x00" + data[start:]


def tiff_tag_limit() -> bytes:
    """A 28x28 TIFF with MAX_TIFF_TAGS directory entries (unknown tags besides the real ones)."""
    tags = {t: 0 for t in range(41000, 41000 + MAX_TIFF_TAGS - 11)}
    return encode(digit(28), "TIFF", tiffinfo=tags)


CASES: list[tuple[str, Callable[[], bytes]]] = [
    (f"PNG 28x28, {MAX_PNG_CHUNKS:,} chunks", png_chunk_limit),
    (f"JPEG 28x28, {MAX_JPEG_SEGMENTS:,} segments", jpeg_segment_limit),
    (f"GIF 28x28, {MAX_GIF_BLOCKS:,} comment blocks", gif_block_limit),
    (f"TIFF 28x28, {MAX_TIFF_TAGS:,} tags", tiff_tag_limit),
    (f"PNG gray 8-bit {SIDE}x{SIDE}", lambda: encode(digit(), "PNG")),
    (f"PNG RGBA 16-bit {SIDE}x{SIDE}", png_rgba16),
    (f"JPEG baseline RGB {SIDE}x{SIDE}", lambda: encode(digit(mode="RGB"), "JPEG", quality=90)),
    (f"JPEG progressive RGB {SIDE}x{SIDE}", lambda: jpeg_with_scans(SIDE, 10)),
    (
        f"JPEG {MAX_JPEG_SCAN_PIXELS // SIDE**2} scans {SIDE}x{SIDE} (scan-pixel limit)",
        lambda: jpeg_with_scans(SIDE, MAX_JPEG_SCAN_PIXELS // SIDE**2),
    ),
    (
        f"JPEG {MAX_JPEG_SCANS} scans, {MAX_JPEG_SCAN_PIXELS // MAX_JPEG_SCANS:,} px",
        lambda: jpeg_with_scans(int((MAX_JPEG_SCAN_PIXELS // MAX_JPEG_SCANS) ** 0.5), 100),
    ),
    (f"JPEG CMYK {SIDE}x{SIDE}", lambda: encode(digit(mode="CMYK"), "JPEG", quality=90)),
    (
        f"GIF transparent {SIDE}x{SIDE} canvas",
        lambda: encode(digit(mode="P"), "GIF", transparency=0),
    ),
    (f"BMP 1-bit {SIDE}x{SIDE}", lambda: encode(digit(mode="1"), "BMP")),
    (f"BMP 24-bit {SIDE}x{SIDE}", lambda: encode(digit(mode="RGB"), "BMP")),
    (
        f"BMP RLE8 EOL flood {int(MAX_RLE_BMP_PIXELS**0.5)}^2",
        lambda: rle8_eol_flood(int(MAX_RLE_BMP_PIXELS**0.5)),
    ),
    (
        f"WebP lossless RGBA {WEBP_SIDE}x{WEBP_SIDE}",
        lambda: encode(Image.new("RGBA", (WEBP_SIDE, WEBP_SIDE)), "WEBP", lossless=True, method=0),
    ),
    (
        f"WebP lossy RGB {WEBP_SIDE}x{WEBP_SIDE}",
        lambda: encode(digit(WEBP_SIDE, "RGB"), "WEBP", method=0),
    ),
    (
        f"TIFF deflate RGBA {SIDE}x{SIDE}",
        lambda: encode(digit(mode="RGBA"), "TIFF", compression="tiff_deflate"),
    ),
    (
        f"TIFF float32 {SIDE}x{SIDE}",
        lambda: encode(digit(mode="F"), "TIFF", compression="tiff_deflate"),
    ),
    (
        f"TIFF raw {MAX_IMAGE_SIDE:,} one-row strips, 40 M px",
        lambda: tiff_strips(MAX_IMAGE_PIXELS // MAX_IMAGE_SIDE, MAX_IMAGE_SIDE, None),
    ),
    (
        f"TIFF deflate {MAX_IMAGE_SIDE:,} one-row strips, 40 M px",
        lambda: tiff_strips(MAX_IMAGE_PIXELS // MAX_IMAGE_SIDE, MAX_IMAGE_SIDE, "tiff_deflate"),
    ),
    (
        f"TIFF raw 28x{MAX_IMAGE_SIDE:,}, one-row strips",
        lambda: tiff_strips(28, MAX_IMAGE_SIDE, None),
    ),
    ("TIFF 28x28, one 1024x1024 tile", tiff_big_tile),
]


def peak_rss_kb() -> int:
    """This process's RSS high-water mark (Linux VmHWM; ru_maxrss elsewhere).

    ru_maxrss would also count the parent's RSS at fork time, which survives exec.
    """
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0])
    except (OSError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def reset_peak_rss() -> None:
    """Start the high-water mark again at the current RSS, where Linux allows it."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def run_one(path: str) -> None:
    """Child process: decode one file, print its measurements as JSON."""
    from service.decode_policy import inspect_image
    from service.preprocess import PreprocessError, preprocess_image_bytes

    data = Path(path).read_bytes()
    preprocess_image_bytes(encode(digit(28), "PNG"))  # load Pillow's plugins first
    header = inspect_image(data)
    reset_peak_rss()
    baseline = peak_rss_kb()
    result: list[str] = []

    def decode() -> None:
        try:
            preprocess_image_bytes(data)
            result.append("ok")
        except PreprocessError as exc:
            result.append(str(exc))

    wall, cpu = time.perf_counter(), time.process_time()
    longest_ms, _ = longest_wait_ms(decode)  # a 1 ms ticker beside the decode: its GIL holds
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    outcome = result[0]
    peak = peak_rss_kb() - baseline
    print(
        json.dumps(
            {
                "bytes": len(data),
                "seconds": wall,
                "cpu": cpu,
                "peak_mb": peak / 1024,
                "estimate_mb": header.peak_bytes / 2**20,
                "work_mpx": header.work_pixels / 1e6,
                "gil_ms": longest_ms,
                "outcome": outcome,
            }
        )
    )


def main(words: list[str]) -> None:
    CACHE.mkdir(exist_ok=True)
    print(
        f"{'case':48} {'file':>9} {'wall s':>7} {'cpu s':>6} {'peak MB':>8} "
        f"{'est. MB':>8} {'work Mpx':>9} {'GIL ms':>7}  outcome"
    )
    for name, build in CASES:
        if words and not any(word.lower() in name.lower() for word in words):
            continue
        path = CACHE / (name.replace(" ", "_").replace("/", "_").replace(",", "") + ".bin")
        if not path.exists():
            path.write_bytes(build())
        env = dict(os.environ, OMP_NUM_THREADS="1")
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        if done.returncode:
            print(f"{name:48} failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{name:48} {row['bytes'] / 1e6:>7.2f}MB {row['seconds']:>7.2f} {row['cpu']:>6.2f} "
            f"{row['peak_mb']:>8.0f} {row['estimate_mb']:>8.0f} {row['work_mpx']:>9.0f} "
            f"{row['gil_ms']:>7.0f}  {row['outcome'][:40]}",
            flush=True,
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        run_one(sys.argv[2])
    else:
        main(sys.argv[1:])
