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
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from training.data import write_atomically
from training.model import MLP

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "state_dict", "architecture", "weights_sha256")


class CheckpointError(ValueError):
    """The file is missing, unreadable, or not a valid checkpoint; the message says which."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def save_checkpoint(
    path: Path,
    model: MLP,
    *,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    data_md5: Mapping[str, str],
    created_at: str | None = None,
    commit: str | None = None,
) -> str:
    """Write the checkpoint atomically and return the file's sha256."""
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
        "created_at": created_at or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomically(Path(path), buffer.getvalue())
    return file_sha256(Path(path))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read and validate a checkpoint; raise CheckpointError with a one-line reason.

    The file is read once: the returned payload's `file_sha256` describes exactly the bytes
    the weights came from, even if the file is replaced meanwhile.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for garbage/truncated files
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
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
    accuracy = payload.get("metrics", {}).get("test_accuracy")
    if accuracy is not None and not math.isfinite(accuracy):
        raise CheckpointError(f"checkpoint {path} reports a non-finite accuracy")
    payload["file_sha256"] = hashlib.sha256(data).hexdigest()
    return payload


def build_model(payload: Mapping[str, Any]) -> MLP:
    """Rebuild the MLP from a validated payload, in eval mode."""
    arch = payload["architecture"]
    try:
        model = MLP(xdim=int(arch["xdim"]), hdim=int(arch["hdim"]), ydim=int(arch["ydim"]))
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0][:200]
        raise CheckpointError(f"checkpoint does not match its architecture: {reason}") from None
    return model.eval()


def load_model(path: Path) -> MLP:
    """The MLP rebuilt from the checkpoint alone, in eval mode."""
    return build_model(load_checkpoint(path))


def metadata_of(payload: dict[str, Any]) -> dict[str, Any]:
    """Everything in a loaded checkpoint except the weights, with the file's sha256 as `sha256`."""
    metadata = {k: v for k, v in payload.items() if k not in ("state_dict", "file_sha256")}
    metadata["sha256"] = payload["file_sha256"]
    return metadata


def read_metadata(path: Path) -> dict[str, Any]:
    """Everything in the checkpoint except the weights, plus the file's sha256."""
    return metadata_of(load_checkpoint(path))
