"""QuantLayer: a supported layer wrapped with its activation and weight quantizers."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from quantlib.config import BITS, LayerConfig
from quantlib.quant import ActivationQuantizer, WeightQuantizer
from quantlib.quant.folding import accumulator_grid, bias_steps, bn_factors, fold_sign, round_to_grid

Bias = torch.Tensor | None
# how to run a supported layer with a given weight and bias
Runner = Callable[[nn.Module, torch.Tensor, torch.Tensor, Bias], torch.Tensor]


def _conv(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: Bias) -> torch.Tensor:
    conv = cast(nn.modules.conv._ConvNd, layer)  # SUPPORTED maps only Conv1d/2d/3d here
    return conv._conv_forward(x, weight, bias)


def _conv_transpose(functional: Callable[..., torch.Tensor]) -> Runner:
    def run(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: Bias) -> torch.Tensor:
        return functional(
            x, weight, bias, layer.stride, layer.padding, layer.output_padding, layer.groups, layer.dilation
        )

    return run


def _linear(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: Bias) -> torch.Tensor:
    return F.linear(x, weight, bias)


# A layer type in SUPPORTED: what QuantLayer.layer holds.
Wrapped = nn.modules.conv._ConvNd | nn.Linear

# Per supported type: how to run the layer with a given weight, and its output-channel axis.
SUPPORTED: dict[type[nn.Module], tuple[Runner, int]] = {
    nn.Conv1d: (_conv, 0),
    nn.Conv2d: (_conv, 0),
    nn.Conv3d: (_conv, 0),
    nn.ConvTranspose1d: (_conv_transpose(F.conv_transpose1d), 1),
    nn.ConvTranspose2d: (_conv_transpose(F.conv_transpose2d), 1),
    nn.Linear: (_linear, 0),
}


def supported_kind(layer: nn.Module) -> type[nn.Module] | None:
    """The supported type ``layer`` is: its own, or the one it subclasses without changing ``forward``
    (Hugging Face's EfficientNetDepthwiseConv2d is an nn.Conv2d with other constructor arguments);
    None for any other layer, a subclass with its own forward included (its arithmetic is its own)."""
    for kind in SUPPORTED:
        if isinstance(layer, kind) and type(layer).forward is kind.forward:
            return kind
    return None


def runs_on_gemm(layer: nn.Module) -> bool:
    """Whether onnxruntime's CPU kernels compute ``layer`` as a uint8 x int8 matrix product (QGemm,
    MatMulInteger, QLinearConv's im2col path): a Linear, or a Conv other than a depthwise one (one input
    and one output channel per group, which has its own widening kernel). ConvTranspose stays float there."""
    if isinstance(layer, nn.Linear):
        return True
    if isinstance(layer, nn.modules.conv._ConvNd) and not layer.transposed:
        return not (layer.in_channels == layer.groups == layer.out_channels)
    return False


class QuantLayer(nn.Module):
    """Quantizes the input (ULQ) and the weight (ARQ) of ``layer``, then runs it.

    ``folds_bn`` names the BatchNorm module that directly follows the layer, if any;
    export folds it into the quantized weights (:meth:`fold_with` gives the layer that
    module). With ``int32_bias`` the bias is rounded as onnxruntime's integer kernels
    round it: the folded bias onto the accumulator's grid, input scale x folded weight
    scale (:func:`quantlib.export.fold.accumulator_grid`), straight-through for its
    gradient. The rounding needs the BatchNorm's running statistics, so it applies when
    that BatchNorm normalises with them (eval mode, or ``freeze_bn``) and after calibration.
    """

    def __init__(
        self, layer: nn.Module, config: LayerConfig, *, batch_num: int, fixed_min: bool, symmetric: bool = False
    ) -> None:
        super().__init__()
        kind = supported_kind(layer)
        if kind is None:
            raise TypeError(f"{type(layer).__name__} is no layer quantlib can quantize")
        run, axis = SUPPORTED[kind]
        data, weight = config.retrain_data_config, config.retrain_weight_config
        self.layer = cast(Wrapped, layer)  # a key of SUPPORTED, checked just above
        self.act_quant = ActivationQuantizer(
            BITS[data.dst_type],
            batch_num=batch_num,
            fixed_min=fixed_min,
            clip_max=data.clip_max,
            clip_min=data.clip_min,
            symmetric=symmetric,
        )
        self.weight_quant = WeightQuantizer(BITS[weight.dst_type], channel_wise=weight.channel_wise, axis=axis)
        self._run = run
        self.folds_bn: str | None = None
        self.int32_bias = False
        # export stores the weight as int8 rather than uint8 shifted by 128 (same values)
        self.signed_weights = False
        # the graph quantizes the input before this layer, with act_quant shared (quantlib.between)
        self.input_quantized = False
        self._bn: nn.modules.batchnorm._BatchNorm | None = None

    def fold_with(self, name: str, bn: nn.modules.batchnorm._BatchNorm) -> None:
        """``bn`` (the module at ``name``) follows this layer and is folded into it at export.

        Held outside the module tree (not a submodule: it stays where the model has it),
        and ``copy.deepcopy`` of the model keeps the two pointing at each other's copies.
        """
        self.folds_bn = name
        object.__setattr__(self, "_bn", bn)
        self.weight_quant.fold_into(fold_sign(bn), self.layer.weight.dim())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rounds = self.int32_bias and self.act_quant.calibrated and (self._bn is None or not self._bn.training)
        weight = self.weight_quant(self.layer.weight)
        bias = self._grid_bias() if rounds else self.layer.bias
        return self._run(self.layer, x if self.input_quantized else self.act_quant(x), weight, bias)

    def _grid_bias(self) -> Bias:
        """The bias whose fold, rounded onto the accumulator grid, is what onnxruntime adds in int32."""
        layer_bias = self.layer.bias
        channels = self.layer.weight.shape[self.weight_quant.axis]
        if self._bn is None and layer_bias is None:
            return None
        bias = torch.zeros(channels, device=self.layer.weight.device) if layer_bias is None else layer_bias
        k, shift = bn_factors(self._bn) if self._bn is not None else (torch.ones_like(bias), torch.zeros_like(bias))
        weight_scale = self.weight_quant.scales(self.layer.weight).detach()
        grid = accumulator_grid(self.act_quant.scale().detach(), weight_scale.expand(channels) * k.abs())
        folded = bias.detach() * k + shift
        steps = bias_steps(folded, grid)
        if steps is None:
            return layer_bias
        rounded = round_to_grid(steps, grid)
        # unfolded again: what BatchNorm then turns into the rounded folded bias
        safe_k = torch.where(k.abs() > 0, k, torch.ones_like(k))
        unfolded = torch.where(k.abs() > 0, (rounded - shift) / safe_k, bias.detach())
        return bias + (unfolded - bias).detach()
