"""Building the QAT model: layers named in the config are swapped for QuantLayers."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from typing import cast

import torch
from torch import nn

from quantlib.config import QuantConfig, build_config, check_layers, load_simple_config
from quantlib.export.fold import can_fold
from quantlib.graph import GraphFacts, analyze_exported, analyze_module, trainable_module
from quantlib.layers import QuantLayer
from quantlib.spec import INT32_BIAS_TARGETS, Target

ModelLike = nn.Module | torch.export.ExportedProgram


def as_module(model: ModelLike) -> tuple[nn.Module, GraphFacts | None]:
    """A private, trainable nn.Module for ``model``, and graph facts when they come free."""
    if isinstance(model, torch.export.ExportedProgram):
        # ep.module() shares the program's tensors: lift a copy, so training leaves ``model`` as it was.
        return trainable_module(copy.deepcopy(model)), analyze_exported(model)
    if isinstance(model, nn.Module):
        return copy.deepcopy(model), None
    raise _not_a_model(model)


def model_layer_types(model: ModelLike) -> dict[str, str]:
    """:func:`layer_types` of the module :func:`as_module` makes of ``model``, without copying its weights."""
    if isinstance(model, torch.export.ExportedProgram):
        return layer_types(trainable_module(model))  # shares the program's tensors, only to read the names
    if isinstance(model, nn.Module):
        return layer_types(model)
    raise _not_a_model(model)


def _not_a_model(model: object) -> TypeError:
    return TypeError(f"model must be a torch.nn.Module or torch.export.ExportedProgram, got {type(model).__name__}")


def default_config(model: ModelLike, config_defination: str | os.PathLike[str] | None = None) -> QuantConfig:
    """The default config for ``model``: every quantizable layer, ULQ + ARQ, INT8, with the
    skips and overrides of ``config_defination`` (a simplified JSON/YAML config) applied."""
    types = model_layer_types(model)
    simple = load_simple_config(config_defination) if config_defination is not None else None
    return build_config(types, simple)


def layer_types(model: nn.Module) -> dict[str, str]:
    """Module path -> class name, the vocabulary config files are checked against."""
    return {name: type(module).__name__ for name, module in model.named_modules() if name}


def as_inputs(input_data: object) -> tuple[torch.Tensor, ...]:
    if isinstance(input_data, torch.Tensor):
        return (input_data,)
    if isinstance(input_data, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in input_data):
        return tuple(input_data)
    raise TypeError("input_data must be a tuple of example input tensors, e.g. (torch.randn(1, 3, 224, 224),)")


def quantize_layers(
    model: nn.Module, config: QuantConfig, facts: GraphFacts | None, input_data: object, target: Target
) -> nn.Module:
    """Swap every enabled layer of ``model``, a private copy, in place; ``fixed_min`` absent
    from the config comes from the graph, traced once on ``input_data`` when ``facts`` is None.
    ``target`` decides the arithmetic the layers simulate (:data:`quantlib.spec.INT32_BIAS_TARGETS`)."""
    check_layers(config, layer_types(model))
    if facts is None:
        facts = analyze_module(model, as_inputs(input_data))
    for name, entry in config.enabled_layers().items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        original = getattr(parent, child)
        fixed_min = entry.retrain_data_config.fixed_min
        if fixed_min is None:
            fixed_min = facts.nonneg_input.get(name, False)
        quant = QuantLayer(original, entry, batch_num=config.batch_num, fixed_min=fixed_min)
        quant.int32_bias = target in INT32_BIAS_TARGETS
        bn_name = facts.bn_after.get(name)
        if bn_name:
            quant.folds_bn = bn_name
            if can_fold(quant):
                quant.fold_with(bn_name, cast(nn.modules.batchnorm._BatchNorm, model.get_submodule(bn_name)))
        setattr(parent, child, quant)
    return model


def prepare(model: ModelLike, config: QuantConfig, input_data: object, target: Target = "generic-qdq") -> nn.Module:
    """The QAT model for ``model``: a copy, with the config's layers quantized for ``target``."""
    module, facts = as_module(model)
    return quantize_layers(module, config, facts, input_data, target)


def quant_layers(model: nn.Module) -> Iterator[tuple[str, QuantLayer]]:
    for name, module in model.named_modules():
        if isinstance(module, QuantLayer):
            yield name, module
