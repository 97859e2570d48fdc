"""The robust recipe's batch augmentation and made-up outliers: shapes, ranges, determinism."""

from __future__ import annotations

from dataclasses import replace

import torch

from training.augment import Augmentation, augment
from training.outliers import KINDS, outliers

# Every transform at its identity; tests switch single ones back on with `replace`.
NO_CHANGE = Augmentation(
    rotation_degrees=0,
    scale=(1, 1),
    stretch=0,
    shear=0,
    translate_pixels=0,
    elastic_pixels=0,
    thicken=0,
    thin=0,
    blur=0,
    contrast=(1, 1),
)


def digits(n: int = 64) -> torch.Tensor:
    """A bright vertical bar (a crude 1) in every image, so changes are visible."""
    images = torch.zeros(n, 28, 28)
    images[:, 6:22, 12:16] = 1.0
    return images.reshape(n, 784)


def test_augment_keeps_shape_and_range():
    out = augment(digits(), torch.Generator().manual_seed(0), Augmentation())
    assert out.shape == (64, 784)
    assert out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


def test_augment_is_deterministic_for_a_seed_and_differs_across_seeds():
    first = augment(digits(), torch.Generator().manual_seed(7), Augmentation())
    again = augment(digits(), torch.Generator().manual_seed(7), Augmentation())
    other = augment(digits(), torch.Generator().manual_seed(8), Augmentation())
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_augment_changes_most_images_but_keeps_their_ink():
    source = digits(256)
    out = augment(source, torch.Generator().manual_seed(1), Augmentation())
    changed = (out - source).abs().amax(dim=1) > 1e-3
    assert 0.7 < changed.float().mean() < 1.0  # `clean` leaves about a tenth untouched
    ink = out.sum(dim=1) / source.sum(dim=1)
    assert ink.min() > 0.2, "a transform erased a digit"


def test_no_augmentation_is_the_identity():
    none = NO_CHANGE
    source = digits()
    out = augment(source, torch.Generator().manual_seed(0), none)
    assert torch.allclose(out, source, atol=1e-5)


def test_thicken_only_adds_ink():
    thicken = replace(NO_CHANGE, thicken=1.0, clean=0)
    source = digits()
    out = augment(source, torch.Generator().manual_seed(0), thicken)
    assert (out >= source - 1e-5).all()
    assert (out.sum(dim=1) > source.sum(dim=1) * 1.1).all()


def test_outliers_shapes_ranges_and_determinism():
    source = digits(4 * KINDS * 8)
    made = outliers(source, torch.Generator().manual_seed(3))
    again = outliers(source, torch.Generator().manual_seed(3))
    assert made.shape == source.shape
    assert made.min() >= 0 and made.max() <= 1
    assert torch.equal(made, again)
    assert (made.sum(dim=1) > 0).float().mean() > 0.95, "outliers should carry ink"
    assert not torch.equal(made, source)


def test_outliers_look_like_preprocessed_uploads():
    """Boxed to 20 px like preprocessed uploads, except full-frame noise (28x28 passes through)."""
    made = outliers(digits(700), torch.Generator().manual_seed(4)).reshape(-1, 28, 28)
    edge = 2  # preprocessing centres a 20 px box: 4 px margins, less a rounding pixel
    border = torch.cat(
        [made[:, :edge], made[:, -edge:], made[..., :edge].mT, made[..., -edge:].mT], dim=1
    ).flatten(1)
    boxed = border.amax(dim=1) < 1e-6
    assert 0.85 < boxed.float().mean() < 0.97  # about 1/12 are full-frame noise
