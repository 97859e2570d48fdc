"""The decode policy: refuse from the header, before decoding, what would cost out of proportion.

Each attack file is built here, as small as it can be, and must be refused with a clear one-line
InvalidImageError fast (process time) and without a big allocation (tracemalloc for Python
memory, the RSS high-water mark for Pillow's and libtiff's C buffers).
"""

import contextlib
import io
import resource
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image, ImageDraw

from service import preprocess
from service.decode_policy import (
    MAX_GIF_BLOCKS,
    MAX_JPEG_SCAN_PIXELS,
    MAX_JPEG_SCANS,
    MAX_JPEG_SEGMENTS,
    MAX_PNG_CHUNKS,
    MAX_PNG_COMPRESSED_CHUNKS,
    MAX_RLE_BMP_PIXELS,
    MAX_STRAY_BYTES,
    MAX_TIFF_TAGS,
    MAX_WEBP_PIXELS,
    RLE_BMP_PASSES,
    SUPPORTED_FORMATS,
    ImageHeader,
    inspect_image,
)
from service.preprocess import (
    InvalidImageError,
    NoDigitFoundError,
    PreprocessError,
    decode_image,
    preprocess_image_bytes,
    to_mnist_array,
)
from tests.support.gil import longest_gil_hold_ms

FAST_S = 0.05  # process time a refusal may take (generous: a refusal is a header walk)
SMALL_BYTES = 20 * 2**20  # Python allocations during a refusal
RSS_GROWTH_KB = 20 * 1024  # growth of the process's RSS high-water mark during a refusal


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def pillow_plugins_loaded():
    """Pillow imports its plugins on the first open: a one-off cost no refusal should carry."""
    inspect_image(encode(Image.new("L", (8, 8))))


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def seven(size: int = 28) -> Image.Image:
    """A dark 7 on white paper."""
    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    draw.line([(size // 5, size // 5), (4 * size // 5, size // 5)], fill=0, width=max(2, size // 9))
    draw.line([(4 * size // 5, size // 5), (2 * size // 5, 9 * size // 10)], fill=0, width=3)
    return image


def peak_rss_kb() -> int:
    """The process's RSS high-water mark: Linux's VmHWM (resettable), else ru_maxrss."""
    try:
        return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
    except (OSError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measured(call: Callable[[], object]) -> tuple[object, float, int, int]:
    """(result or exception, process seconds, Python peak bytes, RSS high-water growth in KB).

    Timed without tracemalloc (which slows every allocation), then run again under it. On
    Linux the high-water mark is reset first, so the growth is this call's own peak.
    """
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    rss_before = peak_rss_kb()
    start = time.process_time()
    try:
        outcome: object = call()
    except Exception as exc:
        outcome = exc
    seconds = time.process_time() - start
    rss_growth = peak_rss_kb() - rss_before
    tracemalloc.start()
    with contextlib.suppress(Exception):
        call()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return outcome, seconds, peak, rss_growth


def assert_refused_cheaply(data: bytes, match: str, **kwargs) -> str:
    """preprocess_image_bytes and inspect_image both refuse ``data`` fast and without memory."""
    for function in (inspect_image, preprocess_image_bytes):
        outcome, seconds, peak, rss_growth = measured(lambda f=function: f(data, **kwargs))
        assert isinstance(outcome, InvalidImageError), f"{function.__name__}: {outcome!r}"
        message = str(outcome)
        assert match in message, message
        assert message and "\n" not in message
        assert seconds < FAST_S, f"{function.__name__} took {seconds:.3f} s"
        assert peak < SMALL_BYTES, f"{function.__name__} allocated {peak / 2**20:.1f} MB"
        assert rss_growth < RSS_GROWTH_KB, f"RSS peak grew {rss_growth / 1024:.0f} MB"
    return message


# --- GIF -----------------------------------------------------------------------------------------


def gif(screen: tuple[int, int], frame: tuple[int, int] = (0, 0), extensions: bytes = b"") -> bytes:
    """A GIF with a transparent 1x1 first frame at ``frame`` on a ``screen`` logical screen."""
    header = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    transparent = b"!\xf9\x04\x01\x00\x00\x00\x00"
    image = b"," + struct.pack("<HHHHB", *frame, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + extensions + transparent + image + b";"


def test_gif_logical_screen_over_the_limit_is_refused():
    data = gif((65535, 65535))
    assert len(data) < 50

    assert_refused_cheaply(data, "65535x65535")


def test_gif_first_frame_outside_the_screen_grows_the_canvas_and_is_refused():
    # Pillow enlarges the canvas to hold the first frame: the 28x28 screen is not the cost.
    assert_refused_cheaply(gif((28, 28), frame=(60000, 60000)), "60001x60001")


def test_gif_tiny_file_reports_its_whole_canvas_as_decoded_pixels():
    data = gif((6324, 6324))  # 43 bytes, 40 M pixels once decoded

    header, seconds, _, _ = measured(lambda: inspect_image(data))

    assert isinstance(header, ImageHeader)
    assert (header.format, header.width, header.height) == ("GIF", 6324, 6324)
    assert header.decoded_pixels == 6324 * 6324
    assert header.peak_bytes >= 6324 * 6324
    assert seconds < FAST_S
    assert_refused_cheaply(data, "too large", max_pixels=1_000_000)


def test_transparent_gif_canvas_is_composited_in_gray_not_rgba():
    # 2000x2000 transparent canvas: the old RGBA route took ~8 bytes a pixel on top of the frame.
    data = gif((2000, 2000))

    outcome, _, _, rss_growth = measured(lambda: decode_image(data))

    assert isinstance(outcome, Image.Image) and outcome.getextrema() == (255, 255)
    assert rss_growth < 4_000_000 * 6 // 1024


def test_gif_extension_flood_is_refused():
    data = gif((28, 28), extensions=b"!\xfe\x00" * (MAX_GIF_BLOCKS + 1))

    assert_refused_cheaply(data, "too many extension blocks")


def test_gif_stray_bytes_are_refused():
    data = gif((28, 28), extensions=b"\x00" * (MAX_STRAY_BYTES + 1))

    assert_refused_cheaply(data, "stray bytes")


def test_only_the_first_gif_frame_is_read():
    first = encode(seven(), "GIF")
    frames = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    data = first[:-1] + frames * 20_000 + b";"  # 20,000 more frames, never decoded

    outcome, seconds, _, _ = measured(lambda: preprocess_image_bytes(data))

    assert np.array_equal(outcome, preprocess_image_bytes(first))
    assert seconds < FAST_S


# --- WebP ----------------------------------------------------------------------------------------


def webp_lossless(width: int, height: int) -> bytes:
    """A 40-byte lossless WebP: a transparent row, its header patched to declare ``height``."""
    data = encode(Image.new("RGBA", (width, 1), (0, 0, 0, 0)), "WEBP", lossless=True)
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    (bits,) = struct.unpack_from("<I", data, 21)
    bits = bits & ~(0x3FFF << 14) | (height - 1) << 14
    return data[:21] + struct.pack("<I", bits) + data[25:]


def webp_canvas_header(width: int, height: int) -> bytes:
    """An extended (animated) WebP's header: the canvas libwebp allocates twice when it opens."""
    body = b"\x12\0\0\0" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def test_webp_canvas_is_refused_from_its_header():
    assert_refused_cheaply(webp_canvas_header(9000, 9000), "9000x9000")


def test_small_lossless_webp_declares_its_cost_before_decoding():
    # The 1.7 KB attack: a lossless WebP of a huge uniform canvas (~6 bytes a pixel to decode).
    data = webp_lossless(4000, 4000)

    header, seconds, _, _ = measured(lambda: inspect_image(data))

    assert isinstance(header, ImageHeader), header
    assert (header.format, header.width, header.height) == ("WEBP", 4000, 4000)
    assert header.decoded_pixels == 4000 * 4000
    assert header.peak_bytes > 6 * 4000 * 4000  # canvases, ARGB buffer, RGBA image, gray
    assert seconds < FAST_S
    assert_refused_cheaply(data, "4000x4000", max_pixels=10_000_000)


def test_webp_has_a_lower_pixel_limit_of_its_own():
    """Pillow copies a decoded WebP canvas holding the GIL (~2.4 ns a pixel): at 40 M pixels the
    worker's event loop stalled ~100 ms, so WebP stops at MAX_WEBP_PIXELS, other formats do not."""
    assert MAX_WEBP_PIXELS == 16_000_000
    message = assert_refused_cheaply(webp_lossless(4001, 4000), "4001x4000")
    assert "limit 16,000,000 pixels for WebP" in message
    assert "4001x4000" in assert_refused_cheaply(webp_canvas_header(4001, 4000), "for WebP")
    assert inspect_image(gif((6324, 6324))).decoded_pixels == 6324 * 6324  # other formats: 40 M
    limit = "limit 1,000,000 pixels"  # a lower general limit still applies to WebP too
    assert_refused_cheaply(webp_lossless(1001, 1000), limit, max_pixels=1_000_000)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "La"])
def test_transparent_40m_pixel_images_become_gray_without_holding_the_gil(mode):
    """getchannel holds the GIL (~2.4 ms a million pixels): on a 40 M-pixel image the old
    conversion kept other threads waiting 30-95 ms (La: two getchannel calls). Now the image is
    its own mask (RGBA, LA) or is converted in bands of 4 M pixels (PA, La)."""
    side = 6324
    base = Image.new("LA", (side, side), (100, 200))
    image = base if mode == "LA" else base.convert("RGBA") if mode == "RGBA" else None
    if image is None:
        image = Image.frombytes(mode, base.size, base.tobytes())
        if mode == "PA":
            image.putpalette(bytes(v for v in range(256) for _ in range(3)))  # gray ramp
    small = image.resize((64, 64), Image.Resampling.NEAREST)
    expected = 155 if mode == "La" else 133  # gray 100 at alpha 200 over white paper
    assert preprocess._to_gray(small).getextrema() == (expected, expected)

    hold = longest_gil_hold_ms(lambda: preprocess._to_gray(image))

    assert hold < 40, f"another thread waited {hold:.0f} ms"


# --- TIFF ----------------------------------------------------------------------------------------


def tiff(tags: dict[int, int | tuple[int, ...]], data: bytes = b"") -> bytes:
    """A little-endian TIFF with one directory; the tag value "-1" means "offset of ``data``".

    Scalars are stored as LONG, pairs of shorts inline; longer tuples as LONG arrays after it.
    """
    count = len(tags)
    data_at = 8 + 2 + 12 * count + 4
    arrays = b""
    entries = b""
    for tag, value in sorted(tags.items()):
        if isinstance(value, tuple) and len(value) == 2:
            entries += struct.pack("<HHIHH", tag, 3, 2, *value)
        elif isinstance(value, tuple):
            at = data_at + len(data) + len(arrays)
            arrays += struct.pack(f"<{len(value)}I", *value)
            entries += struct.pack("<HHII", tag, 4, len(value), at)
        else:
            entries += struct.pack("<HHII", tag, 4, 1, data_at if value == -1 else value)
    return b"II*\x00" + struct.pack("<IH", 8, count) + entries + b"\0\0\0\0" + data + arrays


def gray_tiff_tags(side: int = 28) -> dict[int, int | tuple[int, ...]]:
    return {256: side, 257: side, 258: 8, 259: 1, 262: 1, 277: 1}


def test_tiff_tile_bomb_is_refused():
    # 28x28 pixels, but one 46336x46336 tile: libtiff allocated and filled 2 GiB for it.
    stub = zlib.compress(b"\0" * 64)
    tags = gray_tiff_tags() | {259: 8, 322: 46336, 323: 46336, 324: -1, 325: len(stub)}
    data = tiff(tags, stub)
    assert len(data) < 200

    assert_refused_cheaply(data, "46336x46336 tiles for a 28x28 image")


def test_tiff_with_more_strips_than_its_size_needs_is_refused():
    # Pillow's uncompressed path decodes every listed strip, in a Python loop.
    pixels = b"\xff" * 28
    tags = gray_tiff_tags() | {273: (8 + 2 + 12 * 9 + 4,) * 10_000, 278: 1, 279: (28,) * 10_000}
    data = tiff(tags, pixels)

    assert_refused_cheaply(data, "lists 10,000 strips or tiles where its size needs 28")


def test_tiff_with_too_many_tags_is_refused():
    tags = gray_tiff_tags() | {273: -1, 279: 784} | {t: 0 for t in range(40000, 41100)}

    assert_refused_cheaply(tiff(tags, b"\xff" * 784), f"limit {MAX_TIFF_TAGS:,}")


def test_tiled_tiff_with_tiles_larger_than_a_small_image_still_decodes():
    # Writers use 256x256 tiles whatever the image: that is not a bomb.
    canvas = np.full((256, 256), 255, np.uint8)
    canvas[:28, :28] = np.asarray(seven())
    tile = zlib.compress(canvas.tobytes())
    tags = gray_tiff_tags() | {259: 8, 322: 256, 323: 256, 324: -1, 325: len(tile)}
    data = tiff(tags, tile)

    header = inspect_image(data)
    out = preprocess_image_bytes(data)

    assert header.decoded_pixels == 28 * 28 + 256 * 256  # the image plus libtiff's tile buffer
    assert np.array_equal(out, preprocess_image_bytes(encode(seven())))


def la_tiff(gray: np.ndarray, alpha: np.ndarray) -> bytes:
    """Uncompressed gray TIFF with associated (premultiplied) alpha: Pillow's mode "La"."""
    premultiplied = (gray.astype(np.uint16) * alpha // 255).astype(np.uint8)
    pixels = np.dstack([premultiplied, alpha]).tobytes()
    height, width = gray.shape
    tags = {256: width, 257: height, 258: (8, 8), 259: 1, 262: 1, 273: -1, 277: 2}
    return tiff(tags | {278: height, 279: len(pixels), 338: 1}, pixels)  # 338: ExtraSamples


def test_tiff_with_associated_alpha_is_composited_like_la():
    ink = 255 - np.asarray(seven())  # opaque black strokes, transparent elsewhere
    data = la_tiff(np.zeros((28, 28), np.uint8), ink)
    assert Image.open(io.BytesIO(data)).mode == "La"

    gray = np.asarray(decode_image(data))

    assert np.array_equal(gray, 255 - ink)  # over white: 0 * alpha + (255 - alpha)
    assert np.array_equal(preprocess_image_bytes(data), preprocess_image_bytes(encode(seven())))


@pytest.mark.parametrize("mode", ["La", "RGBa", "LA", "RGBA"])
def test_partial_alpha_is_composited_over_white(mode):
    # Black at half opacity over white paper is mid gray, premultiplied or not.
    source = ("LA", (0, 128)) if mode.startswith("L") else ("RGBA", (0, 0, 0, 128))
    image = Image.new(source[0], (4, 4), source[1]).convert(mode)

    assert set(to_mnist_array_input(image)) == {127}


def to_mnist_array_input(image: Image.Image) -> bytes:
    """The gray pixels to_mnist_array works on."""
    return preprocess._to_gray(image).tobytes()


# --- JPEG ----------------------------------------------------------------------------------------


def jpeg_parts(data: bytes) -> tuple[bytes, bytes]:
    """(everything before the last scan, the last scan with its data), of a Pillow JPEG."""
    last_scan = data.rindex(b"\xff\xda")
    return data[:last_scan], data[last_scan:-2]


def test_jpeg_with_too_many_scans_is_refused():
    # The 32 s attack repeated one tiny scan 20,000 times; a real progressive JPEG has ~10.
    head, scan = jpeg_parts(encode(Image.new("L", (8, 8), 128), "JPEG", progressive=True))
    data = head + scan * MAX_JPEG_SCANS + b"\xff\xd9"

    assert_refused_cheaply(data, f"too many scans (over {MAX_JPEG_SCANS}")


def test_jpeg_scans_times_pixels_are_bounded():
    # 6000x6000 declared, ~25 scans: each scan is a pass over 36 M pixels.
    head, scan = jpeg_parts(encode(Image.new("L", (8, 8), 128), "JPEG", progressive=True))
    sof = head.index(b"\xff\xc2")
    head = head[: sof + 5] + struct.pack(">HH", 6000, 6000) + head[sof + 9 :]
    data = head + scan * 20 + b"\xff\xd9"
    scans = data.count(b"\xff\xda")
    assert scans < MAX_JPEG_SCANS
    assert scans * 6000 * 6000 > MAX_JPEG_SCAN_PIXELS

    assert_refused_cheaply(data, f"{scans} scans of 6000x6000 pixels")


def test_real_progressive_jpeg_decodes_and_counts_its_scans():
    data = encode(seven(64).convert("RGB"), "JPEG", progressive=True, quality=95)

    header = inspect_image(data)

    assert 5 <= header.work_pixels // header.decoded_pixels <= 12
    assert preprocess_image_bytes(data).max() == 1.0


def test_jpeg_marker_flood_is_refused():
    data = encode(seven(), "JPEG")
    flood = b"\xff\xfe\x00\x02" * MAX_JPEG_SEGMENTS  # empty comments

    assert_refused_cheaply(data[:2] + flood + data[2:], "too many marker segments")


def test_jpeg_stray_bytes_are_refused():
    data = encode(seven(), "JPEG")
    first_segment = 4 + struct.unpack(">H", data[4:6])[0]

    padded = data[:first_segment] + b"\0" * (MAX_STRAY_BYTES + 1) + data[first_segment:]

    assert_refused_cheaply(padded, "stray or padding bytes")


def test_jpeg_exif_with_too_many_entries_is_refused():
    entries = 2000
    ifd = struct.pack("<H", entries) + struct.pack("<HHIHH", 270, 3, 1, 1, 0) * entries
    exif = b"Exif\0\0II*\0" + struct.pack("<I", 8) + ifd + b"\0\0\0\0"
    data = encode(seven(), "JPEG")
    segment = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif

    assert_refused_cheaply(data[:2] + segment + data[2:], "EXIF data has too many entries")


# --- PNG -----------------------------------------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_chunks(png: bytes, chunks: bytes) -> bytes:
    """``chunks`` inserted right after IHDR."""
    return png[:33] + chunks + png[33:]


def test_png_chunk_flood_is_refused():
    data = with_chunks(encode(seven()), png_chunk(b"zzZz", b"") * MAX_PNG_CHUNKS)

    assert_refused_cheaply(data, "too many chunks")


def test_png_compressed_text_flood_is_refused():
    text = png_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"a" * 1000))
    data = with_chunks(encode(seven()), text * (MAX_PNG_COMPRESSED_CHUNKS + 1))

    assert_refused_cheaply(data, "too many compressed text")


def test_png_exif_with_too_many_entries_is_ignored_not_parsed():
    # An EXIF orientation hidden behind 60,000 entries: keep the pixels as stored, quickly.
    entries = [struct.pack("<HHIHH", 0x0112, 3, 1, 3, 0)] * 60_000
    exif = b"II*\0" + struct.pack("<IH", 8, len(entries)) + b"".join(entries) + b"\0\0\0\0"
    data = encode(seven(), exif=exif)

    outcome, seconds, _, _ = measured(lambda: preprocess_image_bytes(data))

    assert np.array_equal(outcome, preprocess_image_bytes(encode(seven())))
    assert seconds < FAST_S


# --- BMP, PPM/PGM --------------------------------------------------------------------------------


def rle8_bmp(width: int, height: int, rows: bytes) -> bytes:
    palette = b"".join(bytes((v, v, v, 0)) for v in range(256))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(rows), 0, 0, 256, 0)
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset) + info + palette + rows


def test_rle_bmp_over_its_limit_is_refused():
    # One pixel then end-of-line per row: Pillow pads each row a pixel at a time, in Python.
    data = rle8_bmp(1100, 1000, b"\x01\xff\x00\x00" * 1000 + b"\x00\x01")
    assert MAX_RLE_BMP_PIXELS < 1100 * 1000 and len(data) < 6000

    assert_refused_cheaply(data, "run-length encoded BMP is too large")


def test_small_rle_bmp_decodes_and_declares_its_python_cost():
    # Encoded mode, one pixel per run (gray palette: index = level), rows bottom-up, EOL each.
    pixels = np.asarray(seven())[::-1]
    rows = b"".join(b"".join(bytes((1, v)) for v in row) + b"\0\0" for row in pixels)
    data = rle8_bmp(28, 28, rows + b"\0\1")

    header = inspect_image(data)
    out = preprocess_image_bytes(data)

    assert header.work_pixels == RLE_BMP_PASSES * 28 * 28
    assert np.array_equal(out, preprocess_image_bytes(encode(seven())))


def test_pgm_with_a_comment_flood_is_refused_as_unsupported():
    # 1 M comment lines cost 13 s; PPM/PGM are not in the accepted list any more.
    data = b"P2\n" + b"#\n" * 100_000 + b"28 28\n255\n" + b"0 " * 784
    assert "PPM" not in SUPPORTED_FORMATS

    assert_refused_cheaply(data, "not a supported image file")


# --- modes, and no other exception type ----------------------------------------------------------


def odd_mode_images() -> dict[str, Image.Image]:
    base = seven()
    transparent_p = base.convert("P")
    transparent_p.info["transparency"] = 255
    levels = (np.asarray(base).astype(np.uint16) * 257).astype(">u2")
    deep = Image.frombytes("I;16B", base.size, levels.tobytes())
    return {
        "LA": base.convert("LA"),
        "La": base.convert("LA").convert("La"),
        "PA": base.convert("RGB").convert("P").convert("PA"),
        "RGBa": base.convert("RGBA").convert("RGBa"),
        "CMYK": base.convert("CMYK"),
        "YCbCr": base.convert("YCbCr"),
        "I;16B": deep,
        "1": base.convert("1"),
        "P+transparency": transparent_p,
        "LAB": base.convert("RGB").convert("LAB"),
    }


@pytest.mark.parametrize("name", list(odd_mode_images()))
def test_odd_modes_convert_without_exceptions(name):
    image = odd_mode_images()[name]

    out = to_mnist_array(image)

    reference = to_mnist_array(seven())
    assert np.corrcoef(out.ravel(), reference.ravel())[0, 1] > 0.95


@pytest.mark.parametrize(
    ("fmt", "mode"), [("TIFF", "I;16B"), ("TIFF", "CMYK"), ("TIFF", "YCbCr"), ("PNG", "1")]
)
def test_odd_modes_decode_from_files(fmt, mode):
    image = odd_mode_images()[mode]

    out = preprocess_image_bytes(encode(image, fmt))

    assert np.corrcoef(out.ravel(), to_mnist_array(seven()).ravel())[0, 1] > 0.95


def test_an_unexpected_failure_becomes_a_generic_invalid_image_error(monkeypatch):
    def broken(image):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(preprocess, "to_mnist_array", broken)

    with pytest.raises(InvalidImageError, match=r"^the image could not be processed$"):
        preprocess_image_bytes(encode(seven()))


@pytest.mark.filterwarnings("ignore")  # Pillow warns about many of the broken files
def test_mutated_files_raise_only_preprocess_errors():
    rng = np.random.default_rng(0)
    seeds = [
        encode(seven(), fmt, **params)
        for fmt, params in [
            ("PNG", {}),
            ("JPEG", {"progressive": True}),
            ("GIF", {}),
            ("BMP", {}),
            ("WEBP", {}),
            ("TIFF", {"compression": "tiff_deflate"}),
        ]
    ]
    for seed in seeds:
        for _ in range(40):
            data = bytearray(seed)
            for at in rng.integers(0, len(data), 3):
                data[at] = int(rng.integers(0, 256))
            try:
                preprocess_image_bytes(bytes(data))
            except PreprocessError as exc:
                assert str(exc) and "\n" not in str(exc)


def test_inspect_image_of_a_plain_png():
    header = inspect_image(encode(seven(100).convert("RGB")))

    assert header == ImageHeader(
        format="PNG",
        mode="RGB",
        width=100,
        height=100,
        decoded_pixels=10_000,
        work_pixels=10_000,
        peak_bytes=header.peak_bytes,
    )
    assert 10_000 * 4 < header.peak_bytes < 10_000 * 16 + 8 * 2**20


def test_no_digit_is_not_an_invalid_image():
    with pytest.raises(NoDigitFoundError):
        preprocess_image_bytes(gif((64, 64)))
