"""From a trained QuantLayer to the numbers that get deployed, BatchNorm folded in.

Folding scales output channel c by k_c = gamma_c / sqrt(var_c + eps). Symmetric
quantization commutes with scaling by |k_c|, so only the scales change; the sign of k_c
was already quantized in (:meth:`WeightQuantizer.fold_into`), so the deployed integers
are the QAT integers: the folded model computes what the QAT model computes in eval
mode, also when weights were quantized per tensor. Only a gamma that changed sign during
training leaves a channel to negate here, where -(-128) is clamped to 127.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from quantlib.layers import QuantLayer
from quantlib.quant import IntRange
from quantlib.quant.folding import accumulator_grid, bias_steps, bn_factors


@dataclass
class DeployedLayer:
    """Everything export and the record need about one quantized layer."""

    weight_q: torch.Tensor  # int8 storage of int8/int4 values
    weight_scale: torch.Tensor  # one scale, or one per output channel
    weight_axis: int
    weight_bits: int
    bias: torch.Tensor | None
    act_scale: torch.Tensor
    act_offset: torch.Tensor
    act_bits: int
    # with QuantLayer.int32_bias: the folded bias as onnxruntime's integer kernels add it
    bias_int32: torch.Tensor | None = None
    bias_scale: torch.Tensor | None = None

    def grid_weight(self) -> torch.Tensor:
        """The weight as the values on its grid, ``q * scale``: quantizing it again gives ``q`` exactly."""
        shape = [1] * self.weight_q.dim()
        if self.weight_scale.numel() > 1:
            shape[self.weight_axis] = -1
        return self.weight_q.float() * self.weight_scale.reshape(shape)


def can_fold(layer: QuantLayer) -> bool:
    """Grouped ConvTranspose mixes groups on its scale axis, so per-channel factors don't fit."""
    return layer.weight_quant.axis == 0 or getattr(layer.layer, "groups", 1) == 1


@torch.no_grad()
def deploy_layer(layer: QuantLayer, bn: nn.modules.batchnorm._BatchNorm | None) -> DeployedLayer:
    wq = layer.weight_quant
    weight = layer.layer.weight.detach().float()
    q, scale = wq.quantize(weight)
    bias = None if layer.layer.bias is None else layer.layer.bias.detach().float()
    axis = wq.axis
    if bn is not None:
        k, shift = bn_factors(bn)
        shape = [1] * weight.dim()
        shape[axis] = -1
        scale = scale.expand_as(k) * k.abs() if scale.numel() == 1 else scale * k.abs()
        trained = torch.ones_like(k).reshape(shape) if wq.fold_sign is None else wq.fold_sign
        flip = (torch.where(k < 0, -1.0, 1.0).reshape(shape) * trained).to(torch.int16)
        grid = IntRange(wq.bits)
        q = (q.to(torch.int16) * flip).clamp(grid.qmin, grid.qmax).to(torch.int8)
        bias = shift if bias is None else bias * k + shift
    act = layer.act_quant
    act_scale, act_offset = act.qparams()
    bias_int32 = bias_scale = None
    if layer.int32_bias and bias is not None:
        channels = weight.shape[axis]
        accumulator = accumulator_grid(act_scale, scale.expand(channels) if scale.numel() == 1 else scale)
        steps = bias_steps(bias, accumulator)
        if steps is not None:
            bias_int32, bias_scale = steps.to(torch.int32), accumulator
    return DeployedLayer(
        weight_q=q,
        weight_scale=scale.float(),
        weight_axis=axis,
        weight_bits=wq.bits,
        bias=bias,
        act_scale=act_scale.float(),
        act_offset=act_offset,
        act_bits=act.bits,
        bias_int32=bias_int32,
        bias_scale=bias_scale,
    )
