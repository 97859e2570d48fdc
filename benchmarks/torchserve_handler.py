"""TorchServe 0.12 handler for the side-by-side benchmark: the peer a user would compare with.

It does exactly the service's work per request, so only the serving stack differs: the project's
decode (`service.preprocess.preprocess_image_bytes`), the project's checkpoint loader and forward
pass, and the service's own JSON shaping (`service.inference.prediction`). TorchServe hands a
batch (batchSize 64, maxBatchDelay 5 ms) as a list with one dict per request; for a multipart
upload the dict is keyed by form field name, so the PNG is `request["image"]` (a bytearray).

The repository must be importable in TorchServe's worker: `benchmarks.side_by_side` starts
TorchServe with PYTHONPATH set to the repository root, which TorchServe passes to its workers.
The checkpoint travels in the archive as its `--serialized-file`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.inference import prediction
from service.preprocess import preprocess_image_bytes
from training import load_model

FIELD = "image"
_models: dict[str, torch.nn.Module] = {}


def _model(context: Any) -> torch.nn.Module:
    """Load the archived checkpoint once per worker (TorchServe calls `handle` for everything)."""
    if "mlp" not in _models:
        torch.set_num_threads(1)  # as the service and the bare app: one thread per worker
        properties = context.system_properties
        manifest = context.manifest["model"]
        _models["mlp"] = load_model(Path(properties["model_dir"]) / manifest["serializedFile"])
    return _models["mlp"]


def _image_bytes(request: dict[str, Any]) -> bytes:
    """The uploaded PNG: the multipart field, or a raw body (`data`/`body`) as a fallback."""
    value = request.get(FIELD) or request.get("data") or request.get("body")
    if value is None:
        raise ValueError(f"no multipart field {FIELD!r} in the request")
    return bytes(value)


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    """One batch in, one compact JSON body per request out (TorchServe's own dict encoding
    uses `json.dumps(indent=2)`, which is pure Python: compact bytes are its fastest path)."""
    model = _model(context)
    if data is None:  # TorchServe's initialisation call
        return None
    images = np.stack([preprocess_image_bytes(_image_bytes(request)) for request in data])
    with torch.inference_mode():
        rows = model(torch.from_numpy(images.reshape(len(data), 784))).softmax(dim=1).numpy()
    for index in range(len(data)):
        context.set_response_content_type(index, "application/json")
    return [json.dumps(prediction(row)).encode() for row in rows]
