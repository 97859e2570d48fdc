"""Shared fixtures: real MNIST, a model trained in this session, a real server."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.serving import REPO, Server, running_server, server_env
from training.checkpoint import save_checkpoint
from training.data import ensure_mnist, load_split
from training.train import TrainConfig, train

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
DATA_DIR = REPO / "data"
QUICK_CONFIG = TrainConfig(epochs=3, seed=0)


@pytest.fixture(scope="session")
def mnist_md5() -> dict[str, str]:
    return ensure_mnist(DATA_DIR)


@pytest.fixture(scope="session")
def mnist_train(mnist_md5) -> tuple[torch.Tensor, torch.Tensor]:
    return load_split(DATA_DIR, train=True)


@pytest.fixture(scope="session")
def mnist_test(mnist_md5) -> tuple[torch.Tensor, torch.Tensor]:
    return load_split(DATA_DIR, train=False)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, mnist_train, mnist_test, mnist_md5) -> Path:
    """A 3-epoch model (about 97 % test accuracy) trained once per test session."""
    result = train(QUICK_CONFIG, mnist_train, mnist_test)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    metrics = {"test_accuracy": result.test_accuracy, "history": [vars(s) for s in result.history]}
    save_checkpoint(
        path, result.model, config=QUICK_CONFIG.as_dict(), metrics=metrics, data_md5=mnist_md5
    )
    return path


@pytest.fixture(scope="session")
def offline_model(trained_checkpoint):
    from training import load_model

    return load_model(trained_checkpoint)


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def mnist_test_pngs(mnist_test, offline_model) -> list[tuple[bytes, int]]:
    """The first 200 MNIST test digits as PNG files, with the offline model's prediction."""
    images, _ = mnist_test
    with torch.inference_mode():
        digits = offline_model(images[:200]).argmax(dim=1).tolist()
    pixels = (images[:200] * 255).round().to(torch.uint8).reshape(-1, 28, 28).numpy()
    return [(png_bytes(p), d) for p, d in zip(pixels, digits, strict=True)]


@pytest.fixture(scope="session")
def bentoml_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bentoml-home")


@pytest.fixture(scope="session")
def server(trained_checkpoint, bentoml_home, tmp_path_factory) -> Iterator[Server]:
    """The real `bentoml serve`, serving the session's model from MODEL_PATH."""
    env = server_env(bentoml_home, MODEL_PATH=str(trained_checkpoint))
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with running_server(env, log) as running:
        yield running
