"""The README's examples run as written with the files shipped in samples/."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton

from tests.support import REPO

SAMPLES = REPO / "samples"


@pytest.fixture(scope="module")
def sample_digits(offline_model) -> list[int]:
    """What the session's model says of the ten sample images (mostly 7 2 1 0 4 1 4 9 5 9)."""
    pixels = np.fromfile(SAMPLES / "ten.u8", dtype=np.uint8).reshape(10, 784)
    with torch.inference_mode():
        return offline_model(torch.from_numpy(pixels / np.float32(255))).argmax(1).tolist()


def test_the_sample_digit_is_a_seven(server, sample_digits):
    assert sample_digits[0] == 7
    with open(SAMPLES / "digit.png", "rb") as f:
        answer = httpx.post(f"{server.url}/predict_image", files={"image": f})
    assert answer.json()["digit"] == 7


def test_the_sample_bulk_file_holds_the_first_ten_test_digits(server, sample_digits):
    body = (SAMPLES / "ten.u8").read_bytes()
    answer = httpx.post(
        f"{server.url}/predict_bulk",
        content=body,
        headers={"content-type": "application/octet-stream"},
    )
    assert answer.json()["digits"] == sample_digits


def test_the_readme_tritonclient_example(server, sample_digits):
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    pixels = np.fromfile(SAMPLES / "ten.u8", dtype=np.uint8).reshape(10, 784)
    images = triton.InferInput("images", list(pixels.shape), "UINT8")
    images.set_data_from_numpy(pixels)
    assert client.infer("mnist", [images]).as_numpy("digit").tolist() == sample_digits
