"""QuantLayer: a supported layer wrapped with its activation and weight quantizers."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from quantlib.config import BITS, LayerConfig
from quantlib.quant import ActivationQuantizer, WeightQuantizer


def _conv(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    conv = cast(nn.modules.conv._ConvNd, layer)  # SUPPORTED maps only Conv1d/2d/3d here
    return conv._conv_forward(x, weight, conv.bias)


def _conv_transpose(
    functional: Callable[..., torch.Tensor],
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    def run(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return functional(
            x, weight, layer.bias, layer.stride, layer.padding, layer.output_padding, layer.groups, layer.dilation
        )

    return run


def _linear(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.linear(x, weight, cast(nn.Linear, layer).bias)  # SUPPORTED maps only Linear here


# A layer type in SUPPORTED: what QuantLayer.layer holds.
Wrapped = nn.modules.conv._ConvNd | nn.Linear

# Per supported type: how to run the layer with a given weight, and its output-channel axis.
SUPPORTED: dict[type[nn.Module], tuple[Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor], int]] = {
    nn.Conv1d: (_conv, 0),
    nn.Conv2d: (_conv, 0),
    nn.Conv3d: (_conv, 0),
    nn.ConvTranspose1d: (_conv_transpose(F.conv_transpose1d), 1),
    nn.ConvTranspose2d: (_conv_transpose(F.conv_transpose2d), 1),
    nn.Linear: (_linear, 0),
}


class QuantLayer(nn.Module):
    """Quantizes the input (ULQ) and the weight (ARQ) of ``layer``, then runs it.

    ``folds_bn`` names the BatchNorm module that directly follows the layer, if any;
    export folds it into the quantized weights.
    """

    def __init__(self, layer: nn.Module, config: LayerConfig, *, batch_num: int, fixed_min: bool) -> None:
        super().__init__()
        run, axis = SUPPORTED[type(layer)]
        data, weight = config.retrain_data_config, config.retrain_weight_config
        self.layer = cast(Wrapped, layer)  # a key of SUPPORTED, checked just above
        self.act_quant = ActivationQuantizer(
            BITS[data.dst_type],
            batch_num=batch_num,
            fixed_min=fixed_min,
            clip_max=data.clip_max,
            clip_min=data.clip_min,
        )
        self.weight_quant = WeightQuantizer(BITS[weight.dst_type], channel_wise=weight.channel_wise, axis=axis)
        self._run = run
        self.folds_bn: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.layer, self.act_quant(x), self.weight_quant(self.layer.weight))
