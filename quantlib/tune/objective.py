"""The number the tuner drives down: how far the quantized outputs fall from FP32's."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from quantlib.metrics import sqnr_db, top1_agreement
from quantlib.tasks import Task, task_named

CLASSIFICATION = task_named("classification")


@dataclass(frozen=True)
class Objective:
    """The target metric on fixed eval samples, against the FP32 outputs on them.

    ``top1``: the drop is FP32's score minus the quantized model's in the task's metric
    (top-1, mIoU or F1, a fraction; :mod:`quantlib.tasks`), or agreement with FP32 when
    there are no labels. ``sqnr``: the drop is the output noise power
    relative to the signal, 10^(-SQNR/10), which is 0 for FP32 and, unlike dB, adds
    up across layers, so sensitivities can be compared.
    """

    metric: str
    reference: np.ndarray
    labels: np.ndarray | None
    task: Task = CLASSIFICATION

    def subset(self, n: int) -> Objective:
        labels = None if self.labels is None else self.labels[:n]
        return Objective(self.metric, self.reference[:n], labels, self.task)

    def value(self, outputs: np.ndarray) -> float:
        """The metric itself: the task's score (or agreement without labels), or the output SQNR in dB."""
        if self.metric == "sqnr":
            return sqnr_db(self.reference, outputs)
        if self.labels is None:
            return top1_agreement(self.reference, outputs)
        return self.task.score(outputs, self.labels)

    def drop(self, outputs: np.ndarray) -> float:
        if self.metric == "sqnr":
            ref = self.reference.astype(np.float64)
            signal = float(np.sum(ref**2))
            noise = float(np.sum((ref - outputs.astype(np.float64)) ** 2))
            return noise / signal if signal > 0 else math.inf
        if self.labels is None:
            return 1.0 - top1_agreement(self.reference, outputs)
        return self.task.score(self.reference, self.labels) - self.task.score(outputs, self.labels)

    def describe(self, drop: float) -> str:
        """A drop in words people read: top-1 points, or the noise with its SQNR."""
        if self.metric == "sqnr":
            db = "inf" if drop <= 0 else f"{-10 * math.log10(drop):.1f}"
            return f"{drop:.4g} (output SQNR {db} dB)"
        return f"{100 * drop:.2f} {self.task.metric_label} points"
