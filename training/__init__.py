"""Training side of the MNIST service: data, model, loop, checkpoint, model store.

Importing this package is cheap and torchvision-free, so the server can use `load_model`.
"""

from training.checkpoint import CheckpointError, load_checkpoint, load_model, read_metadata
from training.model import MLP

__all__ = ["MLP", "CheckpointError", "load_checkpoint", "load_model", "read_metadata"]
