"""The training loop: the whole dataset lives in memory as tensors, batches are index slices.

This replaces the DataLoader-over-PIL loop (one Python object and one `ToTensor` per image)
with one `randperm` per epoch and tensor indexing, and evaluates the test set in one batch.
`train_and_save` is the one recipe that makes a checkpoint (`mnist-train`, `mnist-build`, tests).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from training.augment import Augmentation, augment
from training.calibration import calibrate, calibration_report
from training.checkpoint import Checkpoint, creation_time, git_commit, save_checkpoint
from training.glyphs import BANK_SIZE, glyph_bank, typed_digit_bank
from training.model import MLP
from training.outliers import outliers

LOSSES = ("cross-entropy", "mse")
SCHEDULES = ("constant", "one-cycle")


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run; stored verbatim in the checkpoint. The defaults are the seed recipe."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3  # the peak rate under the one-cycle schedule
    hidden: int = 256
    seed: int = 0
    loss: str = "cross-entropy"
    limit: int | None = None
    device: str = "cpu"
    recipe: str = "seed"
    augment: bool = False  # training.augment's transforms on every batch
    schedule: str = "constant"
    holdout: int = 0  # the last N training images are kept out of training, for calibration
    outlier_exposure: float = 0.0  # weight of the uniform-answer loss on made-up non-digits
    glyph_outliers: int = 0  # rendered letters and symbols in the outlier bank (0: none)
    typed_digits: int = 0  # digits rendered like the glyphs, added to each augmented batch

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# The seed recipe is the reference; the robust one reads real uploads (docs/retraining.md).
RECIPES = {
    "seed": TrainConfig(),
    "robust": TrainConfig(
        recipe="robust",
        epochs=18,
        lr=3e-3,
        augment=True,
        schedule="one-cycle",
        holdout=5000,
        outlier_exposure=0.5,
        glyph_outliers=BANK_SIZE,
        typed_digits=16,
    ),
}


@dataclass
class EpochStats:
    epoch: int
    loss: float
    train_accuracy: float
    test_accuracy: float
    seconds: float


@dataclass
class TrainResult:
    model: MLP
    history: list[EpochStats] = field(default_factory=list)
    heldout: tuple[Tensor, Tensor] | None = None  # the images calibration is fitted on

    @property
    def test_accuracy(self) -> float:
        return self.history[-1].test_accuracy


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without one is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    return torch.device(name)


def loss_function(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    if name == "cross-entropy":
        return nn.CrossEntropyLoss()
    if name == "mse":  # squared error between softmax and one-hot, for comparison runs
        return lambda logits, y: nn.functional.mse_loss(
            logits.softmax(dim=1), nn.functional.one_hot(y, logits.shape[1]).float()
        )
    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")


@torch.no_grad()
def evaluate(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 10_000) -> float:
    """Accuracy in [0, 1], in eval mode; the model's previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size])
        correct += (logits.argmax(dim=1) == labels[start : start + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(images)


def split_holdout(
    config: TrainConfig, train_data: tuple[Tensor, Tensor]
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor] | None]:
    """(images trained on, held-out images or None): the last `holdout` images, then `limit`."""
    x, y = train_data
    heldout = None
    if config.holdout:
        if config.holdout >= len(x):
            raise ValueError(f"--holdout {config.holdout} leaves no training images")
        heldout = (x[-config.holdout :], y[-config.holdout :])
        x, y = x[: -config.holdout], y[: -config.holdout]
    if config.limit is not None:
        x, y = x[: config.limit], y[: config.limit]
    return (x, y), heldout


def train(
    config: TrainConfig,
    train_data: tuple[Tensor, Tensor],
    test_data: tuple[Tensor, Tensor],
    on_epoch: Callable[[EpochStats], None] = lambda stats: None,
) -> TrainResult:
    """Train an MLP with Adam on in-memory tensors; deterministic for a given seed and machine."""
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    shuffle = torch.Generator().manual_seed(config.seed)
    (x_train, y_train), heldout = split_holdout(config, train_data)
    x_train, y_train = x_train.to(device), y_train.to(device)
    x_test, y_test = (t.to(device) for t in test_data)
    augmentation = Augmentation()
    augmenting = torch.Generator(device=device).manual_seed(config.seed + 1)
    glyphs = None
    if config.outlier_exposure and config.glyph_outliers:
        glyphs = glyph_bank(config.glyph_outliers, config.seed)[0].to(device)
    typed = None
    if config.typed_digits:
        typed = [t.to(device) for t in typed_digit_bank(BANK_SIZE, config.seed)]

    model = MLP(xdim=x_train.shape[1], hdim=config.hidden, ydim=10).to(device)
    # fused: one kernel updates all parameters instead of ~10 ops per tensor (15-20 % per epoch)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
    criterion = loss_function(config.loss)
    result = TrainResult(model, heldout=heldout)
    n = len(x_train)
    steps_per_epoch = -(-n // config.batch_size)
    schedule = learning_rate_schedule(config, optimizer, steps_per_epoch)
    show_bar = sys.stderr.isatty()

    model.train()
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        order = torch.randperm(n, generator=shuffle).to(device)
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        batches = range(0, n, config.batch_size)
        bar = tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not show_bar)
        for start in bar:
            index = order[start : start + config.batch_size]
            # index_select copies whole rows, twice as fast as the generic gather of x_train[index]
            x, y = x_train.index_select(0, index), y_train.index_select(0, index)
            if typed is not None:
                pick = torch.randint(
                    len(typed[0]), (config.typed_digits,), generator=augmenting, device=device
                )
                x = torch.cat([x, typed[0].index_select(0, pick)])
                y = torch.cat([y, typed[1].index_select(0, pick)])
            if config.augment:
                x = augment(x, augmenting, augmentation)
            logits = model(x)
            loss = criterion(logits, y)
            if config.outlier_exposure:
                odd = model(outliers(x[: len(x) // 4], augmenting, glyphs))
                # cross-entropy against the uniform answer: "none of the ten"
                loss = loss - config.outlier_exposure * odd.log_softmax(dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            total_loss += loss.detach() * len(index)
            mnist = slice(0, len(index))  # the training images, not the typed digits
            correct += (logits[mnist].detach().argmax(dim=1) == y[mnist]).sum()
        stats = EpochStats(
            epoch=epoch,
            loss=total_loss.item() / n,
            train_accuracy=correct.item() / n,
            test_accuracy=evaluate(model, x_test, y_test),
            seconds=time.perf_counter() - started,
        )
        result.history.append(stats)
        on_epoch(stats)
    model.eval()
    return result


def learning_rate_schedule(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """None for the seed's constant rate; one-cycle warms up to `lr`, then anneals to ~0."""
    if config.schedule == "constant":
        return None
    if config.schedule == "one-cycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=config.lr,
            total_steps=config.epochs * steps_per_epoch,
            pct_start=0.25,
            cycle_momentum=False,
        )
    raise ValueError(f"unknown schedule {config.schedule!r}; choose from {', '.join(SCHEDULES)}")


def train_and_save(
    config: TrainConfig,
    train_data: tuple[Tensor, Tensor],
    test_data: tuple[Tensor, Tensor],
    path: Path,
    *,
    data_md5: Mapping[str, str],
    on_epoch: Callable[[EpochStats], None] = lambda stats: None,
    created_at: str | None = None,
) -> tuple[TrainResult, Checkpoint]:
    """Train, write the checkpoint to `path` and load it back: the one way a model is made.

    The returned `Checkpoint` is the saved file, validated, not the in-memory model. Only
    deterministic content goes into the file: no wall-clock timings (they stay in the returned
    history), `created_at` from `creation_time()` unless given, and the training code's commit.
    So the same config, seed, code, machine and SOURCE_DATE_EPOCH give a byte-identical file.
    """
    created_at = created_at or creation_time()  # a bad SOURCE_DATE_EPOCH fails before training
    result = train(config, train_data, test_data, on_epoch)
    history = [{k: v for k, v in asdict(s).items() if k != "seconds"} for s in result.history]
    metrics: dict[str, Any] = {"test_accuracy": result.test_accuracy, "history": history}
    calibration = calibrate(result.model.cpu(), *result.heldout) if result.heldout else None
    test_report = calibration_report(result.model, calibration, *test_data)
    metrics["calibration"] = {k: v for k, v in test_report.items() if "reliability" not in k}
    save_checkpoint(
        path,
        result.model,
        config=config.as_dict(),
        metrics=metrics,
        data_md5=data_md5,
        created_at=created_at,
        commit=git_commit(Path(__file__).parent),
        calibration=calibration.as_dict() if calibration else None,
    )
    return result, Checkpoint.load(path)


def format_epoch(stats: EpochStats, epochs: int) -> str:
    return (
        f"epoch {stats.epoch:>2}/{epochs}  loss {stats.loss:.4f}  "
        f"train acc {100 * stats.train_accuracy:6.2f}%  "
        f"test acc {100 * stats.test_accuracy:6.2f}%  {stats.seconds:5.2f}s"
    )
