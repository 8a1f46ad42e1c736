"""Run settings are checked where they are given, with a BAD_SPEC error naming the setting."""

from __future__ import annotations

import pytest

from quantlib.errors import SpecError
from quantlib.spec import QATSpec, parse_spec
from quantlib.tasks import TASKS


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"epochs": -1}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"loss": "hinge"}, "loss"),
        ({"device": "tpu"}, "device"),
        ({"epoch": 3}, "epoch"),
        ({"accuracy": {"max_drop": -0.01}}, "accuracy.max_drop"),
        ({"accuracy": {"max_drop": 2}}, "accuracy.max_drop"),
        ({"accuracy": {"metric": "top5"}}, "accuracy.metric"),
        ({"accuracy": {"max_trials": 0}}, "accuracy.max_trials"),
        ({"accuracy": {"weight_bits_budget": 3.5}}, "accuracy.weight_bits_budget"),
        ({"accuracy": {"max_dorp": 0.01}}, "accuracy.max_dorp"),
        ({"accuracy": 0.01}, "accuracy"),
        # strict JSON types: a bool or a string is not a number, 2.0 is not a count
        ({"epochs": True}, "epochs"),
        ({"epochs": "1"}, "epochs"),
        ({"epochs": 2.0}, "epochs"),
        ({"lr": True}, "lr"),
        ({"lr": "1e-5"}, "lr"),
        ({"freeze_bn": 1}, "freeze_bn"),
        ({"accuracy": {"max_trials": True}}, "accuracy.max_trials"),
        # values a run can only fail on, or never finish with
        ({"lr": 1e300}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"epochs": 10**9}, "epochs"),
        ({"batch_size": 2**40}, "batch_size"),
        ({"accuracy": {"max_drop": float("nan")}}, "accuracy.max_drop"),
    ],
)
def test_bad_settings_name_the_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(values)
    assert info.value.code == "BAD_SPEC" and info.value.field == field


def test_defaults_and_loss_resolution() -> None:
    spec = parse_spec({"device": "cuda:1", "epochs": 0})
    assert spec.device == "cuda:1" and spec.epochs == 0 and spec.freeze_bn
    assert parse_spec({}).device == "auto", "a GPU worker's jobs use its GPU unless told otherwise"
    with pytest.raises(SpecError, match="use auto, cpu, cuda or cuda:N"):
        parse_spec({"device": "gpu"})
    losses = {task: QATSpec().resolved_loss(task) for task in TASKS}
    assert losses == {
        "classification": "ce",
        "segmentation": "ce",
        "regression": "mse_labels",
        "multilabel": "bce",
        "distillation": "mse",
    }
    assert QATSpec(loss="kl").resolved_loss("classification") == "kl"
    assert QATSpec(loss="ce").resolved_loss("segmentation") == "ce"
    for task in ("distillation", "regression"):
        with pytest.raises(SpecError) as info:
            QATSpec(loss="ce").resolved_loss(task)  # type: ignore[arg-type]
        assert info.value.field == "loss" and f"task is {task}" in info.value.message


def test_accuracy_target_defaults_and_nested_messages() -> None:
    spec = parse_spec({"accuracy": {"max_drop": 0.02}})
    assert spec.accuracy is not None and spec.accuracy.metric == "top1" and spec.accuracy.max_trials >= 1
    assert spec.accuracy.weight_bits_budget is None and QATSpec().accuracy is None
    with pytest.raises(SpecError) as info:
        parse_spec({"accuracy": {"max_dorp": 0.01}})
    assert "max_drop" in info.value.message and "max_trials" in info.value.message


def test_an_int_is_a_valid_learning_rate() -> None:
    assert parse_spec({"lr": 1}).lr == 1.0
