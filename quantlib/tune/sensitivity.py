"""Per-layer sensitivity: which layers cost accuracy when quantized, measured cheaply.

Two numbers per layer, as the issue asks: the drop when only that layer is quantized,
and the drop when only that layer is left in float. A third, the drop when only that
layer's weights are INT4, ranks layers for the weight-bits budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from quantlib.prepare import quant_layers
from quantlib.tune.variants import Probe, Variant


@dataclass(frozen=True)
class Sensitivity:
    layer: str
    quantized_only_drop: float
    float_only_drop: float
    int4_only_drop: float

    def score(self, all_quantized_drop: float) -> float:
        """How much this layer accounts for: its own damage, or what floating it saves."""
        return max(self.quantized_only_drop, all_quantized_drop - self.float_only_drop)

    def to_dict(self) -> dict[str, object]:
        return {
            "layer": self.layer,
            "quantized_only_drop": self.quantized_only_drop,
            "float_only_drop": self.float_only_drop,
        }


def measure(probe: Probe) -> list[Sensitivity]:
    """Three forward passes over the probe samples per quantized layer."""
    names = list(probe.layers())
    everything = frozenset(names)
    return [
        Sensitivity(
            layer=name,
            quantized_only_drop=probe.drop(Variant(floats=everything - {name})),
            float_only_drop=probe.drop(Variant(floats=frozenset({name}))),
            int4_only_drop=probe.drop(Variant(int4=frozenset({name}))),
        )
        for name in names
    ]


@torch.no_grad()
def edge_layers(qat: nn.Module, sample: tuple[torch.Tensor, ...]) -> dict[str, str]:
    """The quantized layers that run first and last, the seed's usual suspects, named
    "input layer" / "output layer"; found by running one sample, so any structure works."""
    order: list[str] = []
    hooks = [layer.register_forward_pre_hook(_recorder(order, name)) for name, layer in quant_layers(qat)]
    try:
        qat.eval()
        qat(*sample)
    finally:
        for hook in hooks:
            hook.remove()
    if not order:
        return {}
    if order[0] == order[-1]:
        return {order[0]: "input and output layer"}
    return {order[0]: "input layer", order[-1]: "output layer"}


def _recorder(order: list[str], name: str) -> Callable[[nn.Module, object], None]:
    """A forward pre-hook that appends ``name`` to ``order`` on the module's first call."""

    def record(_module: nn.Module, _inputs: object) -> None:
        if name not in order:
            order.append(name)

    return record
