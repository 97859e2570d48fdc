"""The README's examples run as written with the files shipped in samples/."""

from __future__ import annotations

import httpx
import numpy as np
import tritonclient.http as triton

from tests.support import REPO

SAMPLES = REPO / "samples"


def test_the_sample_digit_is_a_seven(server):
    with open(SAMPLES / "digit.png", "rb") as f:
        answer = httpx.post(f"{server.url}/predict_image", files={"image": f})
    assert answer.json()["digit"] == 7


def test_the_sample_bulk_file_holds_the_first_ten_test_digits(server):
    body = (SAMPLES / "ten.u8").read_bytes()
    answer = httpx.post(
        f"{server.url}/predict_bulk",
        content=body,
        headers={"content-type": "application/octet-stream"},
    )
    assert answer.json()["digits"] == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_the_readme_tritonclient_example(server):
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    pixels = np.fromfile(SAMPLES / "ten.u8", dtype=np.uint8).reshape(10, 784)
    images = triton.InferInput("images", list(pixels.shape), "UINT8")
    images.set_data_from_numpy(pixels)
    assert client.infer("mnist", [images]).as_numpy("digit").tolist() == [
        7,
        2,
        1,
        0,
        4,
        1,
        4,
        9,
        5,
        9,
    ]
