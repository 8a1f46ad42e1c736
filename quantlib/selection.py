"""Fine-tuned or calibrated only: a run keeps whichever of the two is closer to FP32.

A short label-free fine-tune at a gentle learning rate polishes a trained model, but on
others it leaves the INT8 model worse than calibration alone did (on Hugging Face models
with random weights: ViT-S 23.9 -> 2.7 dB, BERT-2L 35.6 -> 17.8 dB against FP32). The QAT
model's state right after calibration is kept aside; after fine-tuning both are scored on
the eval split, as the report scores them, and the better one is what gets exported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from quantlib.figures import selection_summary
from quantlib.inputs import Inputs
from quantlib.loop import predict
from quantlib.metrics import sqnr_db
from quantlib.tasks import Task

Kept = Literal["fine-tuned", "calibrated"]


@dataclass(frozen=True)
class Selection:
    """Which state a run kept, and the score that decided it: the task's metric with labels (top-1, mIoU,
    PSNR dB, F1; :mod:`quantlib.tasks`), else SQNR in dB against FP32."""

    kept: Kept
    metric: str
    calibrated: float
    fine_tuned: float
    # the kept state's outputs on the eval split: the run's simulated outputs, not computed again
    outputs: np.ndarray = field(repr=False, compare=False)

    def summary(self) -> str:
        return selection_summary(self.kept, self.metric, self.calibrated, self.fine_tuned)

    def to_dict(self) -> dict[str, Any]:
        return {"kept": self.kept, "metric": self.metric, "calibrated": self.calibrated, "fine_tuned": self.fine_tuned}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s state that training cannot change."""
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _score(
    model: nn.Module, x: Inputs, labels: np.ndarray | None, fp32: np.ndarray, task: Task, device: torch.device
) -> tuple[float, np.ndarray]:
    outputs = predict(model, x, device)
    return (task.score(outputs, labels) if labels is not None else sqnr_db(fp32, outputs)), outputs


def keep_better(
    qat: nn.Module,
    calibrated: dict[str, torch.Tensor],
    x_eval: Inputs,
    y_eval: np.ndarray | None,
    fp32: np.ndarray,
    task: Task,
    device: torch.device,
) -> Selection:
    """Leave ``qat`` in the better of its fine-tuned state and ``calibrated``; a tie keeps the fine-tuned one."""
    fine_tuned_score, fine_tuned_outputs = _score(qat, x_eval, y_eval, fp32, task, device)
    fine_tuned = snapshot(qat)
    qat.load_state_dict(calibrated)
    calibrated_score, outputs = _score(qat, x_eval, y_eval, fp32, task, device)
    kept: Kept = "calibrated" if calibrated_score > fine_tuned_score else "fine-tuned"
    if kept == "fine-tuned":
        qat.load_state_dict(fine_tuned)
        outputs = fine_tuned_outputs
    metric = task.metric if y_eval is not None else "sqnr_db"
    return Selection(kept, metric, calibrated_score, fine_tuned_score, outputs)
