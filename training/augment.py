"""On-the-fly augmentation for the robust recipe: whole batches at once, in torch, on the device.

Uploads are not MNIST: they are drawn thicker or thinner, slanted, rotated, off-centre, blurred
by a camera, faint on gray paper. The service's preprocessing re-centres and rescales every
upload, so what is left for the model to learn is shape variation; this module makes it from
the MNIST training images with one affine + elastic warp (a single `grid_sample`), stroke
thickness by fractional dilation or erosion, blur, and contrast. No per-image Python or PIL.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

SIDE = 28


@dataclass(frozen=True)
class Augmentation:
    """How far each transform may go; each image draws its own amount from these ranges."""

    rotation_degrees: float = 15.0
    scale: tuple[float, float] = (0.8, 1.1)
    stretch: float = 0.15  # log-aspect ratio: width and height scaled by exp(+-s/2)
    shear: float = 0.3
    translate_pixels: float = 2.0
    elastic_pixels: float = 1.5  # peak displacement of the smooth random warp
    elastic_grid: int = 4  # control points per side of the warp (coarser = smoother)
    thicken: float = 0.35  # share of images dilated (by a random fraction of a 3x3 dilation)
    thin: float = 0.2  # share of images eroded likewise
    blur: float = 0.25  # share of images blended towards a 3x3 binomial blur
    contrast: tuple[float, float] = (0.55, 1.0)  # ink intensity multiplier
    clean: float = 0.1  # share of images left untouched

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def augment(images: Tensor, generator: torch.Generator, spec: Augmentation) -> Tensor:
    """(N, 784) float in [0, 1] -> a new (N, 784) batch in [0, 1], deterministic per generator.

    The generator lives on the images' device; the same seed and device give the same batch.
    """
    n = images.shape[0]
    x = images.reshape(n, 1, SIDE, SIDE)
    device = x.device

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        return torch.rand(shape or (n,), generator=generator, device=device) * (high - low) + low

    def chosen(share: float) -> Tensor:
        return (uniform(0.0, 1.0) < share).float().view(n, 1, 1, 1)

    x = F.grid_sample(
        x, _warp_grid(n, uniform, spec), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    dilated, eroded = _neighbourhood(x, torch.maximum), _neighbourhood(x, torch.minimum)
    amount = uniform(0.3, 1.0).view(n, 1, 1, 1)
    x = x + chosen(spec.thicken) * amount * (dilated - x)
    x = x + chosen(spec.thin) * (1 - chosen(spec.thicken)) * amount * (eroded - x)
    x = _blur(x, chosen(spec.blur) * uniform(0.3, 1.0).view(n, 1, 1, 1))
    x = x * uniform(*spec.contrast).view(n, 1, 1, 1)
    x = x.clamp_(0.0, 1.0).reshape(n, -1)
    keep = chosen(spec.clean).view(n, 1)
    return keep * images + (1 - keep) * x


def _warp_grid(n: int, uniform: Any, spec: Augmentation) -> Tensor:
    """Sampling grid (N, 28, 28, 2): rotation, scale, stretch, shear, shift plus a smooth warp."""
    angle = uniform(-1.0, 1.0) * math.radians(spec.rotation_degrees)
    scale = uniform(*spec.scale)
    stretch = torch.exp(uniform(-spec.stretch, spec.stretch) / 2)
    shear = uniform(-spec.shear, spec.shear)
    shift = 2 * spec.translate_pixels / SIDE
    cos, sin = torch.cos(angle), torch.sin(angle)
    # grid_sample maps output coordinates to input ones, so this is the inverse transform.
    sx, sy = 1 / (scale * stretch), stretch / scale
    theta = torch.stack(
        [
            torch.stack([cos * sx, (-sin + shear * cos) * sx, uniform(-shift, shift)], dim=1),
            torch.stack([sin * sy, (cos + shear * sin) * sy, uniform(-shift, shift)], dim=1),
        ],
        dim=1,
    )  # (N, 2, 3)
    base = _base_grid(theta.device, theta.dtype)  # (784, 3): x, y, 1 per output pixel
    grid = (base @ theta.transpose(1, 2)).view(n, SIDE, SIDE, 2)
    if spec.elastic_pixels > 0:
        g = spec.elastic_grid
        coarse = uniform(-1.0, 1.0, n * 2, g, g) * (2 * spec.elastic_pixels / SIDE)
        up = _upsampling(g, theta.device, theta.dtype)  # (28, g): smooth interpolation weights
        smooth = (up @ coarse @ up.T).view(n, 2, SIDE, SIDE)
        grid = grid + smooth.permute(0, 2, 3, 1)
    return grid


def _base_grid(device: torch.device, dtype: torch.dtype) -> Tensor:
    """Pixel centres in grid_sample's [-1, 1] coordinates (align_corners=False), homogeneous."""
    centres = (torch.arange(SIDE, device=device, dtype=dtype) * 2 + 1) / SIDE - 1
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x, y, torch.ones_like(x)], dim=-1).view(-1, 3)


def _upsampling(points: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(28, points) weights spreading `points` control values smoothly over 28 pixels."""
    at = torch.linspace(0, points - 1, SIDE, device=device, dtype=dtype).view(-1, 1)
    knots = torch.arange(points, device=device, dtype=dtype).view(1, -1)
    weights = torch.exp(-((at - knots) ** 2) / 0.5)  # Gaussian bumps: smooth, no corners
    return weights / weights.sum(dim=1, keepdim=True)


def _shifted(x: Tensor, dy: int, dx: int) -> Tensor:
    """`x` moved by (dy, dx) pixels, zero-filled: one neighbour of every pixel."""
    padded = F.pad(x, (1, 1, 1, 1))
    return padded[..., 1 + dy : 1 + dy + SIDE, 1 + dx : 1 + dx + SIDE]


def _neighbourhood(x: Tensor, combine: Any) -> Tensor:
    """Elementwise max (dilation) or min (erosion) over each 3x3 neighbourhood.

    Nine shifted views instead of max_pool2d: several times faster on small CPU batches.
    """
    rows = combine(combine(_shifted(x, 0, -1), x), _shifted(x, 0, 1))
    return combine(combine(_shifted(rows, -1, 0), rows), _shifted(rows, 1, 0))


def _blur(x: Tensor, amount: Tensor) -> Tensor:
    """Blend each image towards its 3x3 binomial blur by `amount` in [0, 1] (shifts, no conv)."""
    rows = (_shifted(x, 0, -1) + 2 * x + _shifted(x, 0, 1)) / 4
    blurred = (_shifted(rows, -1, 0) + 2 * rows + _shifted(rows, 1, 0)) / 4
    return x + amount * (blurred - x)
