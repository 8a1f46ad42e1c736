"""What a run's numbers cannot be trusted for, said beside them rather than left to be guessed.

A random-weight MobileNetV2 whose BatchNorm statistics are the defaults gives outputs of
about 1e-13: its report read "SQNR -316 dB, agreement 0.0" with no word on why. Numpy only,
so the same checks can run wherever the outputs are.
"""

from __future__ import annotations

import numpy as np

# FP32 outputs no larger than this carry no signal for SQNR or agreement to measure
TINY_OUTPUT = 1e-6


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
