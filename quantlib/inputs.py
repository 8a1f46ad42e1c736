"""A model's inputs as a dataset holds them, and how they are matched to what the model takes.

Real models take more than one float tensor: token ids (int64) and an attention mask
(bool) for BERT, an image and a scale for others. A dataset names each input of the
program (``x_train.input_ids``, ``x_train.attention_mask``); a lone ``x_train`` feeds a
one-input model. :class:`Inputs` carries the arrays of one split in the order the model
takes them; :func:`bind` checks them against the model's :class:`InputSpec` list (names,
dtypes, the fixed dimensions of each shape) and names every mismatch by its array.
Numpy only: the API checks uploads with this module and never imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantlib.errors import QuantlibError

# the name of the one input of a dataset that gives a plain ``x_train``
UNNAMED = ""
INPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# input dtypes a dataset may hold: what models take, in numpy's names
INPUT_DTYPES = ("float32", "float16", "int64", "int32", "uint8", "int8", "bool")


class DataError(QuantlibError):
    """A dataset that cannot be used; ``field`` names the array (``y_train``) or ``data``."""

    code = "BAD_DATA"


def array_key(split: str, name: str) -> str:
    """The dataset's key of input ``name`` in ``split`` (``x_train``): ``x_train.input_ids``."""
    return split if name == UNNAMED else f"{split}.{name}"


def split_key(key: str) -> tuple[str, str]:
    """``x_train.input_ids`` -> (``x_train``, ``input_ids``); ``x_train`` -> (``x_train``, UNNAMED)."""
    split, _, name = key.partition(".")
    return split, name


@dataclass(frozen=True)
class Inputs:
    """The arrays of one split, input name -> N x sample shape, in the order the model takes them."""

    arrays: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, rows: slice | np.ndarray) -> Inputs:
        return Inputs({name: array[rows] for name, array in self.arrays.items()})

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.arrays.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.arrays)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Name -> dtype and sample shape, as the report lists them."""
        return {
            name: {"dtype": array.dtype.name, "shape": list(array.shape[1:])} for name, array in self.arrays.items()
        }


@dataclass(frozen=True)
class InputSpec:
    """One input as the model declares it: ``dtype`` in numpy's names (or torch's, e.g. ``bfloat16``) and ``shape``
    with None for dimensions the program leaves free (the batch); None where the model does not say.
    ``optional`` inputs have a default in the model's signature and may be left out of the data."""

    name: str
    dtype: str | None = None
    shape: tuple[int | None, ...] | None = None
    optional: bool = False

    def describe(self) -> str:
        dtype = self.dtype or "any dtype"
        if self.shape is None:
            return f"{self.name} ({dtype})"
        dims = ", ".join(["N", *("?" if dim is None else str(dim) for dim in self.shape[1:])])
        return f"{self.name} ({dtype}, shape ({dims}))"


def bind(split: str, inputs: Mapping[str, np.ndarray], specs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    """``inputs`` of ``split`` named and ordered as the model takes them, each checked against its spec.

    A lone unnamed array feeds a one-input model. Inputs go to the model by position, so an
    optional input may be left out only after the last one given.
    """
    keys = {name: array_key(split, name) for name in inputs}  # what the user called each array
    if list(inputs) == [UNNAMED]:
        if len([spec for spec in specs if not spec.optional]) > 1 or not specs:
            raise DataError(_name_them(split, specs), field=split)
        inputs, keys = {specs[0].name: inputs[UNNAMED]}, {specs[0].name: split}
    by_name = {spec.name: spec for spec in specs}
    for name in inputs:
        if name not in by_name:
            raise DataError(
                f"{array_key(split, name)} names no input of the model; it takes {_listed(specs)}",
                field=array_key(split, name),
            )
    last_given = max(i for i, spec in enumerate(specs) if spec.name in inputs)
    bound = {}
    for index, spec in enumerate(specs):
        key = keys.get(spec.name, array_key(split, spec.name))
        if spec.name not in inputs:
            if spec.optional and index > last_given:
                continue
            after = "" if not spec.optional else " (the model takes its inputs by position, and a later one is given)"
            raise DataError(f"{key} is missing: the model's input {spec.describe()}{after}", field=key)
        bound[spec.name] = _checked(key, inputs[spec.name], spec)
    return bound


def _checked(key: str, array: np.ndarray, spec: InputSpec) -> np.ndarray:
    if spec.dtype is not None and spec.dtype not in INPUT_DTYPES:
        raise DataError(
            f"the model's input {spec.describe()} takes {spec.dtype}, which a dataset cannot hold (allowed: "
            f"{', '.join(INPUT_DTYPES)}); export the model with a float32 input and cast inside its forward",
            field=key,
        )
    if spec.dtype is not None and array.dtype.name != spec.dtype:
        raise DataError(
            f"{key} has dtype {array.dtype.name}, but the model's input {spec.describe()} takes {spec.dtype}; "
            f"cast it with {key.replace('.', '_')}.astype(np.{spec.dtype})",
            field=key,
        )
    if spec.shape is not None:
        # the batch axis is the probe's to check: a fixed one deserves its own message
        fits = len(spec.shape) == array.ndim and all(
            want is None or want == have for want, have in zip(spec.shape[1:], array.shape[1:], strict=True)
        )
        if not fits:
            raise DataError(
                f"{key} has shape {tuple(array.shape)}, but the model's input {spec.describe()} "
                "(N samples, ? any size) does not take it",
                field=key,
            )
    return array


def _listed(specs: Sequence[InputSpec]) -> str:
    return ", ".join(spec.describe() for spec in specs) or "no tensor input"


def _name_them(split: str, specs: Sequence[InputSpec]) -> str:
    if not specs:
        return f"the model takes no tensor input, so {split} cannot feed it"
    keys = ", ".join(array_key(split, spec.name) for spec in specs if not spec.optional)
    return f"the model takes {len(specs)} inputs, {_listed(specs)}: give one array each in the data, named {keys}"
