"""`mnist-build rollback`: serve the production model before the current one again.

Nothing is deleted. The store serves its newest `stage=production` entry, so the rollback
registers the earlier model's checkpoint again, byte for byte (same file sha256, same weights
sha256, a new tag), labelled `gate=rollback`, and the promotion history records it and marks the
entry it replaced as rolled back. "The model before" skips entries that were rolled back and
those with the serving weights, so rolling back twice goes two models back, not back and forth.
Like a promotion it runs under the store's promotion lock; images and running services are
rolled separately (`make docker`, `scripts/rollout rollback`; docs/deploy.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.checkpoint import Checkpoint, CheckpointError
from training.data import write_atomically
from training.pipeline import REPO, history
from training.pipeline.promote import promotion_lock
from training.registry import (
    CHECKPOINT_FILE,
    PROMOTED_LABEL,
    import_bentoml,
    register_checkpoint,
    serving_tag,
)


class RollbackError(RuntimeError):
    """Nothing to roll back to, or the store and its history disagree; the message says which."""


def target(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The entry to serve again: the newest earlier one not rolled back, with other weights."""
    serving = entries[-1]
    for entry in reversed(entries[:-1]):
        if not entry.get("rolled_back") and entry.get("weights_sha256") != serving.get(
            "weights_sha256"
        ):
            return entry
    raise RollbackError(
        f"no earlier production model to roll back to from {serving['tag']} "
        f"({len(entries)} entries in {history.history_path()})"
    )


def roll_back(output: Path | None) -> tuple[str, dict[str, Any]]:
    """Register the previous production model again; its new tag and the entry it serves as."""
    bentoml = import_bentoml()
    with promotion_lock(print):
        entries = history.read_history()
        if not entries:
            raise RollbackError(f"no promotion recorded in {history.history_path()}")
        try:
            serving = serving_tag()
        except bentoml.exceptions.NotFound:
            raise RollbackError("the model store holds no mnist-mlp model") from None
        if entries[-1]["tag"] != serving:
            raise RollbackError(
                f"the store serves {serving}, but the promotion history ends with "
                f"{entries[-1]['tag']}: promoted outside mnist-build? Nothing was changed"
            )
        earlier = target(entries)
        try:
            stored = bentoml.models.get(earlier["tag"])
        except bentoml.exceptions.NotFound:
            raise RollbackError(f"{earlier['tag']} is no longer in the model store") from None
        path = Path(stored.path_of(CHECKPOINT_FILE))
        try:
            metadata = Checkpoint.load(path).metadata
        except CheckpointError as exc:
            raise RollbackError(f"cannot roll back to {earlier['tag']}: {exc}") from None
        key, value = PROMOTED_LABEL
        labels = {
            key: value,
            "weights_sha256": metadata["weights_sha256"],
            "gate": "rollback",
            "replaces": serving,
            "rollback_to": earlier["tag"],
            "promoted_by": "mnist-build rollback",
        }
        tag = register_checkpoint(path, metadata, extra_labels=labels)
        entry = history.record_promotion(
            tag,
            metadata,
            promoted_by="mnist-build rollback",
            gate="rollback",
            baseline=None,
            note=f"rollback from {serving} to the model of {earlier['tag']}",
            rolled_back=True,
        )
        if output is not None:
            write_atomically(output, path.read_bytes())
    return tag, entry


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="mnist-build rollback",
        description="Serve the production model before the current one again (nothing is "
        "deleted: it is registered again, and the promotion history records it).",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=REPO / "artifacts" / "model.pt",
        help="where its checkpoint is copied (atomically) for the next image build",
    )
    p.add_argument("--no-output", action="store_true", help="do not copy the checkpoint")
    args = p.parse_args(argv)
    try:
        tag, entry = roll_back(None if args.no_output else args.output)
    except (RollbackError, history.HistoryError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"rolled back: {tag} is production ({entry['note']}; sha256 {entry['sha256']})")
    if not args.no_output:
        print(f"  checkpoint: {args.output}; rebuild the image (make docker) to ship it")
    return 0
