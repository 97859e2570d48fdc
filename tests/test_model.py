"""The MLP: shapes and the promised initialization."""

import math

import pytest
import torch

from training.model import MLP


def test_output_shape_for_flat_and_image_batches():
    model = MLP()
    assert model(torch.rand(5, 784)).shape == (5, 10)
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_hidden_size_is_configurable():
    model = MLP(hdim=64)
    assert model.hidden.weight.shape == (64, 784)
    assert model.output.weight.shape == (10, 64)


@pytest.mark.parametrize("layer", ["hidden", "output"])
def test_kaiming_normal_weights_and_zero_biases(layer):
    torch.manual_seed(0)
    linear = getattr(MLP(hdim=512), layer)
    fan_in = linear.weight.shape[1]
    assert linear.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    assert abs(linear.weight.mean().item()) < 0.01
    assert torch.count_nonzero(linear.bias) == 0
