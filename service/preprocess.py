"""Turn uploaded image bytes into the 28x28 array the MNIST model was trained on.

Pure Pillow + NumPy (no torch, no BentoML) so that the service, the tests, the benchmarks and the
web page all share exactly one definition of "what the model sees". What may be decoded at all,
and what decoding will cost, is decided from the file's headers in ``service.decode_policy``.
"""

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageChops

from service.decode_policy import (
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    MAX_TIFF_TAGS,
    SUPPORTED_FORMATS,
    ImageHeader,
    InvalidImageError,
    PreprocessError,
    exif_entries,
    inspect_image,
    open_image,
)

__all__ = [
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "SUPPORTED_FORMATS",
    "ImageHeader",
    "InvalidImageError",
    "NoDigitFoundError",
    "PreprocessError",
    "decode_image",
    "inspect_image",
    "preprocess_image_bytes",
    "to_mnist_array",
]

MNIST_SIDE = 28
DIGIT_SIDE = 20  # MNIST fits each digit's bounding box into 20x20, then centres it in 28x28.

_LIGHT_BACKGROUND = 128  # a border median at or above this means dark ink on light paper
MIN_INK_CONTRAST = 48  # gray levels a stroke must stand out from the background to be a digit
_NOISE_FRACTION = 0.2  # contrast under this share of the strongest stroke is treated as background
_FLAT_PAPER_SPREAD = 12  # border 10-90 % spread up to this: clean paper, one background level
_GRAIN_SIGMAS = 4.0  # on grainy paper, ink must stand out this many noise sigmas
_SOLID_INK = 96  # on grainy paper, the box spans ink at least this strong (of 255)
_WORKING_SIDE = 2048  # larger images are box-reduced first so NumPy work stays bounded

_BAND_PIXELS = 4_000_000  # conversions that hold the GIL run on bands this large (~10 ms)
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class NoDigitFoundError(PreprocessError):
    """The image decoded fine but holds no ink (blank, uniform, or only faint noise)."""


def decode_image(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode ``data`` into an upright 8-bit gray ("L") image; animations give their first frame.

    Transparent pixels are composited over white (how a browser shows them), EXIF orientation
    is applied, and every header limit of ``decode_policy.open_image`` (pixels, tiles, scans,
    chunks...) is checked before any pixel is decoded. Raises InvalidImageError.
    """
    image, _ = open_image(data, max_pixels=max_pixels)
    return decode_opened(image)


def decode_opened(image: Image.Image) -> Image.Image:
    """`decode_image` for an image `open_image` has already checked (so it is opened once)."""
    try:
        image.load()
    except Exception as exc:  # truncated data surfaces only when the pixels are decoded
        image.close()
        raise InvalidImageError("the image file is truncated or corrupt") from exc
    # Read the orientation before converting, apply it after: turning 1 byte a pixel, not 4.
    orientation = _orientation(image)
    try:
        gray = _to_gray(image)
    except Exception as exc:  # a mode or palette Pillow cannot convert
        image.close()
        raise InvalidImageError(
            f"the image's pixel format ({image.mode}) cannot be converted to gray"
        ) from exc
    if gray is not image:
        image.close()  # frees the decoded pixels (and a WebP decoder's canvases) now
    return gray.transpose(orientation) if orientation is not None else gray


def to_mnist_array(image: Image.Image) -> np.ndarray:
    """Normalize a digit image the way MNIST was built: (28, 28) float32 in [0, 1], white on black.

    An image that already is a 28x28 digit on a dark background passes through unchanged as
    ``pixels / 255`` (exactly torchvision's ``ToTensor``), so MNIST's own files give the offline
    model's predictions. Anything else is inverted if the paper is light, cleaned of faint
    background noise, cropped to the ink, scaled so its longer side is 20 px, and placed so its
    intensity centre of mass sits at (14, 14). Raises NoDigitFoundError when there is no ink.
    """
    gray = _to_gray(image)
    if max(gray.size) > _WORKING_SIDE:
        gray = gray.reduce(-(-max(gray.size) // _WORKING_SIDE))
    # A read-only view of one copy of the pixels; cheaper than np.asarray on small images.
    pixels = np.frombuffer(gray.tobytes(), dtype=np.uint8).reshape(gray.height, gray.width)
    background = _border_median(pixels)
    light = background >= _LIGHT_BACKGROUND
    peak = background - int(pixels.min()) if light else int(pixels.max()) - background
    if peak < MIN_INK_CONTRAST:
        raise NoDigitFoundError("no digit found in the image")
    if not light and gray.size == (MNIST_SIDE, MNIST_SIDE):
        return _to_unit_float(pixels)

    paper, noise = _paper_levels(pixels, background)
    if noise:  # a photo: the paper's own shading and grain are not ink
        peak = int(np.max(paper - pixels) if light else np.max(pixels - paper))
        if peak < MIN_INK_CONTRAST:
            raise NoDigitFoundError("no digit found in the image")
    ink = _ink_levels(pixels, paper, light, peak, noise)
    if not ink.any():  # nothing stands out of the paper's grain
        raise NoDigitFoundError("no digit found in the image")
    rows, cols = _ink_extent(ink, noise)
    crop = Image.fromarray(ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    scale = DIGIT_SIDE / max(crop.size)
    size = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
    digit = np.asarray(crop.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))
    return _to_unit_float(_center_by_mass(digit))


def preprocess_image_bytes(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Bytes of any supported image in, the model's (28, 28) float32 input out.

    Raises only PreprocessError subclasses, whatever the bytes: a refused or broken image is an
    InvalidImageError (a specific message where the cause is understood, a generic one else),
    an image without ink a NoDigitFoundError. ``inspect_image`` says beforehand what it costs.
    """
    return _guarded(lambda: to_mnist_array(decode_image(data, max_pixels=max_pixels)))


def preprocess_opened(image: Image.Image) -> np.ndarray:
    """`preprocess_image_bytes` for an image `open_image` has already checked."""
    return _guarded(lambda: to_mnist_array(decode_opened(image)))


def _guarded(work: Callable[[], np.ndarray]) -> np.ndarray:
    """Only PreprocessError subclasses leave: hostile input must never become a 500."""
    try:
        return work()
    except PreprocessError:
        raise
    except MemoryError as exc:
        raise InvalidImageError("the image is too large to decode") from exc
    except Exception as exc:
        raise InvalidImageError("the image could not be processed") from exc


def _orientation(image: Image.Image) -> Image.Transpose | None:
    """The transposition EXIF asks for; None for none or for EXIF too big or too broken to read.

    Pillow parses EXIF entries one by one in Python, so a PNG or WebP whose EXIF declares more
    than MAX_TIFF_TAGS of them keeps its pixels as stored rather than cost a parse.
    """
    blob = image.info.get("exif")
    raw_profile = image.info.get("Raw profile type exif")
    try:
        if blob is None and isinstance(raw_profile, str):  # PNG: hex text, how Pillow reads it
            blob = bytes.fromhex("".join(raw_profile.split("\n")[3:]))
        if isinstance(blob, bytes) and exif_entries(blob) > MAX_TIFF_TAGS:
            return None
        return _ORIENTATION.get(image.getexif().get(0x0112, 1))
    except Exception:  # unreadable EXIF: keep the pixels as stored
        return None


def _to_gray(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to "L"; transparency is composited over white paper.

    Compositing happens in gray (1 byte a pixel) rather than RGBA (4): a 40 M-pixel transparent
    GIF or WebP then costs tens of MB here instead of hundreds.
    """
    mode = image.mode
    if mode == "L" and "transparency" not in image.info:
        return image
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _wide_to_gray(image)
    if mode == "P" and image.has_transparency_data:
        return _opaque(image.point(_palette_gray_levels(image), "L"))
    if mode in ("LA", "RGBA"):  # as a mask, the image gives its alpha band
        paper = Image.new("L", image.size, 255)
        paper.paste(image.convert("L"), mask=image)
        return paper
    if mode == "PA":  # Pillow refuses PA as a mask: the alpha band is copied, a band at a time
        return _in_bands(image, lambda band: _to_gray(band.convert("LA")))
    if mode == "La":  # premultiplied (TIFF "associated alpha"): stored gray + (255 - alpha)
        return _in_bands(
            image,
            lambda band: ImageChops.add(band.getchannel(0), ImageChops.invert(band.getchannel(1))),
        )
    if mode == "RGBa":  # Pillow's RGBa -> L un-premultiplies, but drops the alpha
        return _to_gray(image.convert("RGBA"))
    if mode == "L":  # gray with one transparent level (PNG tRNS)
        clear = image.info["transparency"]
        return _opaque(image.point([255 if level == clear else level for level in range(256)]))
    if image.has_transparency_data:  # e.g. RGB with a transparent colour
        return _to_gray(image.convert("RGBA"))
    try:
        return image.convert("L")
    except ValueError:  # e.g. LAB has no direct route to L
        return image.convert("RGB").convert("L")


def _in_bands(image: Image.Image, to_gray: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """``to_gray`` applied to bands of rows of at most ``_BAND_PIXELS``, pasted into one image.

    Pillow's getchannel holds the GIL (~2.4 ms a million pixels, measured), while crop and
    paste release it: a 40 M-pixel image in one call kept every other thread waiting ~95 ms.
    """
    rows = max(1, _BAND_PIXELS // image.width)
    if rows >= image.height:
        return to_gray(image)
    gray = Image.new("L", image.size)
    for top in range(0, image.height, rows):
        band = image.crop((0, top, image.width, min(image.height, top + rows)))
        gray.paste(to_gray(band), (0, top))
    return gray


def _opaque(gray: Image.Image) -> Image.Image:
    """Drop the transparency that Image.point copies along: it is composited already."""
    gray.info.pop("transparency", None)
    return gray


def _palette_gray_levels(image: Image.Image) -> list[int]:
    """Each palette index's gray level over white paper, using Pillow's own transparency rules."""
    palette_mode = image.palette.mode if image.palette else "RGB"
    ramp = Image.frombytes("P", (256, 1), bytes(range(256)))
    ramp.putpalette(image.getpalette(palette_mode) or [], palette_mode)
    if "transparency" in image.info:
        ramp.info["transparency"] = image.info["transparency"]
    return list(_to_gray(ramp.convert("RGBA")).tobytes())


def _wide_to_gray(image: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer and float pixels to 0..255 (Pillow's own convert clips instead).

    "I;16" is 16-bit by definition; for "I" and "F" the range is inferred from the largest
    value: at most 1.0 (floats) means [0, 1], at most 255 means 8-bit, at most 65535 16-bit.
    """
    values = np.array(image, dtype=np.float32)  # a writable copy, then worked on in place
    if image.mode == "F":  # NaN and infinities count as 0 (np.nan_to_num is 30x slower)
        finite = np.isfinite(values)
        if not finite.all():
            values[~finite] = 0.0
    peak = float(values.max())
    if image.mode.startswith("I;16") or 255 < peak <= 65535:
        full_scale = 65535.0
    elif image.mode == "F" and peak <= 1.0:
        full_scale = 1.0
    elif peak <= 255:
        full_scale = 255.0
    else:
        full_scale = peak
    values *= 255.0 / full_scale
    np.rint(values, out=values)
    np.clip(values, 0, 255, out=values)
    return Image.fromarray(values.astype(np.uint8))


def _border_median(pixels: np.ndarray) -> int:
    """The paper's gray level: the border is background unless the ink covers half of it.

    Upper median via np.partition: np.median costs ~10 us, a third of the 28x28 fast path.
    """
    border = np.concatenate((pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]))
    middle = border.size // 2
    return int(np.partition(border, middle)[middle])


def _paper_levels(pixels: np.ndarray, background: int) -> tuple[np.ndarray | int, float]:
    """The paper's gray level at each pixel and its grain (noise sigma, 0 for a clean image).

    A clean digital image (a drawing, a scan) has one background level: `background`, and no
    grain, so it is treated exactly as before. A photo of paper is lit unevenly and grainy: a
    plane fitted to the border (least squares) models the light, and the border's spread
    around that plane (median absolute deviation) is the grain.
    """
    height, width = pixels.shape
    if min(height, width) < 8:
        return background, 0.0
    border = np.concatenate((pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]))
    spread = float(np.percentile(border, 90) - np.percentile(border, 10))
    if spread <= _FLAT_PAPER_SPREAD:
        return background, 0.0
    ys = np.concatenate((np.zeros(width), np.full(width, height - 1), np.arange(1, height - 1),
                         np.arange(1, height - 1)))  # fmt: skip
    xs = np.concatenate((np.arange(width), np.arange(width), np.zeros(height - 2),
                         np.full(height - 2, width - 1)))  # fmt: skip
    design = np.stack([np.ones_like(xs), xs, ys], axis=1)
    coefficients = np.linalg.lstsq(design, border.astype(np.float64), rcond=None)[0]
    residual = border - design @ coefficients
    noise = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
    yy, xx = np.mgrid[0:height, 0:width]
    plane = coefficients[0] + coefficients[1] * xx + coefficients[2] * yy
    return plane.astype(np.float32), noise


def _ink_levels(
    pixels: np.ndarray, paper: np.ndarray | int, light: bool, peak: int, noise: float = 0.0
) -> np.ndarray:
    """Ink as uint8 on black: background and faint noise map to 0, the strongest stroke to 255.

    The floor is a share of the strongest stroke, raised above the paper's grain when it has any.
    """
    contrast = pixels.astype(np.float32)
    contrast = paper - contrast if light else contrast - paper
    floor = max(_NOISE_FRACTION * peak, _GRAIN_SIGMAS * noise)
    contrast -= floor
    contrast *= 255.0 / max(peak - floor, 1.0)
    return np.clip(np.rint(contrast), 0, 255).astype(np.uint8)


def _ink_extent(ink: np.ndarray, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """The rows and columns the digit spans. On grainy paper, a speck of grain just above the
    floor would stretch the box, so there only strokes at least `_SOLID_INK` strong count."""
    solid = ink >= _SOLID_INK if noise else ink > 0
    if not solid.any():
        solid = ink > 0
    return np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))


def _center_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste ``digit`` into a black 28x28 canvas with its intensity centre of mass at (14, 14)."""
    mass = digit.astype(np.float64)
    total = mass.sum()
    if total == 0:  # only possible when resizing erased a single faint speck
        raise NoDigitFoundError("no digit found in the image")
    center_y = mass.sum(axis=1) @ np.arange(digit.shape[0]) / total
    center_x = mass.sum(axis=0) @ np.arange(digit.shape[1]) / total
    top = round(MNIST_SIDE / 2 - center_y)
    left = round(MNIST_SIDE / 2 - center_x)
    canvas = np.zeros((MNIST_SIDE, MNIST_SIDE), dtype=np.uint8)
    y0, y1 = max(top, 0), min(top + digit.shape[0], MNIST_SIDE)
    x0, x1 = max(left, 0), min(left + digit.shape[1], MNIST_SIDE)
    canvas[y0:y1, x0:x1] = digit[y0 - top : y1 - top, x0 - left : x1 - left]
    return canvas


def _to_unit_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1] by true division, bit-identical to torchvision's ToTensor."""
    values = pixels.astype(np.float32)
    values /= np.float32(255)
    return values
