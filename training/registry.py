"""The BentoML model store entry `mnist-mlp`: the checkpoint file plus searchable metadata."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

MODEL_NAME = "mnist-mlp"
CHECKPOINT_FILE = "model.pt"
PROMOTED_LABEL = ("stage", "production")


def import_bentoml() -> ModuleType:
    """BentoML, with its usage tracking off unless the environment says otherwise.

    The one place library code sets BENTOML_DO_NOT_TRACK: BentoML reads it when it first
    reports usage, so every use of the store goes through here. (The `bentoml` CLI reads it
    at start: the Makefile, the Dockerfile and the tests set it for that.)
    """
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    import bentoml

    return bentoml


def store_metadata(metadata: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """Labels (strings, for filtering) and metadata (for reading) from checkpoint metadata."""
    config = metadata.get("config", {})
    accuracy = metadata.get("metrics", {}).get("test_accuracy")
    labels = {
        "framework": "pytorch",
        "arch": "mlp-{xdim}-{hdim}-{ydim}".format(**metadata["architecture"]),
        "test_accuracy": f"{accuracy:.4f}" if accuracy is not None else "unknown",
    }
    flat = {
        "sha256": metadata["sha256"],
        "weights_sha256": metadata.get("weights_sha256"),
        "test_accuracy": accuracy,
        "created_at": metadata.get("created_at"),
        "git_commit": metadata.get("git_commit") or "",
        "torch_version": metadata.get("torch_version"),
        **{f"config_{k}": v for k, v in config.items() if v is not None},
        **{f"md5_{k}": v for k, v in metadata.get("data_md5", {}).items()},
    }
    return labels, flat


def register_checkpoint(
    checkpoint: Path, metadata: dict[str, Any], extra_labels: dict[str, str] | None = None
) -> str:
    """Copy the checkpoint into the store as a new `mnist-mlp` version; return its tag."""
    bentoml = import_bentoml()
    labels, flat = store_metadata(metadata)
    labels.update(extra_labels or {})
    with bentoml.models.create(MODEL_NAME, labels=labels, metadata=flat) as entry:
        shutil.copyfile(checkpoint, entry.path_of(CHECKPOINT_FILE))
    return str(entry.tag)


def serving_tag() -> str:
    """The model the service and the image use: the newest promoted `mnist-mlp`, else the newest.

    `mnist-build` promotes by registering a gated candidate with `stage=production`; plain
    `mnist-train` runs register without the label and so never replace a promoted model.
    """
    bentoml = import_bentoml()
    models = bentoml.models.list(MODEL_NAME)
    if not models:
        raise bentoml.exceptions.NotFound(f"no model '{MODEL_NAME}' in the BentoML store")
    key, value = PROMOTED_LABEL
    promoted = [m for m in models if m.info.labels.get(key) == value]
    newest = max(promoted or models, key=lambda m: m.info.creation_time)
    return str(newest.tag)
