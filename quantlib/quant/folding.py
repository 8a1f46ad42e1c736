"""The arithmetic of folding a BatchNorm into the quantized layer before it, and of the int32 bias.

Shared by the QAT layer, which simulates it, and by export, which writes it, so both
compute the same float32 values in the same order: that is what makes the deployed
integers the trained ones.
"""

from __future__ import annotations

import torch
from torch import nn

# the most steps a bias may span: a quarter of int32, the rest is headroom for the products
# (fan-in x 255 x 128 stays under 2^30 up to a fan-in of 32,000)
BIAS_LIMIT = 2**29


def bn_factors(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, shift) with ``bn(y) == k * y + shift`` per channel in eval mode."""
    if bn.running_var is None or bn.running_mean is None:
        # the same TypeError the arithmetic below would raise, with the reason
        raise TypeError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    k = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        k = k * bn.weight
    shift = -bn.running_mean * k
    if bn.bias is not None:
        shift = shift + bn.bias
    return k.detach(), shift.detach()


def fold_sign(bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """The sign of each channel's folding factor k: gamma's (the rsqrt is positive)."""
    if bn.weight is None:
        return torch.ones(bn.num_features)
    return torch.where(bn.weight.detach() < 0, -1.0, 1.0)


def accumulator_grid(act_scale: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """The step of an integer kernel's int32 accumulator per output channel, as onnxruntime takes it:
    input scale x (folded) weight scale, in float32 and in that order."""
    return act_scale.float() * weight_scale.float()


def bias_steps(bias: torch.Tensor, grid: torch.Tensor) -> torch.Tensor | None:
    """``bias`` in accumulator steps, ``round(bias / grid)``, or None where it would not fit.

    The kernel adds the bias to a sum of ``fan_in`` products in one int32; a bias so many
    steps wide that the sum could overflow (tiny activation scales make the steps tiny)
    stays in float instead, and QAT then keeps that layer's bias in float too: both sides
    call this with the same float32 numbers, so they decide alike.
    """
    steps = torch.round(bias.float() / grid)
    return steps if bool(steps.abs().max() <= BIAS_LIMIT) else None


def round_to_grid(steps: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The bias an int32 ``steps`` on ``grid`` dequantizes to."""
    return steps * grid
