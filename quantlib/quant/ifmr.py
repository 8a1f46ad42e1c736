"""IFMR: initial activation clips that minimise the quantisation MSE on calibration data.

Candidates scale the observed range by 0.70 .. 1.29 in steps of 0.01. The symmetric,
one-sided (fixed_min) and one-bound-fixed cases are all searches over (clip_max,
clip_min) pairs, so one evaluator serves them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from quantlib.quant.functional import IntRange

RATIOS: tuple[float, ...] = tuple(round(0.70 + 0.01 * i, 2) for i in range(60))


@dataclass(frozen=True)
class Clips:
    clip_max: float
    clip_min: float
    mse: float


def candidate_clips(
    x_max: float,
    x_min: float,
    grid: IntRange,
    *,
    fixed_min: bool = False,
    clip_max: float | None = None,
    clip_min: float | None = None,
) -> list[tuple[float, float]]:
    """The (clip_max, clip_min) pairs IFMR tries; a bound given by the config stays put."""
    if fixed_min:
        clip_min = 0.0
    if clip_max is not None and clip_min is not None:
        return [(clip_max, clip_min)]
    if clip_max is not None:
        low = min(x_min, 0.0)
        return [(clip_max, r * low) for r in RATIOS]
    if clip_min is not None:
        high = max(x_max, 1e-8) if fixed_min else max(x_max, abs(clip_min) * 1e-3, 1e-8)
        return [(r * high, clip_min) for r in RATIOS]
    peak = max(abs(x_max), abs(x_min), 1e-8)
    return [(r * peak, r * peak * grid.qmin / grid.qmax) for r in RATIOS]


def quantization_mse(x: torch.Tensor, clip_max: float, clip_min: float, grid: IntRange) -> float:
    """Mean squared error of fake-quantizing ``x`` on the ULQ grid of these clips."""
    scale = (clip_max - clip_min) / grid.levels
    offset = int(round(grid.qmin - clip_min / scale))
    y = torch.fake_quantize_per_tensor_affine(x, scale, offset, grid.qmin, grid.qmax)
    return float((y - x).pow(2).mean())


def ifmr_search(
    samples: torch.Tensor,
    bits: int,
    *,
    fixed_min: bool = False,
    clip_max: float | None = None,
    clip_min: float | None = None,
) -> Clips:
    """Pick the candidate clips with the least quantisation MSE on ``samples``."""
    grid = IntRange(bits)
    x = samples.detach().float().flatten()
    pairs = candidate_clips(
        float(x.max()), float(x.min()), grid, fixed_min=fixed_min, clip_max=clip_max, clip_min=clip_min
    )
    best = min((quantization_mse(x, hi, lo, grid), hi, lo) for hi, lo in pairs)
    return Clips(clip_max=best[1], clip_min=best[2], mse=best[0])
