"""A bank of rendered letters and symbols: the single glyphs outlier exposure shows the model.

A stray "k" or "&" uploaded to the service is cropped and centred like a digit, and an MLP that
has only seen digits reads it as one. Scribbles of straight strokes do not look like typed
letters, so the robust recipe also shows the model real glyphs, rendered once per run with
Pillow's own scalable font (`ImageFont.load_default(size)`, shipped inside Pillow, so no system
font is read and a run trains the same wherever the same Pillow and FreeType rasterise it),
never the robustness suite's fonts.
Each glyph is normalised as `service.preprocess.to_mnist_array` hands an upload to the model:
cropped to its ink, its longer side scaled to 20 px (Lanczos), its centre of mass at (14, 14).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

SIDE, BOX = 28, 20
BANK_SIZE = 3000
# Left out because a hand or a font makes them look like a digit (the digit they pass for):
# O o D Q C c (0); I i l j J | ! / \ ( ) [ ] { } and the ticks ' ` , . : ; " - _ (1, once
# preprocessing blows them up to 20 px); Z z (2); Y y (4); S s $ (5); b G (6); T t r f (7);
# B (8); g q (9). Noise, blobs and bars already stand for the dots and dashes.
DIGIT_LIKE = frozenset("OoDQCcIiljJ|!/\\()[]{}'`,.:;\"-_ZzYySs$bGTtrfBgq")
LETTERS = "AEFHKLMNPRUVWXadhkmnpuvwx"
SYMBOLS = "#%&@?*+=<>^~"
GLYPHS = tuple(c for c in LETTERS + SYMBOLS if c not in DIGIT_LIKE)
# Two- and three-glyph strings: short words squeezed into the box, as a typed label becomes.
STRING_SHARE = 0.15


@functools.lru_cache(maxsize=4)
def glyph_bank(count: int = BANK_SIZE, seed: int = 0) -> tuple[Tensor, tuple[str, ...]]:
    """(count, 784) float32 glyph images in [0, 1] and the string each shows; cached per run.

    Deterministic for a seed (numpy's generator, Pillow's own font). About 1 s for 3,000.
    """
    rng = np.random.default_rng([seed, 7919])
    images = np.zeros((count, SIDE * SIDE), dtype=np.float32)
    strings = []
    for index in range(count):
        string = _pick_string(rng)
        images[index] = render(string, rng).reshape(-1)
        strings.append(string)
    return torch.from_numpy(images), tuple(strings)


@functools.lru_cache(maxsize=4)
def typed_digit_bank(count: int = BANK_SIZE, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(count, 784) float32 digits rendered like the glyph bank, and their (count,) labels."""
    rng = np.random.default_rng([seed, 7927])
    labels = torch.arange(count) % 10
    images = np.stack([render(str(int(label)), rng).reshape(-1) for label in labels])
    return torch.from_numpy(images), labels


def _pick_string(rng: np.random.Generator) -> str:
    length = int(rng.integers(2, 4)) if rng.random() < STRING_SHARE else 1
    return "".join(GLYPHS[int(i)] for i in rng.integers(0, len(GLYPHS), length))


def render(string: str, rng: np.random.Generator) -> np.ndarray:
    """`string` white on black at a random size, weight and slant, normalised to (28, 28)."""
    size = int(rng.integers(24, 72))
    font = _font(size)
    stroke = int(rng.integers(0, max(1, size // 16) + 1))  # 0: the font's own weight; else bolder
    canvas = Image.new("L", (size * (len(string) + 2), size * 3), 0)
    ImageDraw.Draw(canvas).text(
        (size, size), string, fill=255, font=font, stroke_width=stroke, stroke_fill=255
    )
    glyph = canvas.crop(canvas.getbbox())  # the ink only: shearing it is then cheap
    slant = float(rng.uniform(-0.3, 0.3))  # an italic or back-slanted hand
    width, height = glyph.width + math.ceil(abs(slant) * glyph.height), glyph.height
    shear = (1, slant, -max(slant, 0.0) * height, 0, 1, 0)  # output (x, y) -> input pixel
    canvas = glyph.transform(
        (width, height), Image.Transform.AFFINE, shear, Image.Resampling.BILINEAR
    )
    return to_model_input(canvas)


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size)


def to_model_input(image: Image.Image) -> np.ndarray:
    """White-on-black `image` -> (28, 28) float32 in [0, 1], as the service's preprocessing does:
    crop to the ink, longer side to 20 px (Lanczos), intensity centre of mass at (14, 14)."""
    box = image.getbbox()
    if box is None:
        raise ValueError("the rendered glyph has no ink")
    crop = image.crop(box)
    scale = BOX / max(crop.size)
    size = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
    glyph = np.asarray(crop.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))
    mass = glyph.astype(np.float64)
    total = mass.sum()
    centre_y = mass.sum(axis=1) @ np.arange(glyph.shape[0]) / total
    centre_x = mass.sum(axis=0) @ np.arange(glyph.shape[1]) / total
    top, left = round(SIDE / 2 - centre_y), round(SIDE / 2 - centre_x)
    out = np.zeros((SIDE, SIDE), dtype=np.uint8)
    y0, y1 = max(top, 0), min(top + glyph.shape[0], SIDE)
    x0, x1 = max(left, 0), min(left + glyph.shape[1], SIDE)
    out[y0:y1, x0:x1] = glyph[y0 - top : y1 - top, x0 - left : x1 - left]
    return out.astype(np.float32) / np.float32(255)
