"""The weight quantizer (ARQ): symmetric, per output channel or per tensor."""

from __future__ import annotations

import torch
from torch import nn

from quantlib.quant.functional import ARQFunction, arq_quantize


class WeightQuantizer(nn.Module):
    """Fake-quantizes a weight from its current values on every call (no state to learn).

    ``axis`` is the output-channel axis of the weight (0 for Conv/Linear, 1 for
    ConvTranspose); with ``channel_wise`` false one scale covers the whole tensor.
    """

    def __init__(self, bits: int = 8, *, channel_wise: bool = True, axis: int = 0) -> None:
        super().__init__()
        self.bits = bits
        self.channel_wise = channel_wise
        self.axis = axis

    @property
    def scale_axis(self) -> int | None:
        return self.axis if self.channel_wise else None

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return ARQFunction.apply(weight, self.scale_axis, self.bits)

    def quantize(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer weights (int8 storage) and scales, for export and the record."""
        return arq_quantize(weight, self.scale_axis, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, channel_wise={self.channel_wise}, axis={self.axis}"
