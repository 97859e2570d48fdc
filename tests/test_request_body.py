"""The `/predict` JSON body parser: every shape problem names the offending image."""

import json

import numpy as np
import pytest

from service.request_body import ClientError, images_from_json, parse_image_array

FLAT = [0.0] * 392 + [0.5] * 392  # half dark, half a gray stroke: not blank
NESTED = [[0.0] * 28] * 14 + [[0.5] * 28] * 14


def test_flat_and_nested_images_are_both_accepted():
    array = parse_image_array({"images": [FLAT]}, 10)
    assert array.shape == (1, 784) and array.dtype == np.float32
    assert np.array_equal(
        parse_image_array({"images": [NESTED, NESTED]}, 10), np.stack([array[0]] * 2)
    )


@pytest.mark.parametrize(
    ("images", "named"),
    [
        ([FLAT, NESTED], "image 0 has shape [784], image 1 has shape [28, 28]"),
        ([FLAT, FLAT, FLAT[:-1]], "image 0 has shape [784], image 2 has shape [783]"),
        ([NESTED, [*NESTED[:27], [0.5]]], "image 1 is not a regular array"),
    ],
)
def test_mixed_or_ragged_batches_name_the_first_odd_image(images, named):
    with pytest.raises(ClientError) as refused:
        parse_image_array({"images": images}, 10)
    assert refused.value.status == 422
    assert "the same form for every image" in str(refused.value)
    assert named in str(refused.value)


def test_a_blank_json_image_is_refused_like_a_blank_upload():
    digit = [0.0] * 392 + [1.0] * 392
    with pytest.raises(ClientError, match="no digit found in image 1") as info:
        images_from_json(json.dumps({"images": [digit, [0.0] * 784]}).encode(), 10)
    assert info.value.status == 422
