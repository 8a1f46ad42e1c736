"""The dataset format of a QAT run, and the checks that make a bad upload a clear error.

A dataset is an ``.npz`` with the model's inputs (``x_train`` for a one-input model, or
one array per named input, ``x_train.input_ids``, ``x_train.attention_mask``; dtypes in
:data:`quantlib.inputs.INPUT_DTYPES`), optional ``y_train`` (labels of any task,
:mod:`quantlib.tasks`: class indices, dense class maps, multi-hot rows, float targets) and optional
``x_eval``/``y_eval`` the same way. Numpy only: the API server validates uploads with
this module and never imports torch. Archives are opened with ``allow_pickle=False``, so
an upload cannot run code.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np

from quantlib.images import Preprocess, is_image_archive, load_image_dataset
from quantlib.inputs import (
    INPUT_DTYPES,
    INPUT_NAME,
    UNNAMED,
    DataError,
    Inputs,
    InputSpec,
    array_key,
    bind,
    split_key,
)
from quantlib.mapped import map_npz
from quantlib.tasks import LABEL_DTYPES, Task

__all__ = [
    "DataError",
    "Dataset",
    "Inputs",
    "check_inputs",
    "check_labels",
    "check_structure",
    "check_values",
    "load_dataset",
]

X_KEYS = ("x_train", "x_eval")
Y_KEYS = ("y_train", "y_eval")
ALLOWED_KEYS = ("x_train", "y_train", "x_eval", "y_eval")
# the largest input magnitude accepted: float16's largest finite value
MAX_INPUT = 65504.0
# the values of an array are checked this many bytes of samples at a time (a mapped array is never read whole)
CHECK_BYTES = 64 << 20


@dataclass(frozen=True)
class Dataset:
    """Validated arrays; labels are present for every split or for none."""

    x_train: Inputs
    y_train: np.ndarray | None = None
    x_eval: Inputs | None = None
    y_eval: np.ndarray | None = None
    # class names by label (an image archive's folders or labels.csv); None where the labels are bare numbers
    classes: tuple[str, ...] | None = None

    @property
    def has_labels(self) -> bool:
        return self.y_train is not None

    def eval_split(self) -> tuple[Inputs, np.ndarray | None, str]:
        """The inputs to score on and their source: ``x_eval`` if given, else ``x_train``."""
        if self.x_eval is not None:
            return self.x_eval, self.y_eval, "x_eval"
        return self.x_train, self.y_train, "x_train"

    def bound(self, specs: Sequence[InputSpec]) -> Dataset:
        """The dataset with its inputs named and ordered as a model with ``specs`` takes them."""
        x_eval = None if self.x_eval is None else Inputs(bind("x_eval", self.x_eval.arrays, specs))
        return replace(self, x_train=Inputs(bind("x_train", self.x_train.arrays, specs)), x_eval=x_eval)


def load_dataset(
    source: str | os.PathLike[str] | BinaryIO, preprocess: Preprocess | None = None, scratch: Path | None = None
) -> Dataset:
    """Open and validate a dataset (a path or a binary file object): an ``.npz``, or a ``.zip``/``.tar``
    of images (:mod:`quantlib.images`) made into arrays by ``preprocess``.

    With a ``scratch`` folder, a dataset file stays on disk: an ``.npz``'s arrays are memory-mapped
    (:mod:`quantlib.mapped`) and decoded images are written to a mapped file there, so memory stays
    bounded however large the dataset; without one, the arrays are read into memory."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        with open(source, "rb") as stream:
            if is_image_archive(stream):
                return _images(stream, preprocess, scratch)
        if scratch is not None:
            arrays = map_npz(Path(source), scratch)
            return validate_arrays({key: arrays[key] for key in _checked_keys(list(arrays))})
    elif not isinstance(source, (str, os.PathLike)) and is_image_archive(source):
        return _images(source, preprocess, scratch)
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


def _images(stream: BinaryIO, preprocess: Preprocess | None, scratch: Path | None) -> Dataset:
    arrays, classes = load_image_dataset(stream, preprocess or Preprocess(), scratch)
    return replace(validate_arrays(arrays), classes=tuple(classes))


def _checked_keys(keys: list[str]) -> list[str]:
    for key in keys:
        split, name = split_key(key)
        if split not in ALLOWED_KEYS or (name and (split in Y_KEYS or not INPUT_NAME.match(name))):
            raise DataError(
                f"unknown array {key!r} in the data; allowed: {', '.join(ALLOWED_KEYS)}, or x_train.<input name> "
                "and x_eval.<input name> for each input of a model that takes several",
                field=key,
            )
    return keys


def _read(archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:  # object arrays need pickle, which is refused
        raise DataError(f"{key} cannot be read without pickle ({exc}); store plain numeric arrays", field=key) from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{key} is damaged in the archive: {exc}", field=key) from exc


def validate_arrays(arrays: Mapping[str, np.ndarray]) -> Dataset:
    """Check names, dtypes, shapes and values; the first problem raises :class:`DataError`."""
    check_structure(arrays)
    for key, array in arrays.items():
        rows = max(1, CHECK_BYTES // max(1, array[:1].nbytes))
        for start in range(0, len(array), rows):
            check_values(key, array[start : start + rows], start)
    splits = _inputs_by_split(arrays)
    x_eval = splits.get("x_eval")
    return Dataset(
        x_train=Inputs(splits["x_train"]),
        y_train=arrays.get("y_train"),
        x_eval=None if x_eval is None else Inputs(x_eval),
        y_eval=arrays.get("y_eval"),
    )


def _inputs_by_split(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    splits: dict[str, dict[str, np.ndarray]] = {}
    for key, array in arrays.items():
        split, name = split_key(key)
        if split in X_KEYS:
            splits.setdefault(split, {})[name] = array
    return splits


def check_inputs(arrays: Mapping[str, np.ndarray], specs: Sequence[InputSpec]) -> None:
    """Every split's inputs against the model's (names, dtypes, shapes); reads no element, so the
    API runs it on the stand-ins :func:`check_structure` checked."""
    for split, inputs in _inputs_by_split(arrays).items():
        bind(split, inputs, specs)


def check_structure(arrays: Mapping[str, np.ndarray]) -> None:
    """Names, dtypes, shapes and how the arrays fit together; no element is read.

    So it can run on zero-memory stand-ins of the right shape (``np.broadcast_to``): the
    API checks an upload's structure from its ``.npy`` headers, then its values in chunks.
    """
    _checked_keys(list(arrays))
    splits = _inputs_by_split(arrays)
    if "x_train" not in splits:
        raise DataError(
            "the data has no x_train array (the model's input, N x ...; or x_train.<name> per input); it is required",
            field="x_train",
        )
    for key, array in arrays.items():
        _check_dtype(key, array)
        _check_shape(key, array)
    for split, inputs in splits.items():
        _check_split(split, inputs, splits["x_train"])
    for x_key, y_key in zip(X_KEYS, Y_KEYS, strict=True):
        x, y = splits.get(x_key), arrays.get(y_key)
        if y is not None and x is None:
            raise DataError(f"{y_key} is given without {x_key}", field=y_key)
        if x is not None and y is not None and len(y) != _samples(x):
            raise DataError(f"{y_key} has {len(y)} labels for {_samples(x)} samples in {x_key}", field=y_key)
    y_train, y_eval = arrays.get("y_train"), arrays.get("y_eval")
    if (
        y_train is not None
        and y_eval is not None
        and (y_eval.dtype != y_train.dtype or y_eval.shape[1:] != y_train.shape[1:])
    ):
        raise DataError(
            f"y_eval is {y_eval.dtype} with per-sample shape {y_eval.shape[1:]}, but y_train is {y_train.dtype} "
            f"with {y_train.shape[1:]}: give both splits the same kind of labels",
            field="y_eval",
        )
    labelled = {key: key in arrays for key in Y_KEYS if key.replace("y_", "x_") in splits}
    if len(set(labelled.values())) > 1:
        missing = next(key for key, present in labelled.items() if not present)
        raise DataError(
            f"{missing} is missing: give labels for every split (cross-entropy, top-1) or for none "
            "(distillation from the FP32 model)",
            field=missing,
        )


def _samples(inputs: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(inputs.values())))


def _check_split(split: str, inputs: Mapping[str, np.ndarray], train: Mapping[str, np.ndarray]) -> None:
    """One split's inputs: all named or one unnamed, one sample count, the same inputs as x_train."""
    if UNNAMED in inputs and len(inputs) > 1:
        named = next(name for name in inputs if name != UNNAMED)
        raise DataError(
            f"{split} is given both alone and per input ({array_key(split, named)}); give a lone {split} for a "
            "one-input model, or one named array per input",
            field=split,
        )
    counts = {name: len(array) for name, array in inputs.items()}
    if len(set(counts.values())) > 1:
        first, other = min(counts, key=counts.__getitem__), max(counts, key=counts.__getitem__)
        n_first, n_other = counts[first], counts[other]
        raise DataError(
            f"{array_key(split, other)} has {n_other} samples, but {array_key(split, first)} has {n_first}; "
            "every input needs one row per sample",
            field=array_key(split, other),
        )
    if set(inputs) != set(train):
        missing = sorted(set(train) - set(inputs)) or sorted(set(inputs) - set(train))
        raise DataError(
            f"{split} has inputs {sorted(inputs)}, x_train has {sorted(train)}: give the same inputs in every split",
            field=array_key(split, missing[0]),
        )
    for name, array in inputs.items():
        if array.shape[1:] != train[name].shape[1:]:
            key = array_key(split, name)
            raise DataError(
                f"{key} samples have shape {array.shape[1:]}, but {array_key('x_train', name)} samples have "
                f"{train[name].shape[1:]}",
                field=key,
            )


def check_values(key: str, samples: np.ndarray, first_sample: int = 0) -> None:
    """The values of ``samples``, whole samples of array ``key`` starting at ``first_sample``.

    Float inputs must be finite and within float16's range, labels non-negative; called on a
    whole array or on consecutive chunks of one, so memory stays bounded by the chunk.
    Integer and bool inputs (token ids, masks) are the model's to interpret.
    """
    if np.issubdtype(samples.dtype, np.floating):
        _check_finite(key, samples, first_sample)
    elif split_key(key)[0] in Y_KEYS:
        _check_labels_nonneg(key, samples, first_sample)


def _check_dtype(key: str, array: np.ndarray) -> None:
    if key in Y_KEYS:
        if array.dtype.name not in LABEL_DTYPES:
            cast = "float32" if np.issubdtype(array.dtype, np.floating) else "int64"
            raise DataError(
                f"{key} has dtype {array.dtype}; labels are int64 class indices, bool or uint8 multi-hot rows, or "
                f"float32 targets: cast it with {key}.astype(np.{cast})",
                field=key,
            )
    elif array.dtype.name not in INPUT_DTYPES:
        hint = (
            f"cast it with {key.replace('.', '_')}.astype(np.float32)"
            if np.issubdtype(array.dtype, np.floating)
            else "cast it to the dtype the model's input takes"
        )
        raise DataError(
            f"{key} has dtype {array.dtype}, which no model input takes here (allowed: {', '.join(INPUT_DTYPES)}); "
            f"{hint}",
            field=key,
        )


def _check_shape(key: str, array: np.ndarray) -> None:
    if key in Y_KEYS and array.ndim < 1:
        raise DataError(f"{key} must hold one label (or label array) per sample, shape (N, ...)", field=key)
    if key not in Y_KEYS and array.ndim < 2:
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
    negative = labels < 0
    if negative.any():
        first = _first_sample(negative)
        raise DataError(
            f"{key} has negative labels (first: {labels[negative].flat[0]} in sample {offset + first}); labels are "
            "class indices >= 0 (mark pixels to ignore with spec.ignore_index, 255 by default)",
            field=key,
        )


def check_labels(dataset: Dataset, task: Task, output_shape: tuple[int, ...]) -> None:
    """Every split's labels must fit the model's outputs as ``task`` reads them; called once the
    model's output shape is known."""
    if not task.labelled:
        return
    for key in Y_KEYS:
        labels = getattr(dataset, key)
        if labels is not None:
            task.check_labels(key, labels, output_shape)
