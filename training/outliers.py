"""Made-up inputs that are not digits, for outlier exposure in the robust recipe.

An MLP trained on digits alone answers a square of noise with confidence (the seed model says
"8" at 0.73). Outlier exposure (Hendrycks et al., 2019) adds a loss that pulls the model's
answer on non-digits towards the uniform distribution, so low confidence and a high energy
score then mean "not a digit I know". The outliers are made here, in torch, as the service's
preprocessing would hand them to the model (ink cropped, scaled to 20 px, centred in 28x28):
noise squares, blobs and bars (a speck or a tick blown up), digit fragments, rows of
squeezed digits (text-like), scribbles of straight strokes (letter-like) and, given a bank of
rendered letters and symbols (`training.glyphs`), typed glyphs warped like the digits are.
None of them comes from the robustness suite.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

from training.augment import Augmentation, augment

SIDE, BOX = 28, 20
KINDS = 6  # made-up kinds; glyphs from a bank come on top, GLYPH_SHARE of the outliers
GLYPH_SHARE = 0.25
Rand = Callable[..., Tensor]  # shape -> uniform [0, 1) tensor from the run's generator


def outliers(digits: Tensor, generator: torch.Generator, glyphs: Tensor | None = None) -> Tensor:
    """(N, 784) non-digits in [0, 1], made from (and as many as) the given (N, 784) digits.

    With a `glyphs` bank ((M, 784) on the digits' device), round(N * GLYPH_SHARE) of them are
    glyphs drawn from it and augmented like digits (`training.augment`), first. The rest is
    split equally over the KINDS made-up kinds (the first kinds one more for the remainder):
    making only what is used keeps this at a few ms per training step.
    """
    n, device = digits.shape[0], digits.device
    typed = round(n * GLYPH_SHARE) if glyphs is not None and len(glyphs) else 0
    made = _made_up(digits[typed:], generator) if typed < n else digits[:0]
    if not typed:
        return made
    assert glyphs is not None
    index = torch.randint(len(glyphs), (typed,), generator=generator, device=device)
    warped = augment(glyphs.index_select(0, index), generator, Augmentation())
    return torch.cat([warped, made])


def _made_up(digits: Tensor, generator: torch.Generator) -> Tensor:
    n, device = digits.shape[0], digits.device

    def rand(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator, device=device)

    images = digits.reshape(n, 1, SIDE, SIDE)
    sizes = [n // KINDS + (1 if k < n % KINDS else 0) for k in range(KINDS)]
    parts, start = [], 0
    for kind, size in enumerate(sizes):
        if size:
            chunk = images[start : start + size]
            parts.append(_make(kind, chunk, rand, generator, size))
        start += size
    return torch.cat(parts).reshape(n, -1).clamp_(0.0, 1.0)


def _make(kind: int, images: Tensor, rand: Rand, generator: torch.Generator, n: int) -> Tensor:
    if kind == 0:
        return _noise(rand, n)
    if kind == 1:
        return _blobs(rand, n)
    if kind == 2:
        return _bars(rand, n)
    if kind == 3:
        return _fragments(images, rand, n)
    if kind == 4:
        return _rows(images, generator, n)
    return _scribbles(rand, n)


def _in_box(content: Tensor) -> Tensor:
    """(N, 1, h, w) -> (N, 1, 28, 28): scaled so the longer side is 20 px, centred."""
    h, w = content.shape[-2:]
    scale = BOX / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = F.interpolate(content, size=size, mode="bilinear", align_corners=False)
    top, left = (SIDE - size[0]) // 2, (SIDE - size[1]) // 2
    return F.pad(small, (left, SIDE - size[1] - left, top, SIDE - size[0] - top))


def _noise(rand: Rand, n: int) -> Tensor:
    """Uniform, sparse or blotchy noise filling the box, as an upload of pure noise becomes."""
    uniform = rand(n, 1, BOX, BOX)
    sparse = (rand(n, 1, BOX, BOX) < rand(n, 1, 1, 1) * 0.4).float()
    blotchy = F.interpolate(rand(n, 1, 5, 5), size=(BOX, BOX), mode="bilinear")
    blotchy = ((blotchy - 0.3) / 0.4).clamp(0, 1)
    choice = (rand(n, 1, 1, 1) * 3).long()
    noise = torch.where(choice == 0, uniform, torch.where(choice == 1, sparse, blotchy))
    # Half fill the whole 28x28 frame: a 28x28 upload on a dark ground passes through unchanged.
    full = F.interpolate(noise, size=(SIDE, SIDE), mode="nearest")
    return torch.where(rand(n, 1, 1, 1) < 0.5, _in_box(noise), full)


def _grid(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    centres = torch.linspace(-1, 1, SIDE, device=device)
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return y.expand(n, 1, SIDE, SIDE), x.expand(n, 1, SIDE, SIDE)


def _blobs(rand: Rand, n: int) -> Tensor:
    """Filled discs, ellipses and squares: a dot or smudge scaled up to the box."""
    probe = rand(n, 1, 1, 1)
    y, x = _grid(n, probe.device)
    ry, rx = 0.4 + 0.35 * rand(n, 1, 1, 1), 0.4 + 0.35 * rand(n, 1, 1, 1)
    disc = ((y / ry) ** 2 + (x / rx) ** 2 <= 1).float()
    square = ((y.abs() <= ry) & (x.abs() <= rx)).float()
    return torch.where(probe < 0.6, disc, square)


def _bars(rand: Rand, n: int) -> Tensor:
    """Thick bars lying down (a dash or tick scaled up): not the upright stroke of a 1."""
    y, x = _grid(n, rand(1).device)
    angle = (rand(n, 1, 1, 1) - 0.5) * 1.2  # within ~35 degrees of horizontal
    across = -x * torch.sin(angle) + y * torch.cos(angle)
    along = x * torch.cos(angle) + y * torch.sin(angle)
    width = 0.12 + 0.22 * rand(n, 1, 1, 1)
    return ((across.abs() <= width) & (along.abs() <= 0.66)).float()


def _fragments(images: Tensor, rand: Rand, n: int) -> Tensor:
    """A random quarter of a digit blown up to the box: strokes that make no digit."""
    quarter = (rand(n) * 4).long()
    top, left = (quarter // 2) * 14, (quarter % 2) * 14
    rows = top.view(n, 1) + torch.arange(14, device=images.device).view(1, 14)
    cols = left.view(n, 1) + torch.arange(14, device=images.device).view(1, 14)
    index = torch.arange(n, device=images.device).view(n, 1, 1)
    crop = images[:, 0][index, rows.view(n, 14, 1), cols.view(n, 1, 14)].unsqueeze(1)
    return _in_box(crop)


def _rows(images: Tensor, generator: torch.Generator, n: int) -> Tensor:
    """Three digits side by side, squeezed into the box like a word is."""
    shuffled = [images[torch.randperm(n, generator=generator, device=images.device)] for _ in "abc"]
    return _in_box(torch.cat(shuffled, dim=3))


def _scribbles(rand: Rand, n: int, strokes: int = 4) -> Tensor:
    """Two to four random straight strokes, 1-3 px thick: shapes like letters, mostly not digits."""
    y, x = _grid(n, rand(1).device)
    ends = rand(n, strokes, 2, 2) * 1.3 - 0.65  # (stroke, end, xy) inside the box
    start, stop = ends[:, :, 0].view(n, strokes, 1, 1, 2), ends[:, :, 1].view(n, strokes, 1, 1, 2)
    pixel = torch.stack([x[:, 0], y[:, 0]], dim=-1).unsqueeze(1)  # (N, 1, 28, 28, 2)
    direction = stop - start
    along = ((pixel - start) * direction).sum(-1) / (direction**2).sum(-1).clamp(min=1e-6)
    nearest = start + along.clamp(0, 1).unsqueeze(-1) * direction
    distance = (pixel - nearest).norm(dim=-1) * (SIDE / 2)  # in pixels
    width = 0.7 + rand(n, strokes, 1, 1)
    used = (
        torch.arange(strokes, device=x.device).view(1, strokes, 1, 1)
        < 2 + (rand(n, 1, 1, 1) * (strokes - 1)).long()
    )
    ink = ((width + 0.5 - distance).clamp(0, 1) * used).amax(dim=1, keepdim=True)
    return ink
