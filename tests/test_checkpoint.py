"""Checkpoints: a faithful round trip, metadata, and refusal of anything untrustworthy."""

import pytest
import torch

from training import Checkpoint, CheckpointError, load_model
from training.checkpoint import save_checkpoint
from training.model import MLP


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(1)
    model = MLP(hdim=32)
    path = tmp_path / "model.pt"
    sha = save_checkpoint(
        path,
        model,
        config={"epochs": 1, "hidden": 32},
        metrics={"test_accuracy": 0.5, "history": []},
        data_md5={"t10k-labels-idx1-ubyte": "abc"},
    )
    return model, path, sha


def test_round_trip_gives_identical_outputs(saved):
    model, path, _ = saved
    restored = load_model(path)
    assert not restored.training
    x = torch.rand(8, 784)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), restored(x))


def test_metadata_describes_the_checkpoint(saved):
    _, path, sha = saved
    checkpoint = Checkpoint.load(path)
    assert checkpoint.sha256 == sha and checkpoint.path == path
    meta = checkpoint.metadata
    assert meta["sha256"] == sha
    assert meta["architecture"] == {"xdim": 784, "hdim": 32, "ydim": 10}
    assert meta["config"]["hidden"] == 32
    assert meta["metrics"]["test_accuracy"] == 0.5
    assert meta["data_md5"] == {"t10k-labels-idx1-ubyte": "abc"}
    assert meta["torch_version"] == str(torch.__version__)
    assert "state_dict" not in meta and meta["created_at"]


def test_save_is_atomic_and_leaves_no_temp_files(saved):
    _, path, _ = saved
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pt")


def test_garbage_is_refused(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"\x00not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="unreadable"):
        load_model(path)


def test_truncated_file_is_refused(saved):
    _, path, _ = saved
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(CheckpointError):
        load_model(path)


def test_tampered_weights_are_refused(saved):
    _, path, _ = saved
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["hidden.weight"][0, 0] += 0.5
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="integrity"):
        load_model(path)


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    path = tmp_path / "evil.pt"
    torch.save({"payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="only weights-only checkpoints are loaded") as info:
        load_model(path)
    assert "weights_only" not in str(info.value)  # never suggest the unsafe way round
    assert "\n" not in str(info.value)


def test_other_torch_files_are_refused(tmp_path):
    path = tmp_path / "state.pt"
    torch.save(MLP().state_dict(), path)
    with pytest.raises(CheckpointError, match="missing required fields"):
        load_model(path)
