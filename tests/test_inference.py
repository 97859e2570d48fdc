"""What `/model_info` says of the served model: its tag when known, always a version."""

from __future__ import annotations

import pytest

from service.inference import Classifier, ModelSource
from training import read_metadata


@pytest.mark.parametrize(
    ("tag", "from_store", "version", "source"),
    [
        (None, False, None, "file"),  # a plain file: its sha256 names it
        ("mnist-mlp:k2bpv6qz4wm5ccdq", False, "k2bpv6qz4wm5ccdq", "file"),  # the Docker image
        ("mnist-mlp:k2bpv6qz4wm5ccdq", True, "k2bpv6qz4wm5ccdq", "bentoml-store"),
    ],
    ids=["file", "file with its tag", "store"],
)
def test_model_info_names_the_tag_and_version(trained_checkpoint, tag, from_store, version, source):
    info = Classifier(ModelSource(trained_checkpoint, tag, from_store=from_store)).info()
    sha256 = read_metadata(trained_checkpoint)["sha256"]
    assert info["tag"] == tag and info["source"] == source and info["sha256"] == sha256
    assert info["version"] == (version or sha256[:16])


def test_answers_are_built_for_a_whole_batch_as_for_each_row():
    """`predictions` (one numpy call per batch, for /predict and /predict_images) gives each
    row's public answer: 6-decimal probabilities, the top digit, its probability, the flag."""
    import numpy as np

    from service.inference import prediction, predictions

    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(10), size=4).astype(np.float32)
    flagged = np.c_[probabilities, [1.0, 0.0, 1.0, 0.0]].astype(np.float32)
    unflagged = np.c_[probabilities, np.full(4, np.nan)].astype(np.float32)
    for rows, flags in ((flagged, [True, False, True, False]), (unflagged, [None] * 4)):
        answers = predictions(rows)
        assert answers == [prediction(row) for row in rows]
        for answer, row, flag in zip(answers, probabilities, flags, strict=True):
            digit = int(row.argmax())
            assert answer["digit"] == digit and answer["uncertain"] is flag
            assert answer["probabilities"] == [round(float(p), 6) for p in row]
            assert answer["confidence"] == answer["probabilities"][digit]
