"""MNIST (shipped with the course) and Fashion-MNIST (installed from Debian, or downloaded on request).

Both loaders return ``(x, y)``:

- ``x``: ``torch.float32`` of shape ``(N, 1, 28, 28)``, pixel / 255, so values lie in ``[0, 1]``
  (or ``torch.uint8`` of shape ``(N, 28, 28)`` with ``as_uint8=True``);
- ``y``: ``torch.int64`` of shape ``(N,)``, the class index 0..9.

``N`` is 60000 for ``split="train"`` and 10000 for ``split="test"``.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

FILES = Path(__file__).resolve().parent / "files"
MNIST_FILE = FILES / "mnist.npz"
# sha256 of the shipped file; see files/README.md for where the bytes come from.
MNIST_SHA256 = "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CACHE_DIR = Path.home() / ".cache" / "course_lib" / "fashion-mnist"
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32,
               0x0E: np.float64}


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _to_tensors(images: np.ndarray, labels: np.ndarray, as_uint8: bool):
    y = torch.from_numpy(labels.astype(np.int64))
    if as_uint8:  # a copy: the arrays are cached, and callers may edit the tensor in place
        return torch.from_numpy(np.array(images, copy=True, order="C")), y
    return torch.from_numpy(images).float().div_(255).unsqueeze(1), y  # .float() already copies


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=2)
def _read_mnist_npz(path: str) -> dict:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"MNIST file not found: {file}. It ships with the course in course_lib/data/files/; "
            "restore it with `git checkout -- course_lib/data/files/mnist.npz` "
            "(or re-clone the repository)."
        )
    if path == str(MNIST_FILE) and sha256_of(file) != MNIST_SHA256:
        raise ValueError(
            f"{file} is damaged (sha256 mismatch). Restore it with "
            "`git checkout -- course_lib/data/files/mnist.npz`."
        )
    with np.load(file) as archive:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
        if missing:
            raise ValueError(f"{file} lacks the arrays {sorted(missing)}; an MNIST .npz holds "
                             "x_train, y_train, x_test, y_test")
        return {key: archive[key] for key in archive.files}


def load_mnist(split: str = "train", *, as_uint8: bool = False, path: str | os.PathLike | None = None):
    """MNIST digits, offline: 60000 train / 10000 test images (see the module docstring for shapes).

    ``path`` defaults to the file shipped with the course; it must be an ``.npz`` with
    ``x_train, y_train, x_test, y_test`` (uint8 images of shape (N, 28, 28)).
    """
    _check_split(split)
    arrays = _read_mnist_npz(str(Path(path) if path is not None else MNIST_FILE))
    return _to_tensors(arrays[f"x_{split}"], arrays[f"y_{split}"], as_uint8)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one file in LeCun's IDX format (plain or gzip-compressed) into a NumPy array."""
    path = Path(path)
    with open(path, "rb") as f:
        is_gzip = f.read(2) == b"\x1f\x8b"  # gzip's magic number, whatever the file is called
    with (gzip.open if is_gzip else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    dtype = np.dtype(_IDX_DTYPES[data[2]]).newbyteorder(">")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - offset != expected:
        problem = "truncated" if len(data) - offset < expected else "longer than its header says"
        raise ValueError(f"{path} is {problem}: header says {dims}, found {len(data) - offset} bytes "
                         f"of data instead of {expected}")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def _fashion_dir(root) -> Path | None:
    candidates = [Path(root)] if root is not None else [
        Path(p) for p in (os.environ.get("FASHION_MNIST_DIR"), FASHION_DEBIAN_DIR, FASHION_CACHE_DIR) if p
    ]
    for folder in candidates:
        if all((folder / name).is_file() for names in _IDX_NAMES.values() for name in names):
            return folder
    return None


FASHION_COUNTS = {"train": 60_000, "test": 10_000}


def _verify_fashion_file(path: Path, name: str) -> None:
    """A downloaded IDX .gz must decompress whole (gzip checks its CRC and length) and hold the expected count."""
    split = "train" if name.startswith("train") else "test"
    try:
        array = read_idx(path)
    except (EOFError, OSError, ValueError) as error:
        raise ValueError(f"the download of {name} is incomplete or damaged ({error})") from error
    expected = (FASHION_COUNTS[split], 28, 28) if "images" in name else (FASHION_COUNTS[split],)
    if array.shape != expected:
        raise ValueError(f"the download of {name} holds an array of shape {array.shape}, expected {expected}")


def _download_fashion(target: Path) -> Path:
    """Fetch the four official files into ``target``: each to a temporary name, verified, then renamed, so an
    interrupted download never leaves a file that looks complete."""
    target.mkdir(parents=True, exist_ok=True)
    for names in _IDX_NAMES.values():
        for name in names:
            if (target / name).is_file():
                continue
            print(f"downloading {FASHION_URL}{name} -> {target / name}")
            partial = target / f".{name}.part-{os.getpid()}"
            try:
                urllib.request.urlretrieve(FASHION_URL + name, partial)
                _verify_fashion_file(partial, name)
                os.replace(partial, target / name)
            finally:
                partial.unlink(missing_ok=True)
    return target


def load_fashion_mnist(split: str = "train", *, root: str | os.PathLike | None = None,
                       download: bool = False, as_uint8: bool = False):
    """Fashion-MNIST (Zalando, MIT licence), same shapes as :func:`load_mnist`.

    Looked for in ``root`` if given, else in ``$FASHION_MNIST_DIR``, Debian's
    ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``), and
    ``~/.cache/course_lib/fashion-mnist``. Only ``download=True`` fetches the official files.
    """
    _check_split(split)
    folder = _fashion_dir(root)
    if folder is None and download:
        folder = _download_fashion(Path(root) if root is not None else FASHION_CACHE_DIR)
    if folder is None:
        where = root if root is not None else f"{FASHION_DEBIAN_DIR} or {FASHION_CACHE_DIR}"
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {where}. Install it offline with "
            "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; `make data` does this), "
            "point FASHION_MNIST_DIR at a folder holding the four IDX .gz files, "
            "or call load_fashion_mnist(download=True) to fetch them."
        )
    image_name, label_name = _IDX_NAMES[split]
    images, labels = _read_fashion_file(folder / image_name), _read_fashion_file(folder / label_name)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(f"unexpected Fashion-MNIST shapes in {folder}: {images.shape}, {labels.shape}")
    return _to_tensors(images, labels, as_uint8)


def _read_fashion_file(path: Path) -> np.ndarray:
    try:
        return read_idx(path)
    except (EOFError, OSError, ValueError) as error:  # a truncated .gz raises EOFError, a corrupt one BadGzipFile
        raise ValueError(f"{path} is damaged ({error}). Delete it and fetch it again with "
                         "load_fashion_mnist(download=True), or reinstall Debian's dataset-fashion-mnist "
                         "(`sudo apt-get install --reinstall dataset-fashion-mnist`).") from error
