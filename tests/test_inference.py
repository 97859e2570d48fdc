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
