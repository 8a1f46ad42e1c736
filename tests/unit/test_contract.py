"""The wire contract names every failure code the library and the workers can record."""

from __future__ import annotations

import ast
import importlib
import json
import math
import re
from pathlib import Path

import numpy as np

from quantlib.config import QUANTIZABLE_TYPES
from quantlib.errors import QuantlibError
from service.contract import Accuracy, FailureCode, FineTune, Job, JobState

ROOT = Path(__file__).parents[2]
# where quantlib defines its input errors
ERROR_MODULES = ("quantlib.config.errors", "quantlib.data", "quantlib.loop", "quantlib.pt2archive")


def _subclasses(base: type) -> list[type]:
    found = []
    for cls in base.__subclasses__():
        found += [cls, *_subclasses(cls)]
    return found


def test_every_quantlib_error_code_is_a_failure_code() -> None:
    for module in ERROR_MODULES:  # the subclasses exist once their modules are imported
        importlib.import_module(module)
    codes = {cls.code for cls in [QuantlibError, *_subclasses(QuantlibError)]}
    assert {"BAD_CONFIG", "BAD_DATA", "BAD_MODEL", "DIVERGED"} <= codes
    assert codes <= set(FailureCode)


def test_no_failure_code_is_spelled_out_as_a_string_in_the_workers() -> None:
    """Workers name codes through the enum, so a typo cannot record a code the contract lacks."""
    strings = {
        node.value
        for path in (ROOT / "workers").glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert not strings & set(FailureCode)


def test_a_job_is_done_exactly_in_the_terminal_states() -> None:
    assert {state for state in JobState if state.terminal} == {"SUCCEEDED", "FAILED", "CANCELLED"}
    schema = Job.model_json_schema()
    assert "eta_s" in schema["$defs"]["Progress"]["properties"]


def test_the_supported_layer_types_are_one_list() -> None:
    """The config schema names (torch-free), the layers quantlib wraps and those it lifts from a graph agree."""
    from torch import nn

    from quantlib.graph.exported import LIFTABLE
    from quantlib.layers import SUPPORTED

    assert {layer.__name__ for layer in SUPPORTED} | {nn.Embedding.__name__} == set(QUANTIZABLE_TYPES)
    # aten's op for each type: Conv2d -> conv2d, ConvTranspose1d -> conv_transpose1d, Linear -> linear
    # (the embedding is lifted on its own: its table is its first argument, not its second)
    assert set(LIFTABLE) | {"embedding"} == {
        re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() for name in QUANTIZABLE_TYPES
    }


def test_an_infinite_sqnr_travels_as_the_string_report_json_writes() -> None:
    exact = Accuracy(top1=None, agreement=1.0, sqnr_db=math.inf)
    assert exact.model_dump(mode="json")["sqnr_db"] == "inf"
    assert Accuracy.model_validate_json(exact.model_dump_json()) == exact
    assert Accuracy.model_validate({"top1": 0.5, "agreement": 0.5, "sqnr_db": "-inf"}).sqnr_db == -math.inf
    assert Accuracy(top1=0.5, agreement=0.5, sqnr_db=31.5).model_dump(mode="json")["sqnr_db"] == 31.5
    schema = Job.model_json_schema(mode="serialization")["$defs"]["Accuracy"]["properties"]["sqnr_db"]
    assert {"type": "string", "enum": ["inf", "-inf", "nan"]} in schema["anyOf"]


def test_the_fine_tune_record_is_the_one_the_library_writes() -> None:
    """report.json's ``fine_tune`` (quantlib.selection) reads as the contract's FineTune, values and all."""
    from typing import get_args

    from quantlib.selection import Kept, Selection

    assert set(get_args(FineTune.model_fields["kept"].annotation)) == set(get_args(Kept))
    for kept in get_args(Kept):
        written = Selection(kept, "sqnr_db", math.inf, 12.5, np.zeros((1, 1))).to_dict()
        assert FineTune.model_validate(json.loads(json.dumps({**written, "calibrated": "inf"}))).kept == kept
