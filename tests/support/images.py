"""Image files in memory: what a client uploads."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    """`image` as the bytes of a `fmt` file (any format Pillow writes)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_bytes(pixels: np.ndarray) -> bytes:
    """A grayscale PNG of an (H, W) array of 0-255 values."""
    return encoded(Image.fromarray(np.asarray(pixels).astype(np.uint8), mode="L"))
