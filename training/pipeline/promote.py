"""The promotion, on the BentoML store: the model to beat, the lock, the `stage=production` write.

`promotion_lock` makes gate-and-register one step across processes: a build reads the baseline and
registers its candidate while holding an exclusive `flock` in the store's home directory, so two
concurrent builds cannot both gate against the same model and both promote.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from training.checkpoint import Checkpoint, CheckpointError
from training.pipeline.gate import Baseline, GateDecision
from training.registry import (
    CHECKPOINT_FILE,
    PROMOTED_LABEL,
    import_bentoml,
    register_checkpoint,
    serving_tag,
)

LOCK_FILE = "mnist-mlp.promote.lock"


class BaselineError(RuntimeError):
    """The served model cannot be compared with: the message says which and why."""


def store_home() -> Path:
    """The BentoML home (`$BENTOML_HOME`, default ~/bentoml), as BentoML itself resolves it."""
    import_bentoml()
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.bentoml_home.get())


@contextlib.contextmanager
def promotion_lock(log: Callable[[str], None] = print) -> Iterator[Path]:
    """Hold the store's exclusive promotion lock; wait (and say so) while another build holds it.

    The kernel drops the lock when the process ends, however it ends: no stale lock files.
    """
    path = store_home() / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"    waiting for another build to finish promoting (lock {path}) ...")
            started = time.perf_counter()
            fcntl.flock(lock, fcntl.LOCK_EX)
            log(f"    got the lock after {time.perf_counter() - started:.1f} s")
        try:
            yield path
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def current_baseline() -> Baseline | None:
    """What the service would serve now (`serving_tag()`), or None when the store is empty."""
    bentoml = import_bentoml()
    try:
        tag = serving_tag()
    except bentoml.exceptions.NotFound:
        return None
    model = bentoml.models.get(tag)
    metadata = model.info.metadata
    accuracy = metadata.get("test_accuracy")
    if accuracy is None:  # an entry from before metadata was searchable: ask the checkpoint
        try:
            checkpoint = Checkpoint.load(Path(model.path_of(CHECKPOINT_FILE))).metadata
        except CheckpointError as exc:
            raise BaselineError(f"cannot read the promoted model {tag}: {exc}") from None
        accuracy = checkpoint.get("metrics", {}).get("test_accuracy")
    if accuracy is None:
        raise BaselineError(f"the promoted model {tag} records no test accuracy to compare with")
    key, value = PROMOTED_LABEL
    return Baseline(
        tag=tag,
        test_accuracy=float(accuracy),
        promoted=model.info.labels.get(key) == value,
        sha256=metadata.get("sha256"),
        weights_sha256=metadata.get("weights_sha256"),
        checkpoint=str(model.path_of(CHECKPOINT_FILE)),
    )


def register_promoted(
    candidate: Path, metadata: dict[str, Any], decision: GateDecision
) -> tuple[str, dict[str, str]]:
    """Register the candidate with `stage=production`: the promotion itself, one atomic write.

    Returns the new tag and the labels added; `serving_tag()` picks it from now on.
    """
    key, value = PROMOTED_LABEL
    labels = {
        key: value,
        "weights_sha256": metadata["weights_sha256"],
        "gate": "forced" if decision.forced else "passed",
        "replaces": decision.baseline.tag if decision.baseline else "none",
        "promoted_by": "mnist-build",
    }
    return register_checkpoint(candidate, metadata, extra_labels=labels), labels
