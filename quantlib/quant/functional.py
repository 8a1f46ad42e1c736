"""The fake-quantization arithmetic, each as one autograd Function.

Forward passes use torch's fused fake-quantize kernels (one pass over the tensor);
backward passes are written by hand so a QAT step costs few extra kernels and never
syncs with the host. The formulas are the ones in DESIGN.md (ULQ and ARQ).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class IntRange:
    """The integer grid of a b-bit signed type: ``qmin = -2^(b-1)``, ``qmax = 2^(b-1)-1``."""

    bits: int

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1))

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def levels(self) -> int:
        """N = 2^b - 1, the number of steps between the clips."""
        return 2**self.bits - 1


def ulq_scale_offset(clip_max: torch.Tensor, clip_min: torch.Tensor, grid: IntRange) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and integer offset (ONNX zero point) of an asymmetric [clip_min, clip_max] grid."""
    scale = (clip_max - clip_min) / grid.levels
    offset = torch.round(grid.qmin - clip_min / scale)
    return scale, offset


class ULQFunction(torch.autograd.Function):
    """Asymmetric per-tensor fake quantization with learnable clips (ULQ).

    Backward: the input gets the straight-through gradient inside the grid and zero
    outside; the clips get ``sum g*(e + U)`` and ``sum g*(L - e)`` with
    ``e = (round(v) - v) / N`` the rounding error of the in-range values.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, clip_max: torch.Tensor, clip_min: torch.Tensor, bits: int) -> torch.Tensor:  # type: ignore[override]
        grid = IntRange(bits)
        scale, offset = ulq_scale_offset(clip_max, clip_min, grid)
        zero_point = offset.to(torch.int32).reshape(1)
        ctx.save_for_backward(x, scale, offset)
        ctx.grid = grid
        return torch.fake_quantize_per_tensor_affine(x, scale.reshape(1), zero_point, grid.qmin, grid.qmax)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, scale, offset = ctx.saved_tensors
        grid: IntRange = ctx.grid
        v = x / scale
        rounded = torch.round(v)
        above = rounded > (grid.qmax - offset)
        below = rounded < (grid.qmin - offset)
        outside = above | below
        grad_x = grad.masked_fill(outside, 0.0)
        err_sum = (grad_x * (rounded - v)).sum() / grid.levels
        grad_above = grad.masked_fill(~above, 0.0).sum()
        grad_below = grad.masked_fill(~below, 0.0).sum()
        grad_max = (err_sum + grad_above).reshape(scale.shape) if ctx.needs_input_grad[1] else None
        grad_min = (grad_below - err_sum).reshape(scale.shape) if ctx.needs_input_grad[2] else None
        return grad_x, grad_max, grad_min, None


class ARQFunction(torch.autograd.Function):
    """Symmetric weight fake quantization, scale = max|w| / qmax, straight-through backward."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, axis: int | None, bits: int) -> torch.Tensor:  # type: ignore[override]
        grid = IntRange(bits)
        scale = arq_scale(weight, axis, grid)
        if axis is None:
            zero = torch.zeros(1, dtype=torch.int32, device=weight.device)
            return torch.fake_quantize_per_tensor_affine(weight, scale.reshape(1), zero, -grid.qmax, grid.qmax)
        zero = torch.zeros(scale.numel(), dtype=torch.int32, device=weight.device)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, axis, -grid.qmax, grid.qmax)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad, None, None


def arq_scale(weight: torch.Tensor, axis: int | None, grid: IntRange) -> torch.Tensor:
    """Per-tensor (axis None) or per-channel scales; a zero channel gets a tiny positive scale."""
    w = weight.detach()
    if axis is None:
        peak = w.abs().amax()
    else:
        dims = [d for d in range(w.dim()) if d != axis]
        peak = w.abs().amax(dim=dims)
    return (peak / grid.qmax).clamp_min(torch.finfo(torch.float32).tiny).float()


def arq_quantize(weight: torch.Tensor, axis: int | None, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer weights and their scales, as deployed: ``weight ~= q * scale``."""
    grid = IntRange(bits)
    scale = arq_scale(weight, axis, grid)
    shape = [1] * weight.dim()
    if axis is not None:
        shape[axis] = -1
    q = torch.round(weight.detach() / scale.reshape(shape)).clamp(-grid.qmax, grid.qmax)
    return q.to(torch.int8), scale
