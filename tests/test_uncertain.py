"""Calibrated probabilities and the `uncertain` flag, from the checkpoint to every endpoint."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import torch

from service.inference import Classifier, ModelSource, prediction
from service.preprocess import preprocess_image_bytes
from tests.support.images import png_bytes
from training import Checkpoint
from training.calibration import uncertain


def noise_pngs(count: int = 20) -> list[bytes]:
    """Squares of noise on a black pad (preprocessing refuses grain that fills a whole image)."""
    rng = np.random.default_rng(0)
    return [
        png_bytes(np.pad(rng.integers(0, 256, (40, 40), dtype=np.uint8), 12)) for _ in range(count)
    ]


def offline(checkpoint: Checkpoint, images: np.ndarray) -> tuple[np.ndarray, list[bool]]:
    """What the service must answer: softmax(logits / T) and the flag, computed here."""
    calibration = checkpoint.calibration
    assert calibration is not None
    with torch.inference_mode():
        logits = checkpoint.model(torch.from_numpy(images))
        probabilities = (logits / calibration.temperature).softmax(1).numpy()
        return probabilities, uncertain(logits, calibration).tolist()


def test_checkpoint_round_trips_the_calibration(calibrated_checkpoint):
    checkpoint = Checkpoint.load(calibrated_checkpoint)
    calibration = checkpoint.calibration
    assert calibration is not None
    assert calibration.temperature > 0 and calibration.heldout_images == 5000
    report = checkpoint.metadata["metrics"]["calibration"]
    assert report["temperature"] == calibration.temperature
    assert 0 <= report["ece_after"] <= 1 and 0 <= report["flagged"] <= 1


def test_seed_recipe_checkpoints_have_no_calibration_and_answer_null(trained_checkpoint):
    classifier = Classifier(ModelSource(trained_checkpoint, None))
    assert classifier.calibration is None
    row = classifier.outputs(np.zeros((1, 784), np.float32))[0]
    assert prediction(row)["uncertain"] is None


def test_classifier_outputs_are_the_calibrated_probabilities_and_flag(calibrated_checkpoint):
    classifier = Classifier(ModelSource(calibrated_checkpoint, None))
    images = np.stack([preprocess_image_bytes(p).reshape(784) for p in noise_pngs()])
    probabilities, flags = offline(Checkpoint.load(calibrated_checkpoint), images)
    outputs = classifier.outputs(images)
    np.testing.assert_allclose(outputs[:, :10], probabilities, atol=1e-6)
    assert [prediction(row)["uncertain"] for row in outputs] == flags


def test_server_flags_what_the_checkpoint_says(
    calibrated_server, calibrated_checkpoint, mnist_test
):
    checkpoint = Checkpoint.load(calibrated_checkpoint)
    digits = (mnist_test[0][:200] * 255).round().to(torch.uint8).reshape(-1, 28, 28).numpy()
    uploads = [png_bytes(d) for d in digits] + noise_pngs()
    images = np.stack([preprocess_image_bytes(p).reshape(784) for p in uploads])
    probabilities, flags = offline(checkpoint, images)

    answers = []
    for data in uploads:
        response = httpx.post(
            f"{calibrated_server.url}/predict_image", files={"image": ("x.png", data)}, timeout=30
        )
        assert response.status_code == 200, response.text
        answers.append(response.json())
    assert [a["uncertain"] for a in answers] == flags
    np.testing.assert_allclose([a["probabilities"] for a in answers], probabilities, atol=2e-6)
    assert sum(flags[:200]) <= 20, "most MNIST digits must not be flagged"
    assert sum(flags[200:]) >= 10, "most noise squares must be flagged"

    bulk = httpx.post(
        f"{calibrated_server.url}/predict_bulk",
        content=(images * 255).round().astype(np.uint8).tobytes(),
        headers={"content-type": "application/octet-stream"},
        timeout=30,
    ).json()
    assert len(bulk["uncertain"]) == len(uploads)
    assert all(isinstance(flag, bool) for flag in bulk["uncertain"])

    # the Open Inference route: the same flags, for the uploaded files themselves
    infer = {
        "inputs": [
            {
                "name": "images",
                "datatype": "BYTES",
                "shape": [len(uploads)],
                "data": [base64.b64encode(data).decode() for data in uploads],
            }
        ],
        "outputs": [{"name": "digit"}, {"name": "uncertain"}],
    }
    response = httpx.post(f"{calibrated_server.url}/v2/models/mnist/infer", json=infer, timeout=30)
    assert response.status_code == 200, response.text
    digit, uncertain = response.json()["outputs"]
    assert uncertain["datatype"] == "BOOL" and uncertain["data"] == flags
    assert digit["data"] == [a["digit"] for a in answers]
    metadata = httpx.get(f"{calibrated_server.url}/v2/models/mnist", timeout=30).json()
    assert {"name": "uncertain", "datatype": "BOOL", "shape": [-1]} in metadata["outputs"]

    info = httpx.get(f"{calibrated_server.url}/model_info", timeout=30).json()
    assert info["calibration"]["temperature"] == checkpoint.calibration.temperature
    assert info["calibration"]["ece_after"] >= 0
