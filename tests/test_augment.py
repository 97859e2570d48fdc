"""The robust recipe's batch augmentation, made-up outliers and rendered glyphs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from service.preprocess import to_mnist_array
from training.augment import Augmentation, augment
from training.glyphs import DIGIT_LIKE, GLYPHS, glyph_bank, to_model_input, typed_digit_bank
from training.outliers import GLYPH_SHARE, KINDS, outliers

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


def test_glyph_bank_shapes_range_and_determinism():
    images, strings = glyph_bank.__wrapped__(300, seed=0)  # rendered afresh, not the cache
    again, same_strings = glyph_bank.__wrapped__(300, seed=0)
    other, _ = glyph_bank.__wrapped__(300, seed=1)
    assert images.shape == (300, 784) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert (images.amax(dim=1) > 0.5).all(), "every glyph carries ink"
    assert torch.equal(images, again) and strings == same_strings
    assert not torch.equal(images, other)
    assert glyph_bank(300, 0)[0] is glyph_bank(300, 0)[0]  # rendered once per process
    assert 0.05 < np.mean([len(s) > 1 for s in strings]) < 0.3  # a few short strings


def test_glyph_bank_leaves_out_glyphs_that_pass_for_digits():
    _, strings = glyph_bank(3000, 0)
    shown = set("".join(strings))
    assert shown == set(GLYPHS), "every kept glyph is in the bank, and nothing else"
    assert not shown & DIGIT_LIKE
    assert not shown & set("0123456789")
    for lookalike in "OoDQIlijSsZzBgqbGTty|/()":
        assert lookalike in DIGIT_LIKE, lookalike
    assert set("kHR&@?") <= shown  # the glyphs the flag used to miss


def _centre(image: np.ndarray) -> np.ndarray:
    rows, cols = np.indices(image.shape)
    return np.array([(rows * image).sum(), (cols * image).sum()]) / image.sum()


@pytest.mark.parametrize("glyph", ["k", "H", "&", "@", "?", "wx"])
def test_glyphs_are_normalised_as_the_service_preprocesses_an_upload(glyph):
    canvas = Image.new("L", (240, 160), 0)
    ImageDraw.Draw(canvas).text((30, 30), glyph, fill=255, font=ImageFont.load_default(64))
    ours, service = to_model_input(canvas), to_mnist_array(canvas)
    assert ours.shape == (28, 28) and ours.dtype == np.float32
    # The same 20 px box, centre and ink; the service drops faint edge pixels first, which can
    # make its box a pixel narrower and move the glyph by up to a pixel.
    assert np.abs(_centre(ours) - (14, 14)).max() < 1 and np.abs(_centre(service) - 14).max() < 1
    assert max((ours > 0).any(axis=1).sum(), (ours > 0).any(axis=0).sum()) == 20
    assert abs(ours.sum() / service.sum() - 1) < 0.06
    assert np.abs(ours - service).mean() < 0.1


def test_typed_digits_are_labelled_and_look_like_preprocessed_digits():
    images, labels = typed_digit_bank.__wrapped__(50, seed=0)
    assert images.shape == (50, 784) and labels.tolist() == [i % 10 for i in range(50)]
    assert images.min() >= 0 and images.max() <= 1
    rows = images.reshape(50, 28, 28).amax(dim=2) > 0
    assert (rows.sum(dim=1) >= 19).all()  # the longer side of a typed digit is its height: 20 px


def test_outliers_with_a_glyph_bank_start_with_warped_glyphs():
    bank, _ = glyph_bank(3000, 0)
    source = digits(64)
    made = outliers(source, torch.Generator().manual_seed(5), bank)
    again = outliers(source, torch.Generator().manual_seed(5), bank)
    assert made.shape == source.shape and made.min() >= 0 and made.max() <= 1
    assert torch.equal(made, again)
    typed = round(64 * GLYPH_SHARE)
    # the glyphs are warped (augment), not copied: none equals a bank image exactly
    distance = torch.cdist(made[:typed], bank).amin(dim=1)
    assert (distance > 1e-3).float().mean() > 0.8
    without = outliers(source, torch.Generator().manual_seed(5))
    assert not torch.equal(made, without)
