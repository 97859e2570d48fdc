"""The training loop: it learns, it is reproducible, and the CLI does the whole job."""

import os
import subprocess
import sys

import pytest
import torch

from tests.support import REPO
from tests.support.servers import BENTOML
from training import Checkpoint
from training.train import RECIPES, TrainConfig, evaluate, train, train_and_save


def test_a_short_run_on_a_subset_learns(mnist_train, mnist_test):
    config = TrainConfig(epochs=2, limit=5000, seed=3)
    result = train(config, mnist_train, mnist_test)
    first, last = result.history
    assert last.loss < first.loss
    assert result.test_accuracy > 0.85  # chance is 0.10
    assert not result.model.training


def test_same_seed_gives_bit_identical_weights(mnist_train, mnist_test):
    config = TrainConfig(epochs=1, limit=3000, seed=7)
    a = train(config, mnist_train, mnist_test).model.state_dict()
    b = train(config, mnist_train, mnist_test).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = train(TrainConfig(epochs=1, limit=3000, seed=8), mnist_train, mnist_test)
    assert not torch.equal(a["hidden.weight"], c.model.state_dict()["hidden.weight"])


def test_evaluate_restores_training_mode(mnist_test):
    from training.model import MLP

    model = MLP().train()
    evaluate(model, *mnist_test)
    assert model.training


def test_mse_loss_option_also_learns(mnist_train, mnist_test):
    result = train(TrainConfig(epochs=1, limit=5000, loss="mse"), mnist_train, mnist_test)
    assert result.test_accuracy > 0.7


@pytest.mark.slow
def test_full_default_recipe_reaches_97_8_percent(mnist_train, mnist_test, tmp_path):
    """The seed recipe on real MNIST (about 10 s here once the loop is in memory)."""
    result = train(TrainConfig(), mnist_train, mnist_test)
    assert len(result.history) == 10
    assert result.test_accuracy >= 0.978
    assert evaluate(result.model, *mnist_test) == result.test_accuracy


@pytest.mark.slow
def test_full_robust_recipe_beats_the_seed_and_is_calibrated(
    mnist_train, mnist_test, mnist_md5, tmp_path
):
    """The recipe `make serve` and `scripts/build` train: >= 98.3 % and a calibrated flag."""
    _, checkpoint = train_and_save(
        RECIPES["robust"], mnist_train, mnist_test, tmp_path / "robust.pt", data_md5=mnist_md5
    )
    metrics = checkpoint.metadata["metrics"]
    assert metrics["test_accuracy"] >= 0.983
    assert metrics["calibration"]["ece_after"] <= 0.015
    assert metrics["calibration"]["flagged"] <= 0.03
    assert checkpoint.calibration is not None and checkpoint.calibration.heldout_images == 5000


def test_cli_trains_saves_and_registers(tmp_path, mnist_md5):
    from tests.conftest import DATA_DIR

    out = tmp_path / "model.pt"
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "--epochs",
            "1",
            "--limit",
            "3000",
            "--hidden",
            "64",
            "--data-dir",
            str(DATA_DIR),
            "--output",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "epoch  1/1  loss" in result.stdout and "test acc" in result.stdout
    checkpoint = Checkpoint.load(out)
    assert f"sha256 {checkpoint.sha256}" in result.stdout
    assert checkpoint.metadata["config"]["hidden"] == 64
    assert checkpoint.metadata["config"]["limit"] == 3000
    assert checkpoint.model.hidden.weight.shape == (64, 784)
    listing = subprocess.run(
        [BENTOML, "models", "list", "mnist-mlp", "-o", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert "mnist-mlp" in listing.stdout


@pytest.mark.parametrize(
    "args, message",
    [(["--epochs", "0"], "--epochs must be at least 1"), (["--lr", "-1"], "--lr must be positive")],
)
def test_cli_rejects_bad_flags(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "training", *args], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2 and message in result.stderr


def test_train_and_save_returns_the_saved_file_without_wall_clock_content(
    mnist_train, mnist_test, mnist_md5, tmp_path, monkeypatch
):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    config = TrainConfig(epochs=1, limit=1000, hidden=32)
    result, checkpoint = train_and_save(
        config, mnist_train, mnist_test, tmp_path / "a.pt", data_md5=mnist_md5
    )
    assert checkpoint.path == tmp_path / "a.pt" and not checkpoint.model.training
    assert checkpoint.metadata["created_at"] == "2023-11-14T22:13:20+00:00"
    assert checkpoint.metadata["git_commit"]  # the tests run in a checkout
    (epoch,) = checkpoint.metadata["metrics"]["history"]
    assert "seconds" not in epoch and result.history[0].seconds > 0
    assert checkpoint.metadata["metrics"]["test_accuracy"] == result.test_accuracy
    _, again = train_and_save(
        config, mnist_train, mnist_test, tmp_path / "b.pt", data_md5=mnist_md5
    )
    assert again.sha256 == checkpoint.sha256  # same seed, code and time: the same bytes


def test_a_bad_source_date_epoch_fails_before_training(mnist_md5, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH='yesterday'"):
        train_and_save(TrainConfig(), None, None, tmp_path / "m.pt", data_md5=mnist_md5)
    assert not (tmp_path / "m.pt").exists()


def test_a_dry_run_never_writes_the_shipped_checkpoint(tmp_path, monkeypatch, mnist_md5):
    from tests.conftest import DATA_DIR
    from training.cli import DRY_RUN_OUTPUT, main

    monkeypatch.chdir(tmp_path)
    assert main(["--dry-run", "--data-dir", str(DATA_DIR)]) == 0
    assert not (tmp_path / "artifacts" / "model.pt").exists()
    assert DRY_RUN_OUTPUT.is_file()


@pytest.mark.parametrize("argv", [["--epoch", "3"], ["--no-reg"], ["--dry"]])
def test_abbreviated_flags_are_refused(argv):
    from training.cli import parse_training_args

    with pytest.raises(SystemExit) as exit_info:
        parse_training_args(argv)
    assert exit_info.value.code == 2


def test_the_build_refuses_abbreviated_flags():
    from training.pipeline.cli import parse_build_args

    with pytest.raises(SystemExit) as exit_info:
        parse_build_args(["--no"])
    assert exit_info.value.code == 2
