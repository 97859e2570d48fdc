"""A self-describing checkpoint: weights plus everything needed to trust and rebuild them.

Saved with `torch.save` of plain containers and tensors, loaded only with
`torch.load(weights_only=True)`, so no code ever runs from a checkpoint file. A hash of
the weights inside the file catches corruption and naive tampering.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
import os
import pickle
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.calibration import Calibration
from training.data import write_atomically
from training.errors import CheckpointError, first_line
from training.model import MLP

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "state_dict", "architecture", "weights_sha256")


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A hash over parameter names, shapes, dtypes and bytes, independent of file layout."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def git_commit(cwd: Path | None = None) -> str | None:
    """The current commit (with `-dirty` if the tree has changes), or None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip() + ("-dirty" if status.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def creation_time() -> str:
    """A checkpoint's `created_at`: $SOURCE_DATE_EPOCH when set (reproducible files), else now.

    Raises ValueError when SOURCE_DATE_EPOCH is not a Unix time in seconds.
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            moment = dt.datetime.fromtimestamp(int(epoch), dt.UTC)
        except (ValueError, OverflowError, OSError):
            raise ValueError(f"SOURCE_DATE_EPOCH={epoch!r} is not a Unix time in seconds") from None
    else:
        moment = dt.datetime.now(dt.UTC)
    return moment.isoformat(timespec="seconds")


def save_checkpoint(
    path: Path,
    model: MLP,
    *,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    data_md5: Mapping[str, str],
    created_at: str | None = None,
    commit: str | None = None,
    calibration: Mapping[str, Any] | None = None,
) -> str:
    """Write the checkpoint atomically and return the file's sha256.

    `created_at` defaults to `creation_time()`. Most callers want `train_and_save` instead,
    which records the commit and keeps the file free of wall-clock timings.
    """
    state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {
        "format_version": FORMAT_VERSION,
        "state_dict": state_dict,
        "weights_sha256": weights_sha256(state_dict),
        "architecture": {"xdim": model.xdim, "hdim": model.hdim, "ydim": model.ydim},
        "config": dict(config),
        "metrics": dict(metrics),
        "data_md5": dict(data_md5),
        "torch_version": str(torch.__version__),
        "created_at": created_at or creation_time(),
        "git_commit": commit,
        "calibration": dict(calibration) if calibration is not None else None,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    write_atomically(Path(path), data)
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """A validated checkpoint file: the rebuilt model (eval mode) and what describes it.

    `metadata` is everything in the file except the weights, plus `sha256`, the hash of the
    bytes the weights came from: `load` reads the file once, so the two always belong together
    even if the file is replaced meanwhile.
    """

    path: Path
    model: MLP
    metadata: dict[str, Any]

    @property
    def sha256(self) -> str:
        return str(self.metadata["sha256"])

    @property
    def weights_sha256(self) -> str:
        return str(self.metadata["weights_sha256"])

    @property
    def calibration(self) -> Calibration | None:
        """Temperature and flag thresholds; None for a recipe without a held-out slice."""
        values = self.metadata.get("calibration")
        return Calibration.from_dict(values) if values is not None else None

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        """Read, validate and rebuild; raise CheckpointError with a one-line reason."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint not found: {path}") from None
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
        payload = _validated_payload(data, path)
        metadata = {k: v for k, v in payload.items() if k != "state_dict"}
        metadata["sha256"] = hashlib.sha256(data).hexdigest()
        return cls(path, _rebuilt_model(payload), metadata)


def _validated_payload(data: bytes, path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc) or "Unsupported class" in str(exc):
            # torch's own text goes on to suggest weights_only=False: never give that advice.
            raise CheckpointError(
                f"refused checkpoint {path}: it holds Python objects other than tensors and "
                "plain containers, and only weights-only checkpoints are loaded; re-save it "
                "from trusted code with training.checkpoint.save_checkpoint"
            ) from None
        raise CheckpointError(
            f"unreadable checkpoint {path}: {first_line(exc, limit=200)}"
        ) from None
    except Exception as exc:  # torch raises many types for garbage/truncated files
        reason = first_line(exc, limit=200)
        raise CheckpointError(f"unreadable checkpoint {path}: {reason}") from None
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        raise CheckpointError(f"not an mnist-mlp checkpoint: {path} (missing required fields)")
    if payload["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"unsupported checkpoint format {payload['format_version']!r}")
    state_dict = payload["state_dict"]
    if not isinstance(state_dict, dict) or not all(
        isinstance(v, torch.Tensor) for v in state_dict.values()
    ):
        raise CheckpointError(f"checkpoint {path} has no valid state_dict")
    if weights_sha256(state_dict) != payload["weights_sha256"]:
        raise CheckpointError(f"checkpoint {path} failed its integrity check (weights changed)")
    if not all(torch.isfinite(v).all() for v in state_dict.values()):
        raise CheckpointError(f"checkpoint {path} holds non-finite weights")
    if payload.get("calibration") is not None:
        try:
            Calibration.from_dict(payload["calibration"])
        except ValueError as exc:
            raise CheckpointError(f"checkpoint {path}: {exc}") from None
    accuracy = payload.get("metrics", {}).get("test_accuracy")
    if accuracy is not None and not math.isfinite(accuracy):
        raise CheckpointError(f"checkpoint {path} reports a non-finite accuracy")
    return payload


def _rebuilt_model(payload: Mapping[str, Any]) -> MLP:
    """The MLP of a validated payload, in eval mode."""
    arch = payload["architecture"]
    try:
        model = MLP(xdim=int(arch["xdim"]), hdim=int(arch["hdim"]), ydim=int(arch["ydim"]))
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        reason = first_line(exc, limit=200)
        raise CheckpointError(f"checkpoint does not match its architecture: {reason}") from None
    return model.eval()


def load_model(path: Path) -> MLP:
    """The MLP rebuilt from the checkpoint alone, in eval mode."""
    return Checkpoint.load(path).model


def read_metadata(path: Path) -> dict[str, Any]:
    """`Checkpoint.load(path).metadata`: kept for callers not yet moved to `Checkpoint`."""
    return Checkpoint.load(path).metadata
