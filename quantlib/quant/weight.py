"""The weight quantizer (ARQ): symmetric, per output channel or per tensor."""

from __future__ import annotations

import torch
from torch import nn

from quantlib.quant.functional import ARQFunction, IntRange, arq_quantize, arq_scale


class WeightQuantizer(nn.Module):
    """Fake-quantizes a weight from its current values on every call (no state to learn).

    ``axis`` is the output-channel axis of the weight (0 for Conv/Linear, 1 for
    ConvTranspose); with ``channel_wise`` false one scale covers the whole tensor.

    ``fold_sign`` (set by :meth:`fold_into`) is the sign of the BatchNorm factor export
    folds into each output channel. The grid [-128, 127] is not symmetric, so negating
    a channel's integers at export could overflow (-(-128)); instead the weight is
    quantized with those channels already negated, as the folded weight is, and negated
    back: the deployed integers are then exactly the ones trained.
    """

    fold_sign: torch.Tensor | None

    def __init__(self, bits: int = 8, *, channel_wise: bool = True, axis: int = 0) -> None:
        super().__init__()
        self.bits = bits
        self.channel_wise = channel_wise
        self.axis = axis
        self.register_buffer("fold_sign", None, persistent=False)

    def fold_into(self, factor_sign: torch.Tensor, weight_dim: int) -> None:
        """Quantize as if ``factor_sign`` (+1/-1 per output channel) were already multiplied in."""
        shape = [1] * weight_dim
        shape[self.axis] = -1
        self.fold_sign = None if bool((factor_sign > 0).all()) else factor_sign.detach().float().reshape(shape)

    @property
    def scale_axis(self) -> int | None:
        return self.axis if self.channel_wise else None

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.fold_sign is None:
            return ARQFunction.apply(weight, self.scale_axis, self.bits)
        return ARQFunction.apply(weight * self.fold_sign, self.scale_axis, self.bits) * self.fold_sign

    def quantize(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer weights (int8 storage) and scales of the weight times ``fold_sign``, for export and the record."""
        if self.fold_sign is None:
            return arq_quantize(weight, self.scale_axis, self.bits)
        return arq_quantize(weight * self.fold_sign, self.scale_axis, self.bits)

    def scales(self, weight: torch.Tensor) -> torch.Tensor:
        """The scales :meth:`quantize` would give (one, or one per output channel), without the integers."""
        signed = weight if self.fold_sign is None else weight * self.fold_sign
        return arq_scale(signed, self.scale_axis, IntRange(self.bits))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, channel_wise={self.channel_wise}, axis={self.axis}"
