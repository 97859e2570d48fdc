"""TorchServe 0.12 handler for the side-by-side benchmark: the peer a user would compare with.

It does exactly the service's work per request, so only the serving stack differs: the project's
decode (`service.preprocess.preprocess_image_bytes`), the project's checkpoint loader and forward
pass (`service.inference.Classifier.outputs`, calibration and flag included), and the service's
own JSON shaping (`service.inference.prediction`). TorchServe hands a batch (batchSize 64,
maxBatchDelay 5 ms) as a list with one dict per request; for a multipart upload the dict is
keyed by form field name, so the PNG is `request["image"]` (a bytearray).

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

from service.inference import Classifier, ModelSource, prediction
from service.preprocess import preprocess_image_bytes

FIELD = "image"
_models: dict[str, Classifier] = {}


def _model(context: Any) -> Classifier:
    """Load the archived checkpoint once per worker (TorchServe calls `handle` for everything)."""
    if "mlp" not in _models:
        torch.set_num_threads(1)  # as the service and the bare app: one thread per worker
        properties = context.system_properties
        manifest = context.manifest["model"]
        path = Path(properties["model_dir"]) / manifest["serializedFile"]
        _models["mlp"] = Classifier(ModelSource(path, None))
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
    rows = model.outputs(images.reshape(len(data), 784))
    for index in range(len(data)):
        context.set_response_content_type(index, "application/json")
    return [json.dumps(prediction(row)).encode() for row in rows]
