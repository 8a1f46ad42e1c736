"""The fake-quantization arithmetic, each as one autograd Function.

The formulas are the ones in DESIGN.md (ULQ and ARQ). Both passes are written by hand
with few, vectorised, mostly in-place kernels, so a QAT step costs little more than an
FP32 step and never waits for the host when it runs on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

try:
    from quantlib.quant import _cpu_kernels  # type: ignore[attr-defined]  # a C extension, no stubs
except ImportError:  # built at install time; without a C compiler the torch path below is used
    _cpu_kernels = None

Number = TypeVar("Number", torch.Tensor, np.float32, float)
# What ulq_scale_offset takes: ``.round()`` exists on both, not on a Python float.
Clip = TypeVar("Clip", torch.Tensor, np.float32)


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


CLIP_EPS = 1e-8


def ulq_scale_offset(clip_max: Clip, clip_min: Clip, grid: IntRange) -> tuple[Clip, Clip]:
    """Scale and integer offset (ONNX zero point) of an asymmetric [clip_min, clip_max] grid.

    Works on float32 tensors and on numpy float32 scalars with identical results, so
    the training hot path and the exported model agree to the last bit.
    """
    scale = (clip_max - clip_min) / grid.levels
    offset = (grid.qmin - clip_min / scale).round()
    return scale, offset


def _qparams(
    clip_max: torch.Tensor, clip_min: torch.Tensor, grid: IntRange
) -> tuple[float | torch.Tensor, float | torch.Tensor]:
    """Clamped clips turned into (scale, offset): Python floats on CPU, tensors elsewhere.

    On CPU, elementwise kernels with scalar operands are 4-15x faster than with 0-d
    tensor operands, and reading a CPU tensor is not a device sync. On a GPU the values
    stay on the device so a training step never waits for the host.
    """
    if clip_max.device.type != "cpu":
        return ulq_scale_offset(clip_max.clamp_min(CLIP_EPS), clip_min.clamp_max(0.0), grid)
    high = max(np.float32(clip_max.item()), np.float32(CLIP_EPS))
    low = min(np.float32(clip_min.item()), np.float32(0.0))
    scale, offset = ulq_scale_offset(high, low, grid)
    return float(scale), float(offset)


def _grad_in_range(
    grad: torch.Tensor, x: torch.Tensor, low: float | torch.Tensor, high: float | torch.Tensor
) -> torch.Tensor:
    if isinstance(low, float):
        return torch.ops.aten.hardtanh_backward(grad, x, low, high)
    return grad * ((x > low) & (x < high))


def _fused(x: torch.Tensor) -> bool:
    """Whether the fused C kernels can take ``x``: a contiguous float32 CPU tensor."""
    return (
        _cpu_kernels is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.is_contiguous()
        and x.numel() > 0
    )


class ULQFunction(torch.autograd.Function):
    """Asymmetric per-tensor fake quantization with learnable clips (ULQ).

    Backward: the input gets the straight-through gradient inside the grid and zero
    outside; the clips get ``sum g*(e + U)`` and ``sum g*(L - e)`` with
    ``e = (round(v) - v) / N`` the rounding error of the in-range values.

    Cost: torch's fused fake-quantize kernels are scalar loops, several times slower
    than four vectorised in-place passes, so the forward is written out. The backward
    stores no masks and allocates only the input gradient: in range ``y - x`` is the
    rounding error, and out of range ``y`` is the top grid value above and the bottom
    one below, so the clip gradients follow from five read-only reductions (sums of the
    gradient and dot products with ``x`` and ``y``, all and in-range only).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, clip_max: torch.Tensor, clip_min: torch.Tensor, bits: int) -> torch.Tensor:
        grid = IntRange(bits)
        scale, offset = _qparams(clip_max, clip_min, grid)
        if _fused(x):
            y = torch.empty_like(x)
            _cpu_kernels.ulq_forward(
                x.data_ptr(),
                y.data_ptr(),
                x.numel(),
                scale,
                grid.qmin - offset,
                grid.qmax - offset,
                torch.get_num_threads(),
            )
        else:
            # scale and offset are both floats (CPU) or both tensors; no clamp_ overload takes the mixed union
            y = (
                torch.div(x, scale)
                .round_()
                .clamp_(grid.qmin - offset, grid.qmax - offset)  # type: ignore[arg-type]
                .mul_(scale)
            )
        ctx.save_for_backward(x, y)
        ctx.qparams = (scale, offset)
        ctx.grid = grid
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, None]:
        x, y = ctx.saved_tensors
        scale, offset = ctx.qparams
        grid: IntRange = ctx.grid
        top, bottom = (grid.qmax - offset) * scale, (grid.qmin - offset) * scale
        low, high = bottom - 0.5 * scale, top + 0.5 * scale
        if _fused(x) and isinstance(scale, float):
            grad = grad.contiguous()
            grad_x = torch.empty_like(x)
            err, above, below = _cpu_kernels.ulq_backward(
                grad.data_ptr(),
                x.data_ptr(),
                y.data_ptr(),
                grad_x.data_ptr(),
                x.numel(),
                low,
                high,
                torch.get_num_threads(),
            )
            err /= scale * grid.levels
            grad_max = torch.tensor(err + above) if ctx.needs_input_grad[1] else None
            grad_min = torch.tensor(below - err) if ctx.needs_input_grad[2] else None
            return grad_x, grad_max, grad_min, None
        grad_x = _grad_in_range(grad, x, low, high)
        if not (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            return grad_x, None, None, None
        g, g_in, xs, ys = grad.flatten(), grad_x.flatten(), x.flatten(), y.flatten()
        sums = (torch.dot(g_in, ys), torch.dot(g_in, xs), g.sum(), g_in.sum(), torch.dot(g, ys))
        if isinstance(scale, float):
            in_y, in_x, total, inside, all_y = (t.item() for t in sums)
            grad_max, grad_min = (
                torch.tensor(v) for v in _clip_grads(in_y, in_x, total, inside, all_y, scale, top, bottom, grid)
            )
        else:
            grad_max, grad_min = (v.reshape(()) for v in _clip_grads(*sums, scale, top, bottom, grid))
        return grad_x, grad_max, grad_min, None


def _clip_grads(
    in_y: Number,
    in_x: Number,
    total: Number,
    inside: Number,
    all_y: Number,
    scale: Number,
    top: Number,
    bottom: Number,
    grid: IntRange,
) -> tuple[Number, Number]:
    """The clip gradients from the backward's sums of g (all elements) and g_in (in range).

    ``sum g_in (y - x) / (s N)`` is the rounding-error term; out of range ``y`` is ``top``
    above and ``bottom`` below, which splits the out-of-range gradient into U and L.
    Works on Python floats (CPU: no tiny tensor ops) and on 0-d tensors (GPU: no sync).
    """
    err = (in_y - in_x) / (scale * grid.levels)
    out_sum = total - inside
    above = (all_y - in_y - bottom * out_sum) / (top - bottom)
    return err + above, out_sum - above - err


class ARQFunction(torch.autograd.Function):
    """Symmetric weight fake quantization on the whole grid (AMCT's ARQ), straight-through backward."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, axis: int | None, bits: int) -> torch.Tensor:
        grid = IntRange(bits)
        if _fused(weight):
            out = torch.empty_like(weight)
            shape = weight.shape
            outer = math.prod(shape[:axis]) if axis is not None else 1
            channels = shape[axis] if axis is not None else 1
            inner = weight.numel() // (outer * channels)
            _cpu_kernels.arq_forward(weight.data_ptr(), out.data_ptr(), outer, channels, inner, grid.qmin, grid.qmax)
            return out
        scale = arq_scale(weight, axis, grid).reshape(_scale_shape(weight, axis))
        return torch.div(weight, scale).round_().clamp_(grid.qmin, grid.qmax).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad, None, None


def _scale_shape(weight: torch.Tensor, axis: int | None) -> list[int]:
    shape = [1] * weight.dim()
    if axis is not None:
        shape[axis] = -1
    return shape


def arq_scale(weight: torch.Tensor, axis: int | None, grid: IntRange) -> torch.Tensor:
    """Per-tensor (axis None) or per-channel scales, as AMCT computes them: ``max(max(w) / qmax,
    -min(w) / -qmin)``, so a channel whose largest magnitude is negative uses the grid's -128.
    A zero channel gets a tiny positive scale."""
    w = weight.detach().float()
    dims = [d for d in range(w.dim()) if d != axis]
    high = w.amax(dim=dims).clamp_min_(0.0).div_(grid.qmax)
    low = w.amin(dim=dims).clamp_max_(0.0).div_(grid.qmin)
    return torch.maximum(high, low).clamp_min_(torch.finfo(torch.float32).tiny)


def arq_quantize(weight: torch.Tensor, axis: int | None, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer weights and their scales, as deployed: ``weight ~= q * scale``."""
    grid = IntRange(bits)
    scale = arq_scale(weight, axis, grid)
    q = torch.round(weight.detach() / scale.reshape(_scale_shape(weight, axis))).clamp(grid.qmin, grid.qmax)
    return q.to(torch.int8), scale
