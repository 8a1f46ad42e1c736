"""What a run's numbers cannot be trusted for, said beside them rather than left to be guessed.

A random-weight MobileNetV2 whose BatchNorm statistics are the defaults gives outputs of
about 1e-13: its report read "SQNR -316 dB, agreement 0.0" with no word on why. A handful
of eval samples, or labels in another order than the model's classes, mislead as quietly.
Numpy only, so the same checks can run wherever the outputs are.
"""

from __future__ import annotations

import numpy as np

# FP32 outputs no larger than this carry no signal for SQNR or agreement to measure
TINY_OUTPUT = 1e-6
# fewer eval samples than this: one sample moves top-1 by more than 3 points
FEW_SAMPLES = 32
# an FP32 top-1 below this many times chance: the labels likely do not name the model's outputs
NEAR_CHANCE = 1.5


def run_caveats(fp32: np.ndarray, labels: np.ndarray | None, eval_source: str) -> list[str]:
    """Every warning about the scores of a run scored against ``fp32`` (and ``labels``) on ``eval_source``."""
    return [*output_caveats(fp32), *_eval_caveats(fp32, labels, eval_source)]


def _eval_caveats(fp32: np.ndarray, labels: np.ndarray | None, eval_source: str) -> list[str]:
    caveats = []
    if len(fp32) < FEW_SAMPLES:
        caveats.append(
            f"the scores come from only {len(fp32)} samples of {eval_source}: one sample moves top-1 by "
            f"{100 / max(len(fp32), 1):.0f} points; give x_eval with a few hundred samples"
        )
    if labels is not None and fp32.ndim == 2 and fp32.shape[1] > 1 and len(fp32) >= FEW_SAMPLES:
        top1 = float(np.mean(np.argmax(fp32, axis=1) == labels))
        chance = 1 / fp32.shape[1]
        if top1 < NEAR_CHANCE * chance:
            caveats.append(
                f"the FP32 model's own top-1 on these labels is {top1:.3f}, about chance ({chance:.3f} for "
                f"{fp32.shape[1]} outputs): the labels may not name the model's outputs (another class order, "
                "or another task), or the FP32 model is untrained; INT8 top-1 is then no measure of quality"
            )
    return caveats


def output_caveats(fp32: np.ndarray) -> list[str]:
    """Warnings about the FP32 reference outputs that every score is measured against."""
    largest = float(np.max(np.abs(fp32))) if fp32.size else 0.0
    if largest <= TINY_OUTPUT:
        return [
            f"the FP32 model's outputs are at most {largest:.3g} in magnitude: SQNR and agreement against them "
            "measure rounding, not the model. Check the FP32 model (a random-weight one with default BatchNorm "
            "statistics vanishes layer by layer)"
        ]
    if len(fp32) > 1 and bool(np.all(fp32 == fp32[:1])):
        return [
            "the FP32 model gives every eval sample the same output: agreement and top-1 cannot tell a good INT8 "
            "model from a bad one. Check the FP32 model and the eval data"
        ]
    return []
