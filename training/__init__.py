"""The training core of the MNIST service: data -> model -> train -> checkpoint -> registry.

This is what serving may import. Importing the package is cheap and torchvision-free, so the
server can use `load_model` / `Checkpoint`. The retraining pipeline lives in `training.pipeline`,
which serving never imports.
"""

from training.checkpoint import Checkpoint, CheckpointError, load_model, read_metadata
from training.model import MLP

__all__ = ["MLP", "Checkpoint", "CheckpointError", "load_model", "read_metadata"]
