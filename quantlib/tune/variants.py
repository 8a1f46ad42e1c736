"""What-if evaluation on a trained QAT model: layers in float, other clips, INT4 weights.

Measuring a change by retraining costs a QAT run; toggling the quantizers of the model
already calibrated and trained costs one forward pass over the eval samples, which is
how the tuner ranks layers and picks clips before it spends a trial.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from quantlib.inputs import Inputs
from quantlib.layers import QuantLayer
from quantlib.loop import predict
from quantlib.prepare import quant_layers
from quantlib.tune.objective import Objective

# layer -> (clip_max, clip_min); a clip_min of None keeps the layer's own lower clip
Clips = Mapping[str, tuple[float, float | None]]


@dataclass(frozen=True)
class Variant:
    """Changes to try on a trained model; names that are not quantized layers are ignored."""

    floats: frozenset[str] = frozenset()
    clips: Clips = field(default_factory=dict)
    int4: frozenset[str] = frozenset()


@contextmanager
def _in_float(layer: QuantLayer) -> Iterator[None]:
    """The layer as a float one. A quantizer the layer shares with other readers of its input
    (quantlib.between) is bypassed for all of them: the what-if is then a little optimistic
    where an integer op reads the same tensor, which the real trial measures."""
    act, weight, int32_bias = layer.act_quant, layer.weight_quant, layer.int32_bias
    # Identity stands in for the quantizers only inside this context (QuantLayer.forward just calls
    # them), and a float layer's bias stays float
    layer.act_quant, layer.weight_quant = nn.Identity(), nn.Identity()  # type: ignore[assignment]
    layer.int32_bias = False
    act.bypassed = layer.input_quantized
    try:
        yield
    finally:
        layer.act_quant, layer.weight_quant, layer.int32_bias = act, weight, int32_bias
        act.bypassed = False


@contextmanager
def _clipped(layer: QuantLayer, clip_max: float, clip_min: float | None) -> Iterator[None]:
    act = layer.act_quant
    saved = (act.clip_max.detach().clone(), act.clip_min.detach().clone())
    with torch.no_grad():
        act.clip_max.fill_(clip_max)
        if clip_min is not None:
            act.clip_min.fill_(clip_min)
    try:
        yield
    finally:
        with torch.no_grad():
            act.clip_max.copy_(saved[0])
            act.clip_min.copy_(saved[1])


@contextmanager
def _weight_bits(layer: QuantLayer, bits: int) -> Iterator[None]:
    saved = layer.weight_quant.bits
    layer.weight_quant.bits = bits
    try:
        yield
    finally:
        layer.weight_quant.bits = saved


@contextmanager
def applied(qat: nn.Module, variant: Variant) -> Iterator[None]:
    """``qat`` with ``variant`` in effect; everything is restored on exit."""
    with ExitStack() as stack:
        for name, layer in quant_layers(qat):
            if name in variant.floats:
                stack.enter_context(_in_float(layer))
                continue
            if name in variant.clips:
                stack.enter_context(_clipped(layer, *variant.clips[name]))
            if name in variant.int4:
                stack.enter_context(_weight_bits(layer, 4))
        yield


@dataclass(frozen=True)
class Probe:
    """Scores variants of one trained model on fixed eval samples."""

    qat: nn.Module
    x: Inputs
    device: torch.device
    objective: Objective

    def drop(self, variant: Variant) -> float:
        with applied(self.qat, variant):
            return self.objective.drop(predict(self.qat, self.x, self.device))

    def layers(self) -> dict[str, QuantLayer]:
        return dict(quant_layers(self.qat))
