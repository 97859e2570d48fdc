"""The training core of the MNIST service: data -> model -> train -> checkpoint -> registry.

This is what serving may import. Importing the package is cheap: torch loads only when a name
that needs it is first used (`Checkpoint`, `load_model`, `MLP`), so the server's supervisor
process, which only resolves the model's tag, never loads it (about 500 MB and 1.7 s here).
The retraining pipeline lives in `training.pipeline`, which serving never imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from training.errors import CheckpointError

if TYPE_CHECKING:
    from training.checkpoint import Checkpoint, load_model, read_metadata
    from training.model import MLP

__all__ = ["MLP", "Checkpoint", "CheckpointError", "load_model", "read_metadata"]
_LAZY = {
    "Checkpoint": "training.checkpoint",
    "load_model": "training.checkpoint",
    "read_metadata": "training.checkpoint",
    "MLP": "training.model",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
