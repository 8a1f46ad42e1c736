"""Datasets that name each input of the model, matched to what the model declares."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from quantlib.data import DataError, check_inputs, validate_arrays
from quantlib.inputs import InputSpec
from quantlib.pt2archive import program_inputs
from quantlib.signature import model_inputs

BERT = [InputSpec("input_ids", "int64", (None, 16)), InputSpec("attention_mask", "bool", (None, 16))]


def _text(n: int = 4, split: str = "x_train") -> dict[str, np.ndarray]:
    return {f"{split}.input_ids": np.zeros((n, 16), np.int64), f"{split}.attention_mask": np.ones((n, 16), bool)}


def test_named_inputs_are_ordered_as_the_model_takes_them() -> None:
    arrays = {"x_train.attention_mask": np.ones((4, 16), bool), "x_train.input_ids": np.zeros((4, 16), np.int64)}
    bound = validate_arrays({**arrays, **_text(2, "x_eval")}).bound(BERT)
    assert bound.x_train.names == ("input_ids", "attention_mask")
    assert bound.x_eval is not None and bound.x_eval.names == ("input_ids", "attention_mask")


def test_a_lone_x_train_feeds_a_one_input_model_under_its_name() -> None:
    bound = validate_arrays({"x_train": np.zeros((4, 8), np.float32)}).bound([InputSpec("pixels", "float32")])
    assert bound.x_train.names == ("pixels",)


@pytest.mark.parametrize(
    ("arrays", "field", "words"),
    [
        ({"x_train": np.zeros((4, 16), np.int64)}, "x_train", "named x_train.input_ids, x_train.attention_mask"),
        ({"x_train.input_ids": np.zeros((4, 16), np.int64)}, "x_train.attention_mask", "missing"),
        ({**_text(), "x_train.token_type_ids": np.zeros((4, 16), np.int64)}, "x_train.token_type_ids", "no input"),
        (
            {**_text(), "x_train.input_ids": np.zeros((4, 16), np.float32)},
            "x_train.input_ids",
            "takes int64; cast it with x_train_input_ids.astype(np.int64)",
        ),
        ({**_text(), "x_train.attention_mask": np.ones((4, 8), bool)}, "x_train.attention_mask", "shape (N, 16)"),
    ],
    ids=["lone x_train", "missing", "unknown", "dtype", "shape"],
)
def test_inputs_that_do_not_fit_name_the_array(arrays: dict[str, np.ndarray], field: str, words: str) -> None:
    with pytest.raises(DataError) as info:
        check_inputs(arrays, BERT)
    assert info.value.field == field and words in info.value.message, info.value.message


@pytest.mark.parametrize(
    ("arrays", "field", "words"),
    [
        ({**_text(), "x_train": np.zeros((4, 16), np.float32)}, "x_train", "both alone and per input"),
        ({**_text(), "x_train.attention_mask": np.ones((3, 16), bool)}, "x_train.input_ids", "has 4 samples"),
        (
            {**_text(), **_text(2, "x_eval"), "x_eval.attention_mask": np.ones((2, 8), bool)},
            "x_eval.attention_mask",
            "(8,)",
        ),
        ({**_text(), "x_eval.input_ids": np.zeros((2, 16), np.int64)}, "x_eval.attention_mask", "the same inputs"),
        ({"x_train.bad-name": np.zeros((4, 2), np.float32)}, "x_train.bad-name", "x_train.<input name>"),
        ({"x_train.a": np.zeros((4, 2), np.float64)}, "x_train.a", "x_train_a.astype(np.float32)"),
        ({"x_train.a": np.array([[np.nan, 0]], np.float16)}, "x_train.a", "NaN"),
    ],
    ids=["alone and named", "counts", "eval shape", "eval lacks one", "key", "float64", "nan in float16"],
)
def test_dataset_structure_of_named_inputs(arrays: dict[str, np.ndarray], field: str, words: str) -> None:
    with pytest.raises(DataError) as info:
        validate_arrays(arrays)
    assert info.value.field == field and words in info.value.message, info.value.message


def test_optional_inputs_may_be_left_out_only_after_the_last_given() -> None:
    specs = [InputSpec("ids"), InputSpec("mask", optional=True), InputSpec("types", optional=True)]
    ids, types = np.zeros((2, 4), np.int64), np.zeros((2, 4), np.int64)
    assert validate_arrays({"x_train.ids": ids}).bound(specs).x_train.names == ("ids",)
    with pytest.raises(DataError) as info:
        validate_arrays({"x_train.ids": ids, "x_train.types": types}).bound(specs)
    assert info.value.field == "x_train.mask" and "by position" in info.value.message


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = nn.Embedding(10, 4), nn.Linear(4, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids) * attention_mask.unsqueeze(-1).float()).mean(1)


def test_the_api_reads_the_same_inputs_from_the_archive_as_torch_from_the_program() -> None:
    batch = torch.export.Dim("batch")
    example = (torch.zeros(2, 16, dtype=torch.long), torch.ones(2, 16, dtype=torch.bool))
    program = torch.export.export(_TwoInputs(), example, dynamic_shapes=({0: batch}, {0: batch}))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    from_archive = program_inputs(zipfile.ZipFile(buffer))
    assert from_archive == model_inputs(program) == BERT
    assert program_inputs(zipfile.ZipFile(buffer), max_bytes=10) is None  # too large to read: the worker checks
    assert [spec.name for spec in model_inputs(_TwoInputs())] == ["input_ids", "attention_mask"]


def test_a_graph_the_api_cannot_read_leaves_the_inputs_to_the_worker() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/models/model.json", '{"graph_module": {"graph": []}}')
    assert program_inputs(zipfile.ZipFile(buffer)) is None


def test_a_lone_x_train_is_named_as_given_in_errors() -> None:
    with pytest.raises(DataError) as info:
        check_inputs({"x_train": np.zeros((4, 8), np.float64)}, [InputSpec("pixels", "float32", (None, 8))])
    assert info.value.field == "x_train" and "cast it with x_train.astype(np.float32)" in info.value.message
