"""What the labels ask of a model, and how a run scores it against them.

Labels are not always one class per sample: a segmentation model is scored per pixel
(N x H x W class indices, some pixels ignored), a regression model on float targets of any
shape, a multi-label model on multi-hot rows. :func:`infer_task` reads the kind from the
labels' dtype and rank alone (so the API can tell it from an upload's headers), and
``spec.task`` overrides it; each :class:`Task` holds its metric and label checks, so the
selection, the report and the caveats never branch on the kind. Numpy only; the losses
are in :mod:`quantlib.loop`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from quantlib.errors import SpecError
from quantlib.inputs import DataError
from quantlib.metrics import top1_accuracy, top1_agreement

TaskName = Literal["classification", "segmentation", "regression", "multilabel", "distillation"]
TASKS: tuple[TaskName, ...] = get_args(TaskName)
# ``spec.task``: a task, or auto (read from the labels)
TaskSetting = Literal["auto", "classification", "segmentation", "regression", "multilabel", "distillation"]
# label dtypes a dataset may hold: class indices, multi-hot rows, float targets
LABEL_DTYPES = ("int64", "bool", "uint8", "float32")
INTEGER_LABELS = ("int64", "bool", "uint8")


def miou(outputs: np.ndarray, labels: np.ndarray, ignore_index: int) -> float:
    """Mean intersection over union of the predicted classes (argmax over axis 1), over the classes
    that appear in the labels or the predictions; ``ignore_index`` pixels count for neither."""
    predicted = np.argmax(outputs, axis=1)
    valid = labels != ignore_index
    ious = []
    for cls in range(outputs.shape[1]):
        pred, true = (predicted == cls) & valid, (labels == cls) & valid
        union = int(np.count_nonzero(pred | true))
        if union:
            ious.append(np.count_nonzero(pred & true) / union)
    return float(np.mean(ious)) if ious else 1.0


def psnr_db(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Peak signal-to-noise ratio against the targets, their range as the peak; ``inf`` when equal."""
    targets = np.asarray(targets, dtype=np.float64)
    mse = float(np.mean((np.asarray(outputs, dtype=np.float64) - targets) ** 2))
    peak = float(targets.max() - targets.min()) or float(np.abs(targets).max()) or 1.0
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def f1_micro(outputs: np.ndarray, labels: np.ndarray) -> float:
    """F1 of every label decision together, an output above 0 (a logit: probability 0.5) meaning "on"."""
    predicted, true = outputs > 0, labels.astype(bool)
    tp = int(np.count_nonzero(predicted & true))
    wrong = int(np.count_nonzero(predicted ^ true))
    return 1.0 if tp + wrong == 0 else 2 * tp / (2 * tp + wrong)


def _decisions_agree(reference: np.ndarray, outputs: np.ndarray) -> float:
    return float(np.mean((reference > 0) == (outputs > 0)))


@dataclass(frozen=True)
class Task:
    """A kind of labels: its metric (higher is better) and how its agreement with FP32 is counted
    (None where outputs are no decisions, as a regression's)."""

    name: TaskName
    metric: str
    metric_label: str
    ignore_index: int = 255

    @property
    def labelled(self) -> bool:
        return self.name != "distillation"

    def score(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        return _SCORES[self.name](self, outputs, labels)

    def agreement(self, reference: np.ndarray, outputs: np.ndarray) -> float | None:
        if self.name == "regression":
            return None
        if self.name == "multilabel":
            return _decisions_agree(reference, outputs)
        return top1_agreement(reference, outputs)

    def check_labels(self, key: str, labels: np.ndarray, output_shape: tuple[int, ...]) -> None:
        """The labels must fit the model's outputs (``output_shape`` of one batch); :class:`DataError` else."""
        _CHECKS[self.name](self, key, labels, output_shape)


_SCORES: dict[str, Callable[[Task, np.ndarray, np.ndarray], float]] = {
    "classification": lambda _task, outputs, labels: top1_accuracy(outputs, labels),
    "segmentation": lambda task, outputs, labels: miou(outputs, labels, task.ignore_index),
    "regression": lambda _task, outputs, labels: psnr_db(outputs, labels),
    "multilabel": lambda _task, outputs, labels: f1_micro(outputs, labels),
}
_METRICS = {
    "classification": ("top1", "top-1"),
    "segmentation": ("miou", "mIoU"),
    "regression": ("psnr_db", "PSNR dB"),
    "multilabel": ("f1", "F1"),
    "distillation": ("sqnr_db", "SQNR dB"),
}


def _check_classes(task: Task, key: str, labels: np.ndarray, output_shape: tuple[int, ...]) -> None:
    if len(output_shape) < 2:
        raise DataError(f"{key} holds class indices, but the model's output has shape {output_shape}", field=key)
    classes = output_shape[1]
    if task.name == "segmentation" and tuple(output_shape[2:]) != labels.shape[1:]:
        raise DataError(
            f"{key} has dense labels of shape {labels.shape[1:]} per sample, but the model's outputs are "
            f"{output_shape[1:]} (classes x {' x '.join(map(str, labels.shape[1:]))} expected)",
            field=key,
        )
    kept = labels[labels != task.ignore_index] if task.name == "segmentation" else labels
    if kept.size and int(kept.max()) >= classes:
        ignored = f" (and {task.ignore_index}, ignored)" if task.name == "segmentation" else ""
        raise DataError(
            f"{key} has label {int(kept.max())}, but the model has {classes} outputs (classes 0..{classes - 1}"
            f"{ignored})",
            field=key,
        )


def _check_same_shape(task: Task, key: str, labels: np.ndarray, output_shape: tuple[int, ...]) -> None:
    if tuple(output_shape[1:]) != labels.shape[1:]:
        what = "multi-hot rows" if task.name == "multilabel" else "targets"
        raise DataError(
            f"{key} has {what} of shape {labels.shape[1:]} per sample, but the model's outputs are "
            f"{tuple(output_shape[1:])}",
            field=key,
        )
    if task.name == "multilabel" and not np.isin(labels, (0, 1)).all():
        raise DataError(f"{key} must be multi-hot (0 or 1 per label) for task multilabel", field=key)


_CHECKS: dict[str, Callable[[Task, str, np.ndarray, tuple[int, ...]], None]] = {
    "classification": _check_classes,
    "segmentation": _check_classes,
    "regression": _check_same_shape,
    "multilabel": _check_same_shape,
    "distillation": lambda *_: None,
}


def task_named(name: TaskName, ignore_index: int = 255) -> Task:
    metric, label = _METRICS[name]
    return Task(name, metric, label, ignore_index)


def labels_kind(labels: np.ndarray) -> TaskName:
    """The task the labels' dtype and rank say: int64 (N,) classes; int64 (N, ...) dense classes
    (segmentation, per-token classes); bool/uint8 (N, C) multi-hot; float32 targets (regression)."""
    if labels.dtype.name == "float32":
        return "regression"
    if labels.dtype.name in ("bool", "uint8"):
        return "multilabel"
    return "classification" if labels.ndim == 1 else "segmentation"


# label dtypes and ranks each task accepts, and what to do otherwise
_ACCEPTS: dict[str, tuple[Callable[[np.ndarray], bool], str]] = {
    "classification": (
        lambda y: y.dtype.name == "int64" and y.ndim == 1,
        "one int64 class index per sample, shape (N,)",
    ),
    "segmentation": (
        lambda y: y.dtype.name == "int64" and y.ndim >= 2,
        "int64 class indices per pixel or token, shape (N, H, W) or (N, L)",
    ),
    "regression": (lambda y: y.dtype.name == "float32", "float32 targets, shape (N, ...) like the outputs"),
    "multilabel": (lambda y: y.ndim == 2, "multi-hot rows, shape (N, labels), 0 or 1 (bool, uint8, int64, float32)"),
}


def infer_task(labels: np.ndarray | None, requested: str = "auto", ignore_index: int = 255) -> Task:
    """The run's task: ``requested`` (``spec.task``) if the labels fit it, else read from them."""
    if requested == "distillation" or (labels is None and requested == "auto"):
        return task_named("distillation")
    if labels is None:
        raise SpecError(
            f"task {requested} needs labels, but the data has no y_train; add them, or use task distillation "
            "(label-free, from the FP32 model's outputs)",
            field="task",
        )
    name: TaskName = labels_kind(labels) if requested == "auto" else requested  # type: ignore[assignment]
    accepts, wanted = _ACCEPTS[name]
    if not accepts(labels):
        raise SpecError(
            f"task {name} needs {wanted}; y_train is {labels.dtype.name} of shape {labels.shape}. Cast the labels, "
            f"or set spec.task to the kind they are ({labels_kind(labels)})",
            field="task",
        )
    return task_named(name, ignore_index)
