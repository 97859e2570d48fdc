"""Shared fixtures: real MNIST, a model trained in this session, a real server.

The tiers (`make test-fast` runs all but the last): unit tests of the pieces, in-process tests
(HTTP against the ASGI app, CLIs as subprocesses), and end-to-end tests marked `e2e` (plus
`docker`, `browser`), which start real servers, builds, containers and browsers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.support import REPO
from tests.support.images import png_bytes
from tests.support.servers import Server, running_server, server_env
from training.data import ensure_mnist, load_split
from training.train import RECIPES, TrainConfig, train_and_save

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")  # for this process and every child
DATA_DIR = REPO / "data"
QUICK_CONFIG = TrainConfig(epochs=3, seed=0)
# The robust recipe, short: augmentation, outlier exposure and a calibrated flag in seconds.
QUICK_ROBUST_CONFIG = replace(RECIPES["robust"], epochs=2, limit=12_000)
REAL_SERVER_STARTERS = {"running_server", "serve_until_exit"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts `bentoml serve` is end to end, marked or not: one that uses a
    server fixture (`server`, `*_server`) or calls a starter of `tests.support.servers`."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        names = getattr(getattr(item, "function", None), "__code__", None)
        calls = set(names.co_names) if names else set()
        if any(f == "server" or f.endswith("_server") for f in fixtures) or (
            calls & REAL_SERVER_STARTERS
        ):
            item.add_marker(pytest.mark.e2e)


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
    path = tmp_path_factory.mktemp("model") / "model.pt"
    train_and_save(QUICK_CONFIG, mnist_train, mnist_test, path, data_md5=mnist_md5)
    return path


@pytest.fixture(scope="session")
def calibrated_checkpoint(tmp_path_factory, mnist_train, mnist_test, mnist_md5) -> Path:
    """A short robust-recipe model: temperature and flag thresholds in the checkpoint."""
    path = tmp_path_factory.mktemp("calibrated") / "model.pt"
    train_and_save(QUICK_ROBUST_CONFIG, mnist_train, mnist_test, path, data_md5=mnist_md5)
    return path


@pytest.fixture(scope="session")
def calibrated_server(calibrated_checkpoint, tmp_path_factory) -> Iterator[Server]:
    """A real server of the calibrated model: its predictions carry the `uncertain` flag."""
    home = tmp_path_factory.mktemp("calibrated-server")
    env = server_env(home, MODEL_PATH=str(calibrated_checkpoint), MNIST_WORKERS="1")
    with running_server(env, home / "server.log") as server:
        yield server


@pytest.fixture(scope="session")
def offline_model(trained_checkpoint):
    from training import load_model

    return load_model(trained_checkpoint)


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
