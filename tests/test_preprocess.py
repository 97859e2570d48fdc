"""Unit tests of service.preprocess: bytes of any image in, MNIST's 28x28 float32 array out."""

import io
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from service.preprocess import (
    MAX_IMAGE_PIXELS,
    InvalidImageError,
    NoDigitFoundError,
    PreprocessError,
    decode_image,
    preprocess_image_bytes,
    to_mnist_array,
)

BLACK, WHITE = 0, 255


# --- helpers: synthetic digits ----------------------------------------------------------------


def draw_zero(size=(200, 200), box=(60, 40, 140, 160), ink=WHITE, paper=BLACK, mode="L"):
    """A ring ("0") with a stroke a tenth of the box height, on a uniform background."""
    image = Image.new(mode, size, paper)
    stroke = max(1, (box[3] - box[1]) // 10)
    ImageDraw.Draw(image).ellipse(box, outline=ink, width=stroke)
    return image


def draw_seven(size=(200, 200), ink=WHITE, paper=BLACK, mode="L"):
    """An asymmetric "7": a top bar and a diagonal, so any rotation or flip is visible."""
    image = Image.new(mode, size, paper)
    draw = ImageDraw.Draw(image)
    draw.line([(50, 40), (150, 40)], fill=ink, width=16)
    draw.line([(150, 40), (80, 170)], fill=ink, width=16)
    return image


def mnist_like_digit():
    """A 28x28 gray digit with anti-aliased edges, deliberately off-centre and not 20 px tall.

    Any renormalization (crop, rescale, recentre, contrast stretch) would change its pixels.
    """
    big = Image.new("L", (112, 112), BLACK)
    ImageDraw.Draw(big).ellipse((8, 12, 60, 84), outline=200, width=10)
    return big.resize((28, 28), Image.Resampling.BOX)


def encode(image, fmt="PNG", **params):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def center_of_mass(array):
    total = array.sum()
    rows, cols = np.indices(array.shape)
    return (rows * array).sum() / total, (cols * array).sum() / total


def ink_box(array, level=0.1):
    """(height, width) of the box around pixels brighter than ``level``."""
    rows = np.flatnonzero((array > level).any(axis=1))
    cols = np.flatnonzero((array > level).any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def correlation(a, b):
    return np.corrcoef(a.ravel(), b.ravel())[0, 1]


def png_header_only(width, height, bit_depth=1, color_type=0):
    """A PNG that declares any size but carries almost no data: how decompression bombs start."""

    def chunk(kind, body):
        checksum = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + checksum

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


# --- the MNIST fast path ------------------------------------------------------------------------


def test_mnist_28x28_digit_passes_through_unchanged():
    digit = mnist_like_digit()
    pixels = np.asarray(digit)
    assert len(np.unique(pixels)) > 2, "the fixture needs anti-aliased gray levels"

    out = preprocess_image_bytes(encode(digit))

    assert np.array_equal(out, pixels.astype(np.float32) / np.float32(255))


def every_gray_level():
    """A 28x28 dark-background image holding all 256 gray levels in its 16x16 centre."""
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[6:22, 6:22] = np.arange(256, dtype=np.uint8).reshape(16, 16)
    return pixels


def test_fast_path_keeps_every_gray_level_exactly():
    pixels = every_gray_level()

    out = preprocess_image_bytes(encode(Image.fromarray(pixels)))

    # x * (1 / 255) differs from x / 255 in float32 for 145 of the 256 levels.
    assert np.array_equal(out, pixels.astype(np.float32) / np.float32(255))


def test_fast_path_matches_torchvision_to_tensor_bit_for_bit():
    torch = pytest.importorskip("torch")
    pixels = every_gray_level()
    # torchvision's ToTensor on a uint8 image is exactly this: img.float().div(255)
    expected = torch.from_numpy(pixels).float().div(255).numpy()

    assert np.array_equal(preprocess_image_bytes(encode(Image.fromarray(pixels))), expected)


def test_28x28_dark_digit_on_light_paper_is_normalized_not_passed_through():
    light = Image.eval(mnist_like_digit(), lambda v: 255 - v)

    out = preprocess_image_bytes(encode(light))

    assert out[0, 0] == 0.0 and out.max() == 1.0
    cy, cx = center_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    assert max(ink_box(out)) in (19, 20, 21)


# --- MNIST normalization of arbitrary images ----------------------------------------------------


def test_white_on_black_and_black_on_white_give_the_same_digit():
    white_on_black = preprocess_image_bytes(encode(draw_seven(ink=WHITE, paper=BLACK)))
    black_on_white = preprocess_image_bytes(encode(draw_seven(ink=BLACK, paper=WHITE)))

    np.testing.assert_allclose(white_on_black, black_on_white, atol=1 / 255)
    assert correlation(white_on_black, black_on_white) > 0.99


def test_output_is_white_ink_on_black_background():
    out = preprocess_image_bytes(encode(draw_zero(ink=BLACK, paper=WHITE)))

    assert out[0, 0] == 0.0 and out[-1, -1] == 0.0
    assert out.max() == 1.0
    assert out[14, 14] < 0.05, "the hole of the 0 must stay dark"


def test_off_center_digit_is_centered_by_mass():
    corner = draw_zero(size=(300, 300), box=(10, 10, 70, 90))

    out = preprocess_image_bytes(encode(corner))

    cy, cx = center_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_tiny_digit_is_scaled_up_to_a_20_pixel_box():
    tiny = draw_zero(size=(200, 200), box=(120, 30, 124, 36))  # 5 x 7 px
    assert ink_box(np.asarray(tiny) / 255) == (7, 5)

    out = preprocess_image_bytes(encode(tiny))

    height, width = ink_box(out)
    assert height in (19, 20, 21)
    assert width < height, "the aspect ratio must be kept"


def test_tall_thin_one_keeps_its_aspect_ratio():
    one = Image.new("L", (200, 200), WHITE)
    ImageDraw.Draw(one).rectangle((95, 20, 105, 180), fill=BLACK)

    out = preprocess_image_bytes(encode(one))

    height, width = ink_box(out)
    assert height in (19, 20, 21)
    assert 1 <= width <= 4


def test_top_heavy_digit_is_clipped_to_the_canvas_not_rejected():
    tee = Image.new("L", (200, 200), BLACK)
    draw = ImageDraw.Draw(tee)
    draw.rectangle((20, 20, 180, 90), fill=WHITE)  # heavy bar: mass far from the box centre
    draw.rectangle((95, 90, 105, 180), fill=WHITE)

    out = preprocess_image_bytes(encode(tee))

    assert out.shape == (28, 28)
    cy, cx = center_of_mass(out)
    assert abs(cy - 14) <= 1.5 and abs(cx - 14) <= 1


def test_huge_image_works():
    huge = draw_zero(size=(3000, 3000), box=(900, 600, 1900, 2400), ink=BLACK, paper=WHITE)

    out = preprocess_image_bytes(encode(huge))

    assert max(ink_box(out)) in (19, 20, 21)
    cy, cx = center_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_low_contrast_noise_is_not_ink():
    rng = np.random.default_rng(0)
    paper = np.clip(200 + rng.normal(0, 6, (200, 200)), 0, 255).astype(np.uint8)
    image = Image.fromarray(paper)
    ImageDraw.Draw(image).ellipse((60, 40, 140, 160), outline=20, width=12)

    out = preprocess_image_bytes(encode(image))

    clean = preprocess_image_bytes(encode(draw_zero(ink=BLACK, paper=WHITE)))
    assert correlation(out, clean) > 0.95
    assert out[0, 0] == 0.0 and out[14, 14] == 0.0


def photo_of_a_zero(seed: int = 0, grain: float = 8.0) -> Image.Image:
    """A dark ring on gray paper lit from one side (a 60-level ramp) with sensor grain."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(150, 210, 240)[None, :].repeat(240, axis=0)
    paper = np.clip(ramp + rng.normal(0, grain, (240, 240)), 0, 255).astype(np.uint8)
    image = Image.fromarray(paper)
    ImageDraw.Draw(image).ellipse((90, 70, 150, 160), outline=60, width=9)
    return image


def test_unevenly_lit_grainy_photo_gives_the_clean_digit():
    """The paper's shading and grain are not ink: the ring alone is cropped to 20 px."""
    out = preprocess_image_bytes(encode(photo_of_a_zero(), "JPEG", quality=85))
    clean = preprocess_image_bytes(
        encode(draw_zero(box=(90, 70, 150, 160), ink=BLACK, paper=WHITE))
    )
    assert max(ink_box(out, level=0.3)) in (19, 20, 21)
    assert correlation(out, clean) > 0.75  # one global paper level gave -0.07 here
    assert out[:3].max() == 0 and out[-3:].max() == 0  # no grain left at the edges


def test_grain_alone_is_no_digit():
    rng = np.random.default_rng(1)
    ramp = np.linspace(120, 200, 200)[None, :].repeat(200, axis=0)
    paper = np.clip(ramp + rng.normal(0, 10, (200, 200)), 0, 255).astype(np.uint8)
    with pytest.raises(NoDigitFoundError):
        preprocess_image_bytes(encode(Image.fromarray(paper)))


def test_to_mnist_array_accepts_any_mode():
    rgb = draw_seven(ink=(0, 0, 200), paper=(255, 255, 220), mode="RGB")

    out = to_mnist_array(rgb)

    reference = to_mnist_array(draw_seven(ink=BLACK, paper=WHITE))
    assert correlation(out, reference) > 0.95


def test_preprocess_image_bytes_is_decode_then_to_mnist_array():
    data = encode(draw_zero(size=(90, 120), box=(10, 20, 60, 100)))

    assert np.array_equal(preprocess_image_bytes(data), to_mnist_array(decode_image(data)))


@pytest.mark.parametrize(
    "image",
    [
        mnist_like_digit(),
        draw_zero(),
        draw_seven(ink=BLACK, paper=WHITE),
        draw_zero(size=(31, 7), box=(2, 1, 9, 5)),
        draw_zero(size=(1200, 40), box=(600, 5, 640, 35)),
    ],
    ids=["mnist", "zero", "seven", "small", "wide"],
)
def test_output_is_28x28_float32_in_unit_range(image):
    out = preprocess_image_bytes(encode(image))

    assert out.shape == (28, 28)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.max() > 0.5


# --- decoding: modes, formats, orientation -------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("PNG", {}),
        ("JPEG", {"quality": 90}),
        ("BMP", {}),
        ("GIF", {}),
        ("WEBP", {"quality": 90}),
        ("TIFF", {}),
        ("MPO", {"save_all": True}),  # what many phone cameras write
    ],
)
def test_common_formats_decode_to_the_same_digit(fmt, params):
    seven = draw_seven(ink=(0, 0, 0), paper=(255, 255, 255), mode="RGB")
    reference = preprocess_image_bytes(encode(seven))

    out = preprocess_image_bytes(encode(seven, fmt, **params))

    assert correlation(out, reference) > 0.95


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_background_is_composited_over_white(mode):
    # What an HTML canvas exports: fully transparent *black* pixels, opaque black strokes.
    canvas = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).ellipse((60, 40, 140, 160), outline=(0, 0, 0, 255), width=12)
    reference = preprocess_image_bytes(encode(draw_zero(ink=BLACK, paper=WHITE)))

    out = preprocess_image_bytes(encode(canvas.convert(mode)))

    assert np.array_equal(out, reference)


def test_palette_image_decodes():
    rgb = draw_zero(ink=(20, 20, 120), paper=(250, 240, 200), mode="RGB")
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert palette.mode == "P"
    reference = preprocess_image_bytes(encode(draw_zero(ink=BLACK, paper=WHITE)))

    out = preprocess_image_bytes(encode(palette))

    assert correlation(out, reference) > 0.98


def test_palette_transparency_is_composited_over_white():
    image = Image.new("P", (200, 200), 0)
    image.putpalette([0, 0, 0] * 256)  # every entry black: only transparency tells paper from ink
    ImageDraw.Draw(image).ellipse((60, 40, 140, 160), outline=1, width=12)
    reference = preprocess_image_bytes(encode(draw_zero(ink=BLACK, paper=WHITE)))

    out = preprocess_image_bytes(encode(image, transparency=0))

    assert np.array_equal(out, reference)


def test_16_bit_gray_is_scaled_not_clipped():
    # Pillow's own I;16 -> L conversion clips at 255, which would turn all of this white.
    pixels = np.full((200, 200), 8_000, dtype=np.uint16)
    pixels[40:160, 95:105] = 60_000
    image = Image.fromarray(pixels)
    assert image.mode == "I;16"

    gray = np.asarray(decode_image(encode(image)))

    assert gray[0, 0] == round(8_000 / 257) and gray[100, 100] == round(60_000 / 257)
    assert max(ink_box(preprocess_image_bytes(encode(image)))) in (19, 20, 21)


def test_float_image_in_unit_range_is_scaled():
    pixels = np.zeros((64, 64), dtype=np.float32)
    pixels[10:50, 30:34] = 0.8
    image = Image.fromarray(pixels)
    assert image.mode == "F"

    gray = np.asarray(decode_image(encode(image, "TIFF")))

    assert gray[0, 0] == 0 and gray[20, 31] == 204


@pytest.mark.parametrize("mode", ["1", "CMYK", "I"])
def test_other_modes_decode_to_gray(mode):
    source = draw_seven(ink=BLACK, paper=WHITE)
    image = source.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "TIFF" if mode == "I" else "PNG"
    reference = preprocess_image_bytes(encode(source))

    decoded = decode_image(encode(image, fmt))

    assert decoded.mode == "L"
    assert correlation(to_mnist_array(decoded), reference) > 0.95


def test_animated_gif_uses_the_first_frame():
    first = draw_seven(ink=BLACK, paper=WHITE)
    second = draw_zero(ink=BLACK, paper=WHITE)
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2

    out = preprocess_image_bytes(data)

    assert np.array_equal(out, preprocess_image_bytes(encode(first, "GIF")))


@pytest.mark.parametrize(
    ("orientation", "quarter_turns_ccw"),
    [(3, 2), (6, -1), (8, 1)],  # 6: display = stored turned 90 degrees clockwise
)
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(fmt, orientation, quarter_turns_ccw):
    stored = draw_seven(size=(240, 200), ink=BLACK, paper=WHITE)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, fmt, exif=exif)
    as_stored = np.asarray(Image.open(io.BytesIO(data)).convert("L"))  # Pillow ignores EXIF here

    decoded = np.asarray(decode_image(data))

    assert np.array_equal(decoded, np.rot90(as_stored, quarter_turns_ccw))
    assert not np.array_equal(preprocess_image_bytes(data), preprocess_image_bytes(encode(stored)))


# --- no digit -------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(28, 28), (200, 150)])
@pytest.mark.parametrize("paper", [BLACK, WHITE, 128])
def test_blank_image_has_no_digit(size, paper):
    with pytest.raises(NoDigitFoundError, match="no digit found"):
        preprocess_image_bytes(encode(Image.new("L", size, paper)))


def test_faint_marks_are_not_a_digit():
    image = Image.new("L", (200, 200), WHITE)
    ImageDraw.Draw(image).ellipse((60, 40, 140, 160), outline=235, width=12)  # 20 levels of ink

    with pytest.raises(NoDigitFoundError):
        preprocess_image_bytes(encode(image))


def test_fully_transparent_image_has_no_digit():
    with pytest.raises(NoDigitFoundError):
        preprocess_image_bytes(encode(Image.new("RGBA", (64, 64), (0, 0, 0, 0))))


# --- invalid input --------------------------------------------------------------------------------


def test_empty_bytes_are_invalid():
    with pytest.raises(InvalidImageError, match="empty"):
        preprocess_image_bytes(b"")


def test_random_bytes_are_invalid():
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()

    with pytest.raises(InvalidImageError, match="not a supported image"):
        preprocess_image_bytes(noise)


def test_text_is_invalid():
    with pytest.raises(InvalidImageError):
        preprocess_image_bytes(b"<html>definitely not a digit</html>")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_invalid(fmt):
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (300, 300), dtype=np.uint8))
    data = encode(noisy, fmt)

    with pytest.raises(InvalidImageError, match="truncated or corrupt"):
        preprocess_image_bytes(data[: len(data) // 2])


def test_unsupported_format_is_invalid():
    data = encode(draw_zero(), "PCX")  # Pillow reads PCX, the service deliberately does not
    assert Image.open(io.BytesIO(data)).format == "PCX"

    with pytest.raises(InvalidImageError, match="not a supported image"):
        preprocess_image_bytes(data)


@pytest.mark.parametrize("fmt", ["PPM", "PCX"])
def test_formats_outside_the_supported_list_are_refused(fmt):
    # PPM/PGM are no longer accepted: plain-text PGM comments are parsed a byte at a time.
    data = encode(draw_zero(), fmt)

    with pytest.raises(InvalidImageError, match="not a supported image"):
        preprocess_image_bytes(data)


def test_decompression_bomb_is_rejected_before_decoding():
    bomb = png_header_only(50_000, 50_000)
    assert len(bomb) < 200

    start = time.perf_counter()
    with pytest.raises(InvalidImageError, match="too large"):
        preprocess_image_bytes(bomb)
    assert time.perf_counter() - start < 0.5


def test_pixel_limit_does_not_depend_on_pillows_global(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)

    with pytest.raises(InvalidImageError, match="too large"):
        preprocess_image_bytes(png_header_only(10_000, 10_000))  # 100 M > MAX_IMAGE_PIXELS


def test_max_pixels_is_a_per_call_limit():
    data = encode(draw_zero(size=(100, 100), box=(20, 20, 80, 80)))

    assert preprocess_image_bytes(data, max_pixels=100 * 100).shape == (28, 28)
    with pytest.raises(InvalidImageError, match="too large"):
        preprocess_image_bytes(data, max_pixels=100 * 100 - 1)


def test_default_limit_admits_a_6000x6000_photo_only_by_its_header():
    assert 6000 * 6000 <= MAX_IMAGE_PIXELS < 50_000 * 50_000


@pytest.mark.parametrize("warning_filter", ["ignore", "error"])
@pytest.mark.parametrize("pillow_limit", [6_000, 1_000])  # warning zone, then Pillow's own error
def test_pillows_bomb_warning_and_error_both_mean_invalid(
    monkeypatch, warning_filter, pillow_limit
):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    data = encode(draw_zero(size=(100, 100), box=(20, 20, 80, 80)))

    with warnings.catch_warnings():
        warnings.simplefilter(warning_filter)
        with pytest.raises(InvalidImageError, match="too large"):
            preprocess_image_bytes(data)


def test_absurdly_long_side_is_rejected():
    with pytest.raises(InvalidImageError, match="too large"):
        preprocess_image_bytes(png_header_only(100_000, 1))


def test_zero_sized_image_is_invalid():
    with pytest.raises(InvalidImageError):
        preprocess_image_bytes(png_header_only(0, 10))


# --- the error types the service maps to HTTP answers --------------------------------------------


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", InvalidImageError),
        (b"garbage", InvalidImageError),
        (png_header_only(50_000, 50_000), InvalidImageError),
        (encode(Image.new("L", (50, 50), WHITE)), NoDigitFoundError),
    ],
    ids=["empty", "garbage", "bomb", "blank"],
)
def test_errors_are_value_errors_with_a_one_line_message(data, error):
    with pytest.raises(error) as caught:
        preprocess_image_bytes(data)

    assert isinstance(caught.value, PreprocessError) and isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert message and "\n" not in message and "BytesIO" not in message
