"""Decide from what an image file declares, before any pixel is decoded, whether to decode it.

A file's size says nothing about its decoding cost: 43 bytes of GIF declare a 40 M-pixel canvas,
151 bytes of TIFF a 2 GiB tile, 26 KB of RLE BMP cost 5 s in Pillow's pure-Python decoder, and a
progressive JPEG can repeat a tiny scan 20,000 times. So every check here reads only headers and
container structure (chunks, segments, blocks, directory entries) with cheap byte-level walks, and
``open_image`` returns a Pillow image that has not decoded anything yet, with an ``ImageHeader``
that tells the caller what decoding will cost, so a request path can budget pixels per request and
per worker, and decide whether to decode inline (tiny) or in a thread.

Only the first frame of an animation is ever decoded, and frames are never counted: counting a
GIF's frames means reading all of them.

Worst cases measured on the build machine (2026-12-01, 2 shared cores at load ~3, Pillow 13, one
subprocess per case: ``.venv/bin/python benchmarks/decode_worst_case.py``), for the largest image
each limit admits (6324x6324 = 40 M pixels, the default ``max_pixels``; WebP 4000x4000): wall
seconds of one ``preprocess_image_bytes`` call, the process's peak RSS above its baseline,
``peak_bytes``, and the longest a thread ticking every 1 ms waited while the decode ran in
another (the GIL the decode holds: how long it can stall a worker's event loop):

    ==============================================  =====  ========  =======  ========  ======
    case (file size)                                wall s  peak MB  est. MB  work Mpx  GIL ms
    ==============================================  =====  ========  =======  ========  ======
    PNG gray 8-bit 6324^2 (70 KB)                    0.13      72      118        40       5
    PNG RGBA 16-bit 6324^2 (1.4 MB)                  0.40     229      309        40      10
    JPEG baseline RGB 6324^2 (0.7 MB)                0.25     192      233        40       8
    JPEG progressive RGB, 10 scans, 6324^2           0.44     268      462       400       8
    JPEG progressive, 20 scans, 6324^2 (scan limit)  0.62     268      462       800       7
    JPEG progressive, 100 scans, 8 M pixels          0.34      54       96       800       5
    JPEG CMYK 6324^2 (2 MB)                          0.43     344      385        40       7
    GIF transparent 6324^2 canvas (60 KB)            0.16      76      118        40       3
    BMP 1-bit 6324^2 (5 MB)                          0.09      77      118        40       5
    BMP 24-bit 6324^2 (120 MB)                       0.21     191      233        40       7
    BMP RLE8 1024^2, an end-of-line per row (10 KB)  0.14       3        9        67      11
    WebP lossless RGBA 4000^2 (WebP's pixel limit)   0.25     244      279        16      39
    WebP lossy RGB 4000^2 (70 KB)                    0.38     245      248        16      44
    TIFF deflate RGBA 6324^2 (0.3 MB)                0.38     229      309        40       9
    TIFF deflate float32 6324^2 (0.3 MB)             1.10     522      576        40      12
    TIFF raw, 30,000 one-row strips (40 MB)          0.30      47      126        40      11
    TIFF deflate, 30,000 one-row strips (1 MB)       0.15      41      118        40       8
    TIFF 28x28 with one 1024x1024 tile               0.00       1        5         1       3
    PNG 28x28 with 8,192 chunks (MAX_PNG_CHUNKS)     0.03       0        4         0      12
    JPEG 28x28 with 1,000 segments                   0.00       1        4         0       3
    GIF 28x28 with 4,096 comment sub-blocks          0.00       0        4         0       3
    TIFF 28x28 with 1,024 tags (MAX_TIFF_TAGS)       0.01       0        4         0       7
    ==============================================  =====  ========  =======  ========  ======

So one image at the limits costs at most ~1 s of CPU and ~0.6 GB; ``work_pixels`` at 26 ns
each and ``peak_bytes`` bound every case above. A refusal costs a few milliseconds at most.
Before WebP had a limit of its own, a 6324^2 WebP held the GIL ~100 ms (Pillow copies the
decoded canvas into a Python object with it held), and the gray conversion of a transparent
40 M-pixel image held it 50-95 ms (getchannel); see ``MAX_WEBP_PIXELS`` and
``preprocess._in_bands``.
"""

import io
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

MAX_IMAGE_PIXELS = 40_000_000
"""Default pixel limit: a 6000x6000 photo passes, decompression bombs do not."""

MAX_IMAGE_SIDE = 30_000
"""No side may be longer than this, whatever the pixel count (e.g. a 1x40_000_000 strip)."""

SUPPORTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
"""Pillow decoders we accept (JPEG includes MPO). Not PPM/PGM: their plain-text variants let
1 M comment lines cost 13 s, and the README never listed them. Others (EPS via Ghostscript...)
add risk for no use."""

MAX_WEBP_PIXELS = 16_000_000
"""WebP's own pixel limit. Pillow's WebP decoder copies the decoded RGBA canvas into a Python
object while holding the GIL, ~2.4 ns a pixel (measured: 97 ms of a 40 M-pixel decode in a
thread during which no other thread ran, so the worker's event loop stalled). 16 M pixels (a
4000x4000 photo) keeps that under ~40 ms; every other decoder here releases the GIL."""

MAX_JPEG_SCANS = 100
"""A real progressive JPEG has about 10 scans; libtiff refuses JPEG data above 100 too."""

MAX_JPEG_SCAN_PIXELS = 20 * MAX_IMAGE_PIXELS
"""Scans x pixels: each scan costs a pass over the image, so a 40 M-pixel JPEG gets 20 scans."""

MAX_JPEG_SEGMENTS = 1_000
"""Marker segments in the first image; Pillow reads those before the first scan in Python."""

MAX_STRAY_BYTES = 4_096
"""Bytes between markers or blocks that Pillow skips one Python loop turn at a time."""

MAX_PNG_CHUNKS = 8_192
"""Pillow handles each PNG chunk in Python (~5 us): 10 MB of 1 KB chunks pass, a flood does not."""

MAX_PNG_COMPRESSED_CHUNKS = 16
"""zTXt, compressed iTXt and iCCP chunks: each may inflate to 1 MB (Pillow's own cap)."""

MAX_GIF_BLOCKS = 4_096
"""Extension sub-blocks before the first image (Pillow keeps every comment block)."""

MAX_TIFF_TAGS = 1_024
"""Entries in one TIFF/EXIF directory; Pillow parses them one by one in Python (~5 us each)."""

MAX_TIFF_BLOCKS = 32_768
"""Strips or tiles (times planes): enough for one-row strips of a 30,000-row image."""

MIN_TIFF_BLOCK_AREA = 1 << 20
"""A tile may exceed the image (rounded up to 16) only while it stays this small (1024x1024)."""

MAX_RLE_BMP_PIXELS = 1 << 20
"""Pillow decodes RLE BMPs in Python, up to ~140 ns a pixel: 1024x1024 costs about 0.15 s."""

RLE_BMP_PASSES = 64
"""How many C-decoder pixels one pixel of Pillow's Python RLE decoder costs, for work_pixels."""


class PreprocessError(ValueError):
    """Base of all preprocessing failures; ``str(exc)`` is a one-line message for the user."""


class InvalidImageError(PreprocessError):
    """The bytes are not a usable image: empty, undecodable, unsupported, truncated or too big."""


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What an image file declares, read without decoding it: the cost of decoding it.

    ``decoded_pixels`` is what the decoder allocates (the canvas, plus for compressed TIFF one
    strip or tile buffer), ``work_pixels`` the decoding work in pixel passes (a progressive
    JPEG's scans times its pixels; Pillow's Python RLE BMP decoder counts RLE_BMP_PASSES a
    pixel), and ``peak_bytes`` an upper estimate of the memory ``preprocess_image_bytes`` peaks
    at for this image (decoder buffers, the stored image and the gray conversion).
    """

    format: str
    mode: str
    width: int
    height: int
    decoded_pixels: int
    work_pixels: int
    peak_bytes: int


@dataclass(slots=True)
class _Declared:
    """Facts a byte-level walk found before Pillow opens the file."""

    width: int | None = None
    height: int | None = None
    passes: int = 1  # decoding passes over the pixels (JPEG scans)
    format: str | None = None  # Pillow's name for it, where a format has limits of its own
    block_pixels: int = 0  # one TIFF strip/tile buffer that libtiff allocates besides the canvas
    extra_bytes_per_pixel: int = 0  # decoder-side buffers (WebP canvases, JPEG coefficients)
    overhead_bytes: int = 0  # bookkeeping that grows with the structure (Pillow's strip list)


def inspect_image(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageHeader:
    """Check ``data``'s headers against every limit and say what decoding it will cost.

    Decodes no pixels: fast (well under a millisecond for small files) and safe to call on the
    event loop. Raises InvalidImageError with a one-line message when the image is refused.
    """
    image, header = open_image(data, max_pixels=max_pixels)
    image.close()
    return header


def open_image(
    data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS
) -> tuple[Image.Image, ImageHeader]:
    """``Image.open`` behind every header check; the returned image has decoded nothing yet.

    Pillow's own bomb limit, when lower than ``max_pixels``, applies too.
    """
    if not data:
        raise InvalidImageError("the image is empty (0 bytes)")
    pillow_limit = Image.MAX_IMAGE_PIXELS
    limit = max_pixels if pillow_limit is None else min(max_pixels, pillow_limit)
    declared = _walk(data)
    if declared.width is not None and declared.height is not None:
        _check_size(declared.width, declared.height, limit)
        _check_format_size(declared.format, declared.width, declared.height, limit)
    try:
        image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except UnidentifiedImageError as exc:
        raise InvalidImageError(
            f"not a supported image file (supported: {', '.join(SUPPORTED_FORMATS)})"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError(f"the image is too large (over {limit:,} pixels)") from exc
    except Exception as exc:  # Pillow raises many types on hostile input; all mean "corrupt".
        raise InvalidImageError("the image file is corrupt and cannot be decoded") from exc
    try:
        width, height = image.size
        _check_size(width, height, limit)
        _check_format_size(image.format, width, height, limit)
        pixels = width * height
        passes = declared.passes
        if image.format == "BMP" and image.tile and image.tile[0][0] == "bmp_rle":
            if pixels > MAX_RLE_BMP_PIXELS:
                raise InvalidImageError(
                    f"the run-length encoded BMP is too large: {width}x{height} pixels "
                    f"(limit {MAX_RLE_BMP_PIXELS:,} pixels for compressed BMPs)"
                )
            passes = RLE_BMP_PASSES
        decoded = pixels + declared.block_pixels
        header = ImageHeader(
            format=image.format or "unknown",
            mode=image.mode,
            width=width,
            height=height,
            decoded_pixels=decoded,
            work_pixels=decoded * passes,
            peak_bytes=_peak_bytes(image.mode, pixels, declared, rle=passes == RLE_BMP_PASSES),
        )
    except BaseException:
        image.close()
        raise
    return image, header


def exif_entries(blob: bytes) -> int:
    """Entries the first directory of an EXIF blob declares (Pillow parses each in Python)."""
    if blob.startswith(b"Exif\x00\x00"):
        blob = blob[6:]
    order = {b"II": "<", b"MM": ">"}.get(blob[:2])
    if order is None or len(blob) < 8:
        return 0
    if blob[2] == 43:  # BigTIFF layout
        if len(blob) < 16:
            return 0
        (offset,) = struct.unpack_from(order + "Q", blob, 8)
        return struct.unpack_from(order + "Q", blob, offset)[0] if offset + 8 <= len(blob) else 0
    (offset,) = struct.unpack_from(order + "I", blob, 4)
    return struct.unpack_from(order + "H", blob, offset)[0] if offset + 2 <= len(blob) else 0


def _check_size(width: int, height: int, limit: int) -> None:
    if width < 1 or height < 1:
        raise InvalidImageError(f"the image has no pixels ({width}x{height})")
    if width * height > limit or max(width, height) > MAX_IMAGE_SIDE:
        raise InvalidImageError(
            f"the image is too large: {width}x{height} pixels (limit {limit:,} pixels, "
            f"{MAX_IMAGE_SIDE:,} per side)"
        )


def _check_format_size(fmt: str | None, width: int, height: int, limit: int) -> None:
    """A format whose decoder holds the GIL for long has a lower pixel limit of its own."""
    if fmt == "WEBP" and width * height > min(limit, MAX_WEBP_PIXELS):
        raise InvalidImageError(
            f"the WebP image is too large: {width}x{height} pixels (limit "
            f"{min(limit, MAX_WEBP_PIXELS):,} pixels for WebP; other formats up to {limit:,})"
        )


def _peak_bytes(mode: str, pixels: int, declared: _Declared, *, rle: bool) -> int:
    """Upper estimate of the decode + gray-conversion peak, from the Pillow mode's storage."""
    stored = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        convert = 3  # gray, alpha and the composited result
    elif mode in ("I", "F") or mode.startswith("I;16"):
        convert = 10  # a copy of the raw values, float32 work array, the 8-bit result
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        convert = 5  # Pillow goes through RGB
    else:
        convert = 1
    per_pixel = stored + convert + 1 + declared.extra_bytes_per_pixel + (2 if rle else 0)
    fixed = declared.overhead_bytes + (4 << 20)
    return pixels * per_pixel + declared.block_pixels * stored + fixed


# --- byte-level walks, one per format, before Pillow sees the bytes ----------------------------


def _walk(data: bytes) -> _Declared:
    """Walk the container structure of ``data`` for its format (if recognised)."""
    walker = _walker(data[:16])
    if walker is None:
        return _Declared()  # Pillow decides: unsupported, or a format with fixed-size headers
    try:
        return walker(data)
    except InvalidImageError:
        raise
    except Exception as exc:  # a structure no decoder could make sense of either
        raise InvalidImageError("the image file is corrupt and cannot be decoded") from exc


def _walker(prefix: bytes) -> Callable[[bytes], _Declared] | None:
    if prefix.startswith(b"\x89PNG\r\n\x1a\n"):
        return _walk_png
    if prefix.startswith(b"\xff\xd8\xff"):
        return _walk_jpeg
    if prefix[:6] in (b"GIF87a", b"GIF89a"):
        return _walk_gif
    if prefix[:4] == b"RIFF" and prefix[8:12] == b"WEBP":
        return _walk_webp
    if prefix[:2] in (b"II", b"MM") and prefix[2:4] in (b"*\x00", b"\x00*", b"+\x00", b"\x00+"):
        return _walk_tiff
    return None


def _refuse_exif(blob: bytes) -> None:
    entries = exif_entries(blob)
    if entries > MAX_TIFF_TAGS:
        raise InvalidImageError(
            f"the image's EXIF data has too many entries ({entries:,}; limit {MAX_TIFF_TAGS:,})"
        )


def _walk_png(data: bytes) -> _Declared:
    """Count chunks (each one costs a Python turn in Pillow) and read IHDR's size."""
    declared = _Declared()
    size = len(data)
    pos = 8
    chunks = compressed = 0
    while pos + 8 <= size:
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise InvalidImageError(f"the PNG has too many chunks (over {MAX_PNG_CHUNKS:,})")
        body = pos + 8
        if kind == b"IHDR" and length >= 8 and body + 8 <= size:
            declared.width, declared.height = struct.unpack_from(">II", data, body)
        elif kind in (b"zTXt", b"iCCP") or (kind == b"iTXt" and _itxt_compressed(data, body)):
            compressed += 1
            if compressed > MAX_PNG_COMPRESSED_CHUNKS:
                raise InvalidImageError(
                    f"the PNG has too many compressed text or profile chunks "
                    f"(over {MAX_PNG_COMPRESSED_CHUNKS})"
                )
        elif kind == b"IEND":
            break
        pos = body + length + 4
    return declared


def _itxt_compressed(data: bytes, body: int) -> bool:
    end = data.find(b"\x00", body, body + 80)  # keyword: 1-79 bytes, then NUL, then the flag
    return end >= 0 and end + 1 < len(data) and data[end + 1] == 1


_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # skips entropy-coded scan data
_JPEG_FILL = re.compile(rb"\xff+")
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_PROGRESSIVE = frozenset((0xC2, 0xC6, 0xCA, 0xCE))


def _walk_jpeg(data: bytes) -> _Declared:
    """Walk the first image's marker segments: count them, their stray bytes and the scans.

    Entropy-coded data never holds 0xFF followed by anything but 0x00 or a restart marker, so
    a regular expression skips each scan's data in C.
    """
    declared = _Declared()
    size = len(data)
    pos = 2
    segments = scans = stray = 0
    components = 1
    progressive = False
    while pos < size:
        if data[pos] != 0xFF:
            found = data.find(b"\xff", pos)
            if found < 0:
                break
            stray += found - pos
            pos = found
        fill = _JPEG_FILL.match(data, pos)
        assert fill is not None
        stray += fill.end() - pos - 1
        pos = fill.end() - 1
        if stray > MAX_STRAY_BYTES:
            raise InvalidImageError(
                f"the JPEG has too many stray or padding bytes between markers "
                f"(over {MAX_STRAY_BYTES:,})"
            )
        if pos + 1 >= size:
            break
        marker = data[pos + 1]
        pos += 2
        if marker == 0xD9:  # end of the first image (an MPO's others follow, never decoded)
            break
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            continue
        if pos + 2 > size:
            break
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2:
            break  # corrupt: the decoder will say so
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise InvalidImageError(
                f"the JPEG has too many marker segments (over {MAX_JPEG_SEGMENTS:,})"
            )
        body = pos + 2
        if marker in _JPEG_SOF and declared.width is None and body + 6 <= size:
            declared.height = (data[body + 1] << 8) | data[body + 2]
            declared.width = (data[body + 3] << 8) | data[body + 4]
            components = max(1, data[body + 5])
            progressive = marker in _JPEG_PROGRESSIVE
        elif marker == 0xE1 and data.startswith(b"Exif\x00\x00", body):
            _refuse_exif(data[body : pos + length])  # Pillow parses it while opening
        elif marker == 0xE2 and data.startswith(b"MPF\x00", body):
            _refuse_exif(data[body + 4 : pos + length])  # the MPO index: the same layout
        pos += length
        if marker == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise InvalidImageError(
                    f"the JPEG has too many scans (over {MAX_JPEG_SCANS}; a normal "
                    f"progressive JPEG has about 10)"
                )
            found_marker = _JPEG_NEXT_MARKER.search(data, pos)
            if found_marker is None:
                break
            pos = found_marker.start()
    if declared.width and declared.height and scans > 1:
        scan_pixels = scans * declared.width * declared.height
        if scan_pixels > MAX_JPEG_SCAN_PIXELS:
            raise InvalidImageError(
                f"the JPEG would cost too much to decode: {scans} scans of "
                f"{declared.width}x{declared.height} pixels (limit {MAX_JPEG_SCAN_PIXELS:,} "
                f"scan-pixels)"
            )
    declared.passes = max(1, scans)
    if progressive or scans > 1:  # libjpeg keeps every coefficient of a multi-scan image
        declared.extra_bytes_per_pixel = 2 * components
    return declared


_GIF_BLOCK_START = re.compile(rb"[!,;]")


def _walk_gif(data: bytes) -> _Declared:
    """Walk the blocks before the first image; read the canvas its first frame needs."""
    declared = _Declared()
    size = len(data)
    if size < 13:
        return declared
    screen_width, screen_height, flags = struct.unpack_from("<HHB", data, 6)
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    blocks = stray = 0
    while pos < size:
        introducer = data[pos]
        if introducer == 0x21:  # extension: label, then sub-blocks until an empty one
            pos += 2
            while pos < size:
                length = data[pos]
                pos += 1 + length
                blocks += 1
                if blocks > MAX_GIF_BLOCKS:
                    raise InvalidImageError(
                        f"the GIF has too many extension blocks before its first image "
                        f"(over {MAX_GIF_BLOCKS:,})"
                    )
                if length == 0:
                    break
        elif introducer == 0x2C:  # the first image: Pillow grows the canvas to hold it
            if pos + 9 <= size:
                left, top, width, height = struct.unpack_from("<HHHH", data, pos + 1)
                declared.width = max(screen_width, left + width)
                declared.height = max(screen_height, top + height)
            return declared
        elif introducer == 0x3B:
            break
        else:  # Pillow skips unknown bytes one at a time
            found = _GIF_BLOCK_START.search(data, pos)
            skip = (found.start() if found else size) - pos
            stray += skip
            if stray > MAX_STRAY_BYTES:
                raise InvalidImageError(
                    f"the GIF has too many stray bytes between blocks (over {MAX_STRAY_BYTES:,})"
                )
            pos += skip
    declared.width, declared.height = screen_width, screen_height
    return declared


def _walk_webp(data: bytes) -> _Declared:
    """Read the canvas size: Pillow's WebP decoder allocates two canvases when it opens."""
    # libwebp's current and previous RGBA canvas, and its decoding buffers (measured)
    declared = _Declared(format="WEBP", extra_bytes_per_pixel=10)
    if len(data) < 30:
        return declared
    chunk = data[12:16]
    if chunk == b"VP8X":
        declared.width = 1 + int.from_bytes(data[24:27], "little")
        declared.height = 1 + int.from_bytes(data[27:30], "little")
    elif chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        declared.width, declared.height = (v & 0x3FFF for v in struct.unpack_from("<HH", data, 26))
    elif chunk == b"VP8L" and data[20] == 0x2F:
        (bits,) = struct.unpack_from("<I", data, 21)
        declared.width, declared.height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return declared


# TIFF tags the walk reads
_WIDTH, _HEIGHT, _COMPRESSION, _SAMPLES, _ROWS_PER_STRIP, _PLANAR = 256, 257, 259, 277, 278, 284
_STRIP_OFFSETS, _TILE_WIDTH, _TILE_LENGTH, _TILE_OFFSETS = 273, 322, 323, 324
_SUB_DIRECTORIES = (34665, 34853, 40965)  # EXIF, GPS, interoperability: Pillow reads them all
_TIFF_JPEG = (6, 7)


def _walk_tiff(data: bytes) -> _Declared:
    """Read the first directory's raw entries and refuse layouts whose cost is out of proportion.

    Pillow and libtiff allocate a whole strip or tile at a time and Pillow's uncompressed path
    loops over every strip offset in Python, so tiles far larger than the image, more offsets
    than the image needs, or too many strips are refused here, before Pillow parses anything.
    """
    order = "<" if data[:2] == b"II" else ">"
    big = data[2] == 43
    entry_format, count_format = (order + "HHQ8s", "Q") if big else (order + "HHI4s", "H")
    entry_size = 20 if big else 12
    (offset,) = struct.unpack_from(order + ("Q" if big else "I"), data, 8 if big else 4)
    entries = _tiff_entry_count(data, offset, order + count_format, entry_size)
    if entries is None:
        return _Declared()  # truncated: Pillow will say so
    _refuse_tiff_tags(entries)
    start = offset + struct.calcsize(count_format)
    end = min(len(data), start + entries * entry_size)
    end -= (end - start) % entry_size
    tags: dict[int, tuple[int, int, bytes]] = {}
    for tag, kind, count, raw in struct.iter_unpack(entry_format, data[start:end]):
        tags.setdefault(tag, (kind, count, raw))

    def value(tag: int) -> int | None:
        kind, count, raw = tags.get(tag, (0, 0, b""))
        if count != 1:
            return None
        code = {1: "B", 3: "H", 4: "I", 13: "I", 16: "Q", 18: "Q"}.get(kind)
        return struct.unpack_from(order + code, raw)[0] if code else None

    for tag in _SUB_DIRECTORIES:
        sub = value(tag)
        if sub is not None:
            _refuse_tiff_tags(_tiff_entry_count(data, sub, order + count_format, entry_size) or 0)
    declared = _Declared(width=value(_WIDTH), height=value(_HEIGHT))
    width, height = declared.width, declared.height
    if not width or not height:
        return declared  # Pillow refuses a TIFF without a size
    tiled = _TILE_WIDTH in tags
    if tiled:
        block_width, block_height = value(_TILE_WIDTH) or 0, value(_TILE_LENGTH) or 0
        if block_width < 1 or block_height < 1:
            raise InvalidImageError("the TIFF declares an invalid tile size")
        offsets = tags.get(_TILE_OFFSETS, (0, 0, b""))[1]
    else:
        block_width = width
        block_height = min(value(_ROWS_PER_STRIP) or height, height)
        offsets = tags.get(_STRIP_OFFSETS, (0, 0, b""))[1]
    planes = (value(_SAMPLES) or 1) if value(_PLANAR) == 2 else 1
    needed = -(-width // block_width) * -(-height // block_height) * planes
    if needed > MAX_TIFF_BLOCKS:
        raise InvalidImageError(
            f"the TIFF is cut into too many strips or tiles ({needed:,}; limit {MAX_TIFF_BLOCKS:,})"
        )
    if offsets > needed:
        raise InvalidImageError(
            f"the TIFF lists {offsets:,} strips or tiles where its size needs {needed:,}"
        )
    block_area = block_width * block_height
    padded_area = -(-width // 16) * 16 * (-(-height // 16) * 16)
    if block_area > max(padded_area, MIN_TIFF_BLOCK_AREA):
        raise InvalidImageError(
            f"the TIFF's tiles are far larger than the image: {block_width}x{block_height} "
            f"tiles for a {width}x{height} image"
        )
    compression = value(_COMPRESSION) or 1
    if compression != 1:  # libtiff decodes into a strip or tile buffer, then copies
        declared.block_pixels = block_area
    else:  # Pillow keeps a Python tile descriptor per strip or tile
        declared.overhead_bytes = 256 * offsets
    if compression in _TIFF_JPEG:
        # Each strip or tile is a JPEG; scan data never contains FF DA, so this counts scans.
        scans = data.count(b"\xff\xda")
        if scans * block_area > MAX_JPEG_SCAN_PIXELS:
            raise InvalidImageError(
                f"the TIFF's JPEG data would cost too much to decode: {scans} scans of "
                f"{block_width}x{block_height}-pixel blocks"
            )
        declared.passes = max(1, -(-scans // max(1, offsets)))
    return declared


def _tiff_entry_count(data: bytes, offset: int, count_format: str, entry_size: int) -> int | None:
    """Entries a directory declares, or as many as the file holds: Pillow stops at its end."""
    start = offset + struct.calcsize(count_format)
    if start > len(data):
        return None
    return min(struct.unpack_from(count_format, data, offset)[0], (len(data) - start) // entry_size)


def _refuse_tiff_tags(entries: int) -> None:
    if entries > MAX_TIFF_TAGS:
        raise InvalidImageError(
            f"the TIFF has too many tags in one directory ({entries:,}; limit {MAX_TIFF_TAGS:,})"
        )
