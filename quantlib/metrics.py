"""How close INT8 outputs are to FP32 outputs: the numbers a quantization report gives.

Numpy only, so the same functions score the PyTorch simulation, onnxruntime outputs
and, later, results the API shows. The class axis is axis 1 (PyTorch's convention),
so ``(N, C)`` logits and ``(N, C, H, W)`` score maps both work.
"""

from __future__ import annotations

import math

import numpy as np


def top1_accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose highest output is the label."""
    return float(np.mean(np.argmax(outputs, axis=1) == labels))


def top1_agreement(reference: np.ndarray, outputs: np.ndarray) -> float:
    """Fraction of samples where both models pick the same class; needs no labels."""
    return float(np.mean(np.argmax(reference, axis=1) == np.argmax(outputs, axis=1)))


def sqnr_db(reference: np.ndarray, outputs: np.ndarray) -> float:
    """Output signal-to-quantization-noise ratio in dB; ``inf`` when the outputs are equal.

    Accumulated in float64: float32 sums over many outputs lose the small noise term.
    """
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(outputs, dtype=np.float64)) ** 2))
    if noise == 0.0:
        return math.inf
    signal = float(np.sum(ref**2))
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf
