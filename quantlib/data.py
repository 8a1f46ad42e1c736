"""The dataset format of a QAT run, and the checks that make a bad upload a clear error.

A dataset is an ``.npz`` with ``x_train`` (float32, N x ...), optional ``y_train`` (int64
labels) and optional ``x_eval``/``y_eval``. Numpy only: the API server validates uploads
with this module and never imports torch. Archives are opened with
``allow_pickle=False``, so an upload cannot run code.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from quantlib.errors import QuantlibError

X_KEYS = ("x_train", "x_eval")
Y_KEYS = ("y_train", "y_eval")
ALLOWED_KEYS = ("x_train", "y_train", "x_eval", "y_eval")
_DTYPES = {"x_train": np.float32, "x_eval": np.float32, "y_train": np.int64, "y_eval": np.int64}
# the largest input magnitude accepted: float16's largest finite value
MAX_INPUT = 65504.0


class DataError(QuantlibError):
    """A dataset that cannot be used; ``field`` names the array (``y_train``) or ``data``."""

    code = "BAD_DATA"


@dataclass(frozen=True)
class Dataset:
    """Validated arrays; labels are present for every split or for none."""

    x_train: np.ndarray
    y_train: np.ndarray | None = None
    x_eval: np.ndarray | None = None
    y_eval: np.ndarray | None = None

    @property
    def has_labels(self) -> bool:
        return self.y_train is not None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def eval_split(self) -> tuple[np.ndarray, np.ndarray | None, str]:
        """The arrays to score on and their source: ``x_eval`` if given, else ``x_train``."""
        if self.x_eval is not None:
            return self.x_eval, self.y_eval, "x_eval"
        return self.x_train, self.y_train, "x_train"


def load_dataset(source: str | os.PathLike[str] | BinaryIO) -> Dataset:
    """Open and validate an ``.npz`` dataset (a path or a binary file object)."""
    try:
        archive = np.load(source, allow_pickle=False)
    except FileNotFoundError as exc:
        raise DataError(f"data file {source!s} does not exist", field="data") from exc
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"data is not a readable .npz archive ({exc}); write it with numpy.savez", field="data"
        ) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            "data is a single .npy array, not an .npz archive; write it with "
            "numpy.savez(path, x_train=..., y_train=...)",
            field="data",
        )
    with archive:
        arrays = {key: _read(archive, key) for key in _checked_keys(archive.files)}
    return validate_arrays(arrays)


def _checked_keys(keys: list[str]) -> list[str]:
    unknown = sorted(set(keys) - set(ALLOWED_KEYS))
    if unknown:
        raise DataError(
            f"unknown array {unknown[0]!r} in the data; allowed: {', '.join(ALLOWED_KEYS)}", field=unknown[0]
        )
    return keys


def _read(archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:  # object arrays need pickle, which is refused
        raise DataError(f"{key} cannot be read without pickle ({exc}); store plain numeric arrays", field=key) from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{key} is damaged in the archive: {exc}", field=key) from exc


def validate_arrays(arrays: dict[str, np.ndarray]) -> Dataset:
    """Check names, dtypes, shapes and values; the first problem raises :class:`DataError`."""
    check_structure(arrays)
    for key, array in arrays.items():
        check_values(key, array)
    return Dataset(**arrays)


def check_structure(arrays: Mapping[str, np.ndarray]) -> None:
    """Names, dtypes, shapes and how the arrays fit together; no element is read.

    So it can run on zero-memory stand-ins of the right shape (``np.broadcast_to``): the
    API checks an upload's structure from its ``.npy`` headers, then its values in chunks.
    """
    _checked_keys(list(arrays))
    if "x_train" not in arrays:
        raise DataError("the data has no x_train array (float32, N x ...); it is required", field="x_train")
    for key, array in arrays.items():
        _check_dtype(key, array)
        _check_shape(key, array)
    x_train = arrays["x_train"]
    for x_key, y_key in zip(X_KEYS, Y_KEYS, strict=True):
        x, y = arrays.get(x_key), arrays.get(y_key)
        if y is not None and x is None:
            raise DataError(f"{y_key} is given without {x_key}", field=y_key)
        if x is not None and x.shape[1:] != x_train.shape[1:]:
            raise DataError(
                f"{x_key} samples have shape {x.shape[1:]}, but x_train samples have {x_train.shape[1:]}", field=x_key
            )
        if x is not None and y is not None and len(y) != len(x):
            raise DataError(f"{y_key} has {len(y)} labels for {len(x)} samples in {x_key}", field=y_key)
    labelled = {key: key in arrays for key in Y_KEYS if key.replace("y_", "x_") in arrays}
    if len(set(labelled.values())) > 1:
        missing = next(key for key, present in labelled.items() if not present)
        raise DataError(
            f"{missing} is missing: give labels for every split (cross-entropy, top-1) or for none "
            "(distillation from the FP32 model)",
            field=missing,
        )


def check_values(key: str, samples: np.ndarray, first_sample: int = 0) -> None:
    """The values of ``samples``, whole samples of array ``key`` starting at ``first_sample``.

    Inputs must be finite and within float16's range, labels non-negative; called on a
    whole array or on consecutive chunks of one, so memory stays bounded by the chunk.
    """
    if key in X_KEYS:
        _check_finite(key, samples, first_sample)
    else:
        _check_labels_nonneg(key, samples, first_sample)


def _check_dtype(key: str, array: np.ndarray) -> None:
    expected = _DTYPES[key]
    if array.dtype != expected:
        name = np.dtype(expected).name
        raise DataError(
            f"{key} has dtype {array.dtype}, expected {name}; cast it with {key}.astype(np.{name})", field=key
        )


def _check_shape(key: str, array: np.ndarray) -> None:
    if key in Y_KEYS and array.ndim != 1:
        raise DataError(f"{key} must be one class index per sample, shape (N,), got {array.shape}", field=key)
    if key in X_KEYS and array.ndim < 2:
        raise DataError(f"{key} must be N samples x sample shape (at least 2 dimensions), got {array.shape}", field=key)
    if array.size == 0:
        raise DataError(f"{key} is empty (shape {array.shape})", field=key)


def _check_finite(key: str, array: np.ndarray, offset: int) -> None:
    """No NaN or Inf, and nothing beyond float16's range: such inputs overflow in training or INT8."""
    bad = ~np.isfinite(array)
    if bad.any():
        first = offset + _first_sample(bad)
        raise DataError(
            f"{key} contains NaN or Inf values (first in sample {first}); clean or drop those samples", field=key
        )
    huge = np.abs(array) > MAX_INPUT
    if huge.any():
        first = offset + _first_sample(huge)
        raise DataError(
            f"{key} has values beyond +-{MAX_INPUT:g} (float16's range; first in sample {first}, up to "
            f"{float(np.abs(array).max()):g}); such inputs overflow in training and cannot be represented by "
            "INT8 ranges: normalise the data (e.g. scale to unit variance)",
            field=key,
        )


def _first_sample(mask: np.ndarray) -> int:
    return int(np.argwhere(mask.reshape(len(mask), -1).any(axis=1))[0, 0])


def _check_labels_nonneg(key: str, labels: np.ndarray, offset: int) -> None:
    if (labels < 0).any():
        first = int(np.argmax(labels < 0))
        raise DataError(
            f"{key} has negative labels (first: {labels[first]} at sample {offset + first}); labels are class "
            "indices >= 0",
            field=key,
        )


def check_labels(dataset: Dataset, num_classes: int) -> None:
    """Labels must index the model's outputs; called once the model's output size is known."""
    for key in Y_KEYS:
        labels = getattr(dataset, key)
        if labels is not None and int(labels.max()) >= num_classes:
            raise DataError(
                f"{key} has label {int(labels.max())}, but the model has {num_classes} outputs (classes 0..{num_classes - 1})",
                field=key,
            )
