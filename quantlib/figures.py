"""A run's figures in words (its speed, which state it kept), the same in ``qat quantize``, ``qat status``
and the demo.

Standard library only: the torch-free client imports it.
"""

from __future__ import annotations

from collections.abc import Sequence

# how a score in each metric (quantlib.tasks, quantlib.selection) reads after its number
METRIC_UNITS = {
    "top1": "top-1",
    "miou": "mIoU",
    "psnr_db": "dB PSNR against the targets",
    "f1": "F1",
    "sqnr_db": "dB SQNR against FP32",
}


def speed_summary(batch_sizes: Sequence[int], latency_ratio: Sequence[float], size_ratio: float, threads: int) -> str:
    """``INT8: 0.31x FP32 latency (batch 1), 0.28x (batch 32); 0.25x size (...)``; below 1x is faster."""
    latency = ", ".join(
        f"{ratio:.2f}x{' FP32 latency' if i == 0 else ''} (batch {batch})"
        for i, (ratio, batch) in enumerate(zip(latency_ratio, batch_sizes, strict=True))
    )
    plural = "s" if threads != 1 else ""
    return f"INT8: {latency}; {size_ratio:.2f}x size (onnxruntime on this run's CPU, {threads} thread{plural})"


def selection_summary(kept: str, metric: str, calibrated: float, fine_tuned: float) -> str:
    """Which of the calibrated and the fine-tuned model a run kept (:mod:`quantlib.selection`), and why."""
    unit = METRIC_UNITS.get(metric, metric)
    verdict = (
        "fine-tuning made it worse: kept the calibrated model" if kept == "calibrated" else "kept the fine-tuned model"
    )
    return f"{verdict} (calibrated {calibrated:.4g}, fine-tuned {fine_tuned:.4g} {unit})"


def metric_header(metric: str, label: str) -> str:
    """A table column of ``metric`` scores: ``top-1 %``, ``PSNR dB``."""
    return label if metric.endswith("_db") else f"{label} %"


def metric_cell(value: float | None, metric: str) -> str:
    """A score in ``metric``: fractions as percent, decibels as they are; "-" when absent."""
    if value is None:
        return "-"
    if metric.endswith("_db"):
        return "inf" if value == float("inf") else f"{value:.1f}"
    return f"{100 * value:.2f}"
