"""Building the QAT model: layers named in the config are swapped for QuantLayers."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn

from quantlib.config import QuantConfig, check_layers
from quantlib.graph import GraphFacts, analyze_exported, analyze_module, trainable_module
from quantlib.layers import QuantLayer

ModelLike = nn.Module | torch.export.ExportedProgram


def as_module(model: ModelLike) -> tuple[nn.Module, GraphFacts | None]:
    """A private, trainable nn.Module for ``model``, and graph facts when they come free."""
    if isinstance(model, torch.export.ExportedProgram):
        # ep.module() shares the program's tensors: lift a copy, so training leaves ``model`` as it was.
        return trainable_module(copy.deepcopy(model)), analyze_exported(model)
    if isinstance(model, nn.Module):
        return copy.deepcopy(model), None
    raise TypeError(f"model must be a torch.nn.Module or torch.export.ExportedProgram, got {type(model).__name__}")


def layer_types(model: nn.Module) -> dict[str, str]:
    """Module path -> class name, the vocabulary config files are checked against."""
    return {name: type(module).__name__ for name, module in model.named_modules() if name}


def as_inputs(input_data: object) -> tuple[torch.Tensor, ...]:
    if isinstance(input_data, torch.Tensor):
        return (input_data,)
    if isinstance(input_data, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in input_data):
        return tuple(input_data)
    raise TypeError("input_data must be a tuple of example input tensors, e.g. (torch.randn(1, 3, 224, 224),)")


def quantize_layers(model: nn.Module, config: QuantConfig, facts: GraphFacts) -> nn.Module:
    """Swap every enabled layer in place; ``fixed_min`` absent from the config comes from the graph."""
    check_layers(config, layer_types(model))
    for name, entry in config.enabled_layers().items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        original = getattr(parent, child)
        fixed_min = entry.retrain_data_config.fixed_min
        if fixed_min is None:
            fixed_min = facts.nonneg_input.get(name, False)
        quant = QuantLayer(original, entry, batch_num=config.batch_num, fixed_min=fixed_min)
        quant.folds_bn = facts.bn_after.get(name)
        setattr(parent, child, quant)
    return model


def prepare(model: ModelLike, config: QuantConfig, input_data: object) -> nn.Module:
    """The QAT model for ``model``: a copy, with the config's layers quantized."""
    module, facts = as_module(model)
    if facts is None:
        facts = analyze_module(module, as_inputs(input_data))
    return quantize_layers(module, config, facts)


def quant_layers(model: nn.Module) -> Iterator[tuple[str, QuantLayer]]:
    for name, module in model.named_modules():
        if isinstance(module, QuantLayer):
            yield name, module
