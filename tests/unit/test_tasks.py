"""Labels of every kind: classes, dense class maps, float targets, multi-hot rows; the loss,
the metric, the checks and the report follow the task read from them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from quantlib.data import DataError, validate_arrays
from quantlib.errors import SpecError
from quantlib.loop import loss_function
from quantlib.outputs import OUTPUT_FILES
from quantlib.run import run_qat
from quantlib.spec import QATSpec
from quantlib.tasks import f1_micro, infer_task, miou, psnr_db


def test_metrics_by_hand() -> None:
    # two pixels per sample, 3 classes; predicted: [0, 1], [2, 2]; the label 255 is ignored
    outputs = np.zeros((2, 3, 2))
    outputs[0, 0, 0] = outputs[0, 1, 1] = outputs[1, 2, 0] = outputs[1, 2, 1] = 1
    labels = np.array([[0, 2], [2, 255]])
    # class 0: 1/1; class 1: 0/2 (predicted once, never true); class 2: 1/2 (true twice, predicted at one)
    assert miou(outputs, labels, 255) == pytest.approx((1 + 0 + 0.5) / 3)
    targets = np.array([[0.0, 2.0]])
    assert psnr_db(np.array([[0.0, 1.0]]), targets) == pytest.approx(10 * math.log10(4 / 0.5))
    assert psnr_db(targets, targets) == math.inf
    # decisions: logit > 0 is on; tp 1, fp 1, fn 1
    assert f1_micro(np.array([[1.0, 1.0, -1.0]]), np.array([[1, 0, 1]])) == pytest.approx(2 / 4)


@pytest.mark.parametrize(
    ("labels", "task", "metric"),
    [
        (np.zeros(4, np.int64), "classification", "top1"),
        (np.zeros((4, 8, 8), np.int64), "segmentation", "miou"),
        (np.zeros((4, 16), np.int64), "segmentation", "miou"),  # a class per token
        (np.zeros((4, 5), bool), "multilabel", "f1"),
        (np.zeros((4, 5), np.uint8), "multilabel", "f1"),
        (np.zeros((4, 3), np.float32), "regression", "psnr_db"),
        (None, "distillation", "sqnr_db"),
    ],
)
def test_the_task_is_read_from_the_labels(labels: np.ndarray | None, task: str, metric: str) -> None:
    inferred = infer_task(labels)
    assert (inferred.name, inferred.metric) == (task, metric)


def test_a_requested_task_must_fit_the_labels() -> None:
    assert infer_task(np.zeros((4, 5), np.int64), "multilabel").name == "multilabel"
    assert infer_task(np.zeros((4, 5), np.float32), "multilabel").name == "multilabel"
    assert infer_task(np.zeros(4, np.int64), "distillation").name == "distillation"
    for labels, requested, words in [
        (np.zeros(4, np.int64), "regression", "float32 targets"),
        (np.zeros((4, 5), np.int64), "classification", "shape (N,)"),
        (None, "segmentation", "needs labels"),
    ]:
        with pytest.raises(SpecError) as info:
            infer_task(labels, requested)
        assert info.value.field == "task" and words in info.value.message


class _Segmenter(nn.Module):
    """4 classes per pixel of an 8 x 8 image."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _segmentation(n: int = 96) -> dict[str, np.ndarray]:
    """A pixel's class is its largest channel (0-2), or 3 where every channel is negative."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3, 8, 8)).astype(np.float32)
    y = np.where(x.max(axis=1) < 0, 3, x.argmax(axis=1)).astype(np.int64)
    y[:, 0, :] = 255  # an unlabelled row of pixels
    return {"x_train": x[:64], "y_train": y[:64], "x_eval": x[64:], "y_eval": y[64:]}


def test_segmentation_trains_on_pixels_and_reports_miou(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _Segmenter().eval()
    report = run_qat(model, validate_arrays(_segmentation()), tmp_path, spec=QATSpec(epochs=2, lr=1e-2))
    assert (report.task.name, report.loss) == ("segmentation", "ce")
    for row in report.accuracy.values():
        assert row.metric is not None and 0 <= row.metric <= 1 and row.top1 is None and row.agreement is not None
    assert report.accuracy["int8_onnxruntime"].metric > report.accuracy["fp32"].metric - 0.1
    assert report.selection is not None and report.selection.metric == "miou"
    saved = json.loads((tmp_path / OUTPUT_FILES["report"]).read_text())
    assert saved["task"] == {"name": "segmentation", "metric": "miou", "label": "mIoU"}
    assert "mIoU %" in (tmp_path / OUTPUT_FILES["report_html"]).read_text()


def test_regression_and_multilabel_train_toward_their_targets(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 8)).astype(np.float32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3)).eval()
    targets = model(torch.from_numpy(x)).detach().numpy() + 0.05 * rng.standard_normal((96, 3)).astype(np.float32)
    regression = {"x_train": x[:64], "y_train": targets[:64], "x_eval": x[64:], "y_eval": targets[64:]}
    report = run_qat(model, validate_arrays(regression), tmp_path / "regression", spec=QATSpec(epochs=1))
    assert (report.task.name, report.loss) == ("regression", "mse_labels")
    deployed = report.accuracy["int8_onnxruntime"]
    assert deployed.agreement is None and deployed.metric is not None and deployed.metric > 15  # dB PSNR

    multi_hot = targets > 0
    multilabel = {"x_train": x[:64], "y_train": multi_hot[:64], "x_eval": x[64:], "y_eval": multi_hot[64:]}
    report = run_qat(model, validate_arrays(multilabel), tmp_path / "multilabel", spec=QATSpec(epochs=1))
    assert (report.task.name, report.loss) == ("multilabel", "bce")
    assert report.accuracy["fp32"].metric is not None and report.accuracy["fp32"].metric > 0.8  # F1
    assert report.accuracy["int8_onnxruntime"].agreement is not None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d.update(y_train=d["y_train"][:, :4], y_eval=d["y_eval"][:, :4]), "dense labels of shape (4, 8)"),
        (lambda d: d["y_train"].__setitem__((0, 1, 1), 7), "label 7, but the model has 4 outputs"),
    ],
    ids=["map size", "class out of range"],
)
def test_dense_labels_must_fit_the_outputs(tmp_path: Path, change, words: str) -> None:
    data = _segmentation()
    change(data)
    with pytest.raises(DataError) as info:
        run_qat(_Segmenter().eval(), validate_arrays(data), tmp_path, spec=QATSpec(epochs=0))
    assert info.value.field == "y_train" and words in info.value.message, info.value.message


def test_class_255_is_a_class_unless_the_labels_are_dense() -> None:
    """ignore_index (255) leaves pixels out of a segmentation loss only: ImageNet's class 255 trains.
    A batch of ignored pixels only has loss 0, not NaN (which would read as a diverged run)."""
    outputs = torch.zeros(2, 300, requires_grad=True)
    labels = torch.tensor([255, 255])
    loss_function("ce")(outputs, labels).backward()
    assert outputs.grad is not None and outputs.grad[:, 255].abs().sum() > 0
    dense = torch.zeros(1, 300, 2, 2, requires_grad=True)
    ignored_only = loss_function("ce", 255)(dense, torch.full((1, 2, 2), 255))
    ignored_only.backward()
    assert ignored_only.item() == 0 and dense.grad is not None and dense.grad.abs().sum() == 0
