"""The robustness suite: digits as real uploads look, and inputs that are not digits at all.

Everything is made here, deterministically from a seed, with no downloads: MNIST test digits
turned into upload-like files (large canvases, off-centre, dark on paper, thick and thin strokes,
rotated, JPEG, gray paper with gradients and noise), digits typed in handwriting-style fonts from
Debian packages, and digits drawn as strokes the way the web page draws them. Each file goes
through the service's own `preprocess_image_bytes`, so the suite measures what a user gets.

The not-a-digit sets (noise, blank-ish, text) measure the `uncertain` flag instead of accuracy.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from service.preprocess import PreprocessError, preprocess_image_bytes

Rng = np.random.Generator
Upload = tuple[bytes, int]  # an encoded image file and its true digit (-1: not a digit)

# Handwriting-style fonts from Debian packages (scripts/system-deps.sh installs them).
FONT_FILES = {
    "fonts-dkg-handwriting": "/usr/share/fonts/truetype/fifthhorseman/dkg.ttf",
    "fonts-humor-sans": "/usr/share/fonts/truetype/humor-sans/Humor-Sans.ttf",
    "fonts-comic-neue": "/usr/share/fonts/opentype/comic-neue/ComicNeue-Regular.otf",
    "fonts-breip": "/usr/share/fonts/truetype/breip/Breip.ttf",
}
TEXT_FONT_FILES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
)
# Letters and symbols that do not pass for a digit (no O, l, I, S, Z, B, g, q ...).
TEXT = ("A", "K", "M", "W", "X", "H", "N", "R", "k", "m", "w", "x", "#", "&", "@", "%", "?")
WORDS = ("the", "mnist", "hello", "Date:", "Name", "ok!", "yes", "abc", "WXYZ", "km/h")

# Web-page strokes: each digit as polylines in a unit square, as a person would draw it.
STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [
        [
            (0.5, 0.1),
            (0.25, 0.25),
            (0.2, 0.55),
            (0.3, 0.85),
            (0.5, 0.92),
            (0.7, 0.85),
            (0.8, 0.55),
            (0.75, 0.25),
            (0.5, 0.1),
        ]
    ],
    1: [[(0.35, 0.25), (0.55, 0.1), (0.55, 0.9)]],
    2: [
        [
            (0.25, 0.3),
            (0.4, 0.12),
            (0.65, 0.12),
            (0.75, 0.3),
            (0.65, 0.5),
            (0.25, 0.88),
            (0.8, 0.88),
        ]
    ],
    3: [
        [
            (0.25, 0.15),
            (0.7, 0.15),
            (0.45, 0.45),
            (0.7, 0.55),
            (0.75, 0.75),
            (0.55, 0.9),
            (0.25, 0.85),
        ]
    ],
    4: [[(0.6, 0.9), (0.6, 0.1), (0.2, 0.65), (0.8, 0.65)]],
    5: [
        [
            (0.75, 0.12),
            (0.3, 0.12),
            (0.27, 0.45),
            (0.6, 0.42),
            (0.75, 0.6),
            (0.7, 0.82),
            (0.5, 0.9),
            (0.25, 0.82),
        ]
    ],
    6: [
        [
            (0.7, 0.1),
            (0.4, 0.3),
            (0.25, 0.6),
            (0.3, 0.85),
            (0.55, 0.92),
            (0.72, 0.75),
            (0.65, 0.55),
            (0.4, 0.52),
            (0.27, 0.65),
        ]
    ],
    7: [[(0.2, 0.12), (0.8, 0.12), (0.45, 0.9)]],
    8: [
        [
            (0.5, 0.5),
            (0.3, 0.35),
            (0.35, 0.15),
            (0.65, 0.15),
            (0.7, 0.35),
            (0.5, 0.5),
            (0.27, 0.68),
            (0.35, 0.88),
            (0.65, 0.88),
            (0.73, 0.68),
            (0.5, 0.5),
        ]
    ],
    9: [
        [
            (0.72, 0.35),
            (0.55, 0.12),
            (0.32, 0.18),
            (0.3, 0.4),
            (0.5, 0.5),
            (0.72, 0.35),
            (0.68, 0.9),
        ]
    ],
}
SUITE_SIZE = 1000  # uploads per category: a 1-point loss is then about 3 standard errors
QUICK_SUITE_SIZE = 100  # --quick and --dry-run: a smoke test of every category
PAD_SIDE, PAD_LINE_WIDTH = 280, 280 // 12  # service/static/app.js: a 280 px pad, width / 12


@dataclass(frozen=True)
class Category:
    name: str
    description: str
    make: Callable[[Rng, np.ndarray, np.ndarray, int], Iterator[Upload]]


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def digit_image(pixels: np.ndarray, side: int) -> Image.Image:
    """A 28x28 uint8 MNIST digit, white on black, resized smoothly to `side` pixels."""
    return Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC)


def on_canvas(digit: Image.Image, canvas: int, rng: Rng, background: int = 0) -> Image.Image:
    """`digit` pasted at a random place on a `canvas`-sized square of `background`."""
    out = Image.new("L", (canvas, canvas), background)
    x, y = (int(rng.integers(0, canvas - digit.width + 1)) for _ in range(2))
    out.paste(digit, (x, y))
    return out


def dark_on_light(image: Image.Image) -> Image.Image:
    return Image.eval(image, lambda v: 255 - v)


def _each(
    make_one: Callable[[Rng, np.ndarray], bytes],
) -> Callable[[Rng, np.ndarray, np.ndarray, int], Iterator[Upload]]:
    """A category made by transforming each of the first `count` MNIST digits once."""

    def make(rng: Rng, digits: np.ndarray, labels: np.ndarray, count: int) -> Iterator[Upload]:
        for pixels, label in zip(digits[:count], labels[:count], strict=True):
            yield make_one(rng, pixels), int(label)

    return make


def large_canvas(rng: Rng, pixels: np.ndarray) -> bytes:
    side = int(rng.integers(84, 281))
    return png(on_canvas(digit_image(pixels, side), int(rng.integers(side, 2 * side + 1)), rng))


def off_centre(rng: Rng, pixels: np.ndarray) -> bytes:
    return png(on_canvas(Image.fromarray(pixels), int(rng.integers(48, 113)), rng))


def paper(rng: Rng, pixels: np.ndarray) -> bytes:
    return png(dark_on_light(on_canvas(digit_image(pixels, 112), 160, rng)))


def thick(rng: Rng, pixels: np.ndarray) -> bytes:
    size = int(rng.choice([7, 9, 11]))
    return png(digit_image(pixels, 112).filter(ImageFilter.MaxFilter(size)))


def thin(rng: Rng, pixels: np.ndarray) -> bytes:
    return png(digit_image(pixels, 112).filter(ImageFilter.MinFilter(5)))


def rotated(rng: Rng, pixels: np.ndarray) -> bytes:
    angle = float(rng.uniform(15, 30)) * float(rng.choice([-1, 1]))
    image = digit_image(pixels, 112).rotate(angle, Image.Resampling.BICUBIC, expand=True)
    return png(image)


def compressed(rng: Rng, pixels: np.ndarray) -> bytes:
    image = dark_on_light(on_canvas(digit_image(pixels, 96), 128, rng))
    return jpeg(image, int(rng.integers(15, 41)))


def photo(rng: Rng, pixels: np.ndarray) -> bytes:
    """Gray paper lit unevenly, sensor noise, faint gray ink, saved as a phone would (JPEG)."""
    side = 160
    ink = np.asarray(on_canvas(digit_image(pixels, 110), side, rng), dtype=np.float32) / 255
    ramp = np.linspace(0, 1, side, dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    light = np.add.outer(np.sin(angle) * ramp, np.cos(angle) * ramp)
    paper_level = rng.uniform(150, 200) + rng.uniform(20, 50) * (light - light.mean())
    ink_level = rng.uniform(20, 80)
    gray = paper_level * (1 - ink) + ink_level * ink + rng.normal(0, 8, (side, side))
    image = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8))
    return jpeg(image, int(rng.integers(60, 91)))


def typed(rng: Rng, digits: np.ndarray, labels: np.ndarray, count: int) -> Iterator[Upload]:
    """Digits typed in each installed handwriting font: random size, place and slant."""
    fonts = available_fonts()
    for index in range(count if fonts else 0):
        label = index % 10
        font = ImageFont.truetype(fonts[(index // 10) % len(fonts)], int(rng.integers(40, 121)))
        canvas = Image.new("L", (200, 200), 255)
        draw = ImageDraw.Draw(canvas)
        draw.text((int(rng.integers(10, 70)), int(rng.integers(0, 50))), str(label), 0, font)
        canvas = canvas.rotate(float(rng.uniform(-10, 10)), fillcolor=255)
        yield png(canvas), label


def drawn(rng: Rng, digits: np.ndarray, labels: np.ndarray, count: int) -> Iterator[Upload]:
    """Digits drawn on the web page's pad: white round strokes on black, with a hand's wobble."""
    for index in range(count):
        label = index % 10
        yield png(stroke_digit(label, rng)), label


def stroke_digit(label: int, rng: Rng) -> Image.Image:
    pad = Image.new("L", (PAD_SIDE, PAD_SIDE), 0)
    draw = ImageDraw.Draw(pad)
    scale = rng.uniform(0.55, 0.95) * PAD_SIDE
    slant, angle = rng.uniform(-0.25, 0.25), rng.uniform(-0.2, 0.2)
    cx, cy = (rng.uniform(0.35, 0.65) * PAD_SIDE for _ in range(2))
    width = int(PAD_LINE_WIDTH * rng.uniform(0.7, 1.3))
    for line in STROKES[label]:
        points = np.array(line) - 0.5 + rng.normal(0, 0.025, (len(line), 2))
        points[:, 0] += slant * -points[:, 1]
        rotation = np.array(
            [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
        )
        xy = points @ rotation.T * scale * np.array([rng.uniform(0.7, 1.0), 1]) + (cx, cy)
        path = [(float(x), float(y)) for x, y in xy]
        draw.line(path, fill=255, width=width, joint="curve")
        for x, y in (path[0], path[-1]):  # round caps, like the canvas's lineCap = "round"
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return pad


def noise(rng: Rng, digits: np.ndarray, labels: np.ndarray, count: int) -> Iterator[Upload]:
    """Uniform, Gaussian, salt-and-pepper and blotchy noise at several sizes."""
    for index in range(count):
        side = int(rng.choice([28, 64, 140, 280]))
        kind = index % 4
        pixels: np.ndarray
        if kind == 0:
            pixels = rng.integers(0, 256, (side, side))
        elif kind == 1:
            pixels = rng.normal(128, 60, (side, side))
        elif kind == 2:
            pixels = np.where(rng.random((side, side)) < 0.1, 255, 0)
        else:
            coarse = Image.fromarray(rng.integers(0, 256, (7, 7)).astype(np.uint8))
            pixels = np.asarray(coarse.resize((side, side), Image.Resampling.BICUBIC))
        yield png(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))), -1


def blankish(rng: Rng, digits: np.ndarray, labels: np.ndarray, count: int) -> Iterator[Upload]:
    """Empty paper or pad: flat or graded, with faint noise, a speck or a stray short line."""
    for index in range(count):
        side = int(rng.choice([64, 140, 280]))
        level = float(rng.uniform(0, 255))
        ramp = np.linspace(-1, 1, side)[None, :] * rng.uniform(0, 25)
        gray = level + ramp + rng.normal(0, rng.uniform(0, 6), (side, side))
        image = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        ink = 255 if level < 128 else 0
        x, y = (float(v) for v in rng.uniform(0.1, 0.9, 2) * side)
        if index % 3 == 1:  # a speck of dust
            r = side * rng.uniform(0.005, 0.02)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=ink)
        elif index % 3 == 2:  # a stray dot or tick
            length = side * rng.uniform(0.01, 0.05)
            draw.line((x, y, x + length, y + length / 3), fill=ink, width=max(1, side // 60))
        yield png(image), -1


def text(rng: Rng, digits: np.ndarray, labels: np.ndarray, count: int) -> Iterator[Upload]:
    """Letters, symbols and short words in ordinary fonts, dark on light or light on dark."""
    fonts: list[str | None] = [f for f in TEXT_FONT_FILES if Path(f).exists()] or [None]
    for index in range(count):
        string = TEXT[index % len(TEXT)] if index % 2 else WORDS[index % len(WORDS)]
        path = fonts[index % len(fonts)]
        size = int(rng.integers(30, 90))
        font = ImageFont.truetype(path, size) if path else ImageFont.load_default(size)
        light = bool(index % 3)
        canvas = Image.new("L", (320, 160), 255 if light else 0)
        position = (int(rng.integers(5, 60)), int(rng.integers(5, 50)))
        ImageDraw.Draw(canvas).text(position, string, 0 if light else 255, font)
        yield png(canvas), -1


DIGIT_CATEGORIES = (
    Category(
        "large canvas", "MNIST digits 84-280 px on canvases up to twice that", _each(large_canvas)
    ),
    Category("off-centre", "28 px MNIST digits anywhere on a 48-112 px canvas", _each(off_centre)),
    Category("dark on paper", "black ink on white, as scanned", _each(paper)),
    Category("thick strokes", "strokes dilated 7-11 px at 112 px", _each(thick)),
    Category("thin strokes", "strokes eroded 5 px at 112 px", _each(thin)),
    Category("rotated", "turned 15-30 degrees either way", _each(rotated)),
    Category("jpeg", "dark on light, JPEG quality 15-40", _each(compressed)),
    Category("photo", "gray paper, uneven light, noise, faint ink, JPEG", _each(photo)),
    Category("fonts", "digits typed in handwriting-style fonts (Debian packages)", typed),
    Category("drawn", "stroke digits drawn as the web page draws them", drawn),
)
NOT_DIGITS = (
    Category("noise", "uniform, Gaussian, salt-and-pepper and blotchy noise", noise),
    Category("blank-ish", "empty paper or pad with faint noise, a speck or a tick", blankish),
    Category("text", "letters, symbols and words that are not digits", text),
)


def available_fonts() -> list[str]:
    return [path for path in FONT_FILES.values() if Path(path).exists()]


def missing_font_packages() -> list[str]:
    return [package for package, path in FONT_FILES.items() if not Path(path).exists()]


@dataclass(frozen=True)
class SuiteImages:
    """One category's preprocessed inputs: (N, 784) float32, labels, and how many were refused."""

    name: str
    description: str
    images: np.ndarray
    labels: np.ndarray
    refused: int  # uploads the service answers 4xx (e.g. "no digit found")


def build_suite(
    digits: np.ndarray, labels: np.ndarray, *, count: int = SUITE_SIZE, seed: int = 0
) -> list[SuiteImages]:
    """Every category, each through the service's preprocessing, in the same order every time.

    `digits` are MNIST test images as (N, 28, 28) uint8; each category draws its own generator
    from `seed`, so one category's size never changes another's images.
    """
    suite = []
    for number, category in enumerate(DIGIT_CATEGORIES + NOT_DIGITS):
        rng = np.random.default_rng([seed, number])
        order = rng.permutation(len(digits))
        inputs, truths, refused = [], [], 0
        for data, label in category.make(rng, digits[order], labels[order], count):
            try:
                inputs.append(preprocess_image_bytes(data).reshape(784))
            except PreprocessError:
                refused += 1
                continue
            truths.append(label)
        images = np.stack(inputs) if inputs else np.zeros((0, 784), np.float32)
        suite.append(
            SuiteImages(category.name, category.description, images, np.array(truths), refused)
        )
    return suite


@dataclass(frozen=True)
class CategoryScore:
    """How a model does on one category, as the service would answer each upload."""

    name: str
    description: str
    digits: bool  # False: a not-a-digit set, scored by how much of it is flagged
    uploads: int
    refused: int  # answered 4xx ("no digit found"): wrong for a digit, flagged for a non-digit
    accuracy: float | None  # digits: right answers / uploads
    flagged: float | None  # share flagged uncertain (or refused); None: model has no flag


def score_suite(checkpoint: Path, suite: list[SuiteImages]) -> list[CategoryScore]:
    """Every category through the service's own inference (`Classifier.outputs`)."""
    from service.inference import Classifier, ModelSource, probabilities_of, uncertain_of

    classifier = Classifier(ModelSource(Path(checkpoint), None))
    names = {c.name for c in DIGIT_CATEGORIES}
    scores = []
    for part in suite:
        outputs = classifier.outputs(part.images) if len(part.images) else np.zeros((0, 11))
        uploads = len(part.images) + part.refused
        flags = uncertain_of(outputs)
        calibrated = classifier.calibration is not None
        flagged = sum(bool(f) for f in flags) + part.refused if calibrated else None
        is_digits = part.name in names
        correct = int((probabilities_of(outputs).argmax(axis=1) == part.labels).sum())
        scores.append(
            CategoryScore(
                name=part.name,
                description=part.description,
                digits=is_digits,
                uploads=uploads,
                refused=part.refused,
                accuracy=correct / uploads if is_digits and uploads else None,
                flagged=flagged / uploads if flagged is not None and uploads else None,
            )
        )
    return scores
