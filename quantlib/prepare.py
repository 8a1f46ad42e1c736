"""Building the QAT model: layers named in the config are swapped for QuantLayers."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator
from typing import TypeVar, cast

import torch
from torch import fx, nn

from quantlib.between import quantize_between
from quantlib.config import (
    BITS,
    EMBEDDING,
    QUANTIZABLE_TYPES,
    ConfigError,
    QuantConfig,
    build_config,
    check_layers,
    check_target,
    load_simple_config,
)
from quantlib.embedding import QuantEmbedding, quantizable_embedding
from quantlib.export.fold import can_fold
from quantlib.graph import GraphFacts, analyze_exported, analyze_module, trainable_module
from quantlib.graph.exported import widen_batch
from quantlib.layers import QuantLayer, runs_on_gemm, supported_kind
from quantlib.matmuls import quantize_activation_matmuls
from quantlib.spec import TARGET_FORMS, Target, refusal

log = logging.getLogger(__name__)

ModelLike = nn.Module | torch.export.ExportedProgram
M = TypeVar("M", bound=nn.Module)


def as_module(
    model: ModelLike, input_data: object = None, target: Target = "generic-qdq", graph: bool = False
) -> tuple[nn.Module, GraphFacts | None]:
    """A private, trainable nn.Module for ``model``, and graph facts when they come free.

    A target that quantizes tensors between layers, or a config that quantizes activation
    matmuls (``graph``), needs the model as a graph: an nn.Module is exported (batch axis
    dynamic) and lifted like a ``.pt2``, where that keeps every quantizable layer; otherwise
    it stays as it is and only its layers are quantized.
    """
    if isinstance(model, torch.export.ExportedProgram):
        # ep.module() shares the program's tensors: lift a copy, so training leaves ``model`` as it was.
        return trainable_module(copy.deepcopy(model)), analyze_exported(model)
    if not isinstance(model, nn.Module):
        raise _not_a_model(model)
    module = copy.deepcopy(model)
    if (graph or TARGET_FORMS[target].between != "none") and input_data is not None:
        lifted = _as_graph(module, as_inputs(input_data))
        if lifted is not None:
            return lifted
    return module, None


def _as_graph(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[nn.Module, GraphFacts] | None:
    """``module`` exported and lifted, or None when export fails or loses a quantizable layer."""
    was_training = module.training
    widened = widen_batch(inputs)
    batch = torch.export.Dim("batch")
    try:
        ep = torch.export.export(
            module.eval(), widened, dynamic_shapes=tuple({0: batch} if t.dim() else None for t in widened), strict=False
        )
    except Exception as exc:  # noqa: BLE001 - the model then keeps its own form
        log.warning("quantizing layer inputs only: the model does not export with a dynamic batch (%s)", exc)
        return None
    finally:
        module.train(was_training)
    lifted = trainable_module(ep)
    wanted = {name: kind for name, kind in layer_types(module).items() if kind in QUANTIZABLE_TYPES}
    dead = _never_called(ep)
    if not {(name, kind) for name, kind in wanted.items() if name not in dead} <= layer_types(lifted).items():
        log.warning("quantizing layer inputs only: some layers are not plain calls in the model's graph")
        return None
    for name in wanted.keys() & dead:
        # kept at its path, as in the module (a pooler whose output the model drops): the config names it
        lifted.add_submodule(name, module.get_submodule(name))
    return lifted.train(was_training), analyze_exported(ep)


def _never_called(ep: torch.export.ExportedProgram) -> set[str]:
    """Module paths whose weight no output depends on (a pooler whose result the model drops): lifting
    leaves them out of the graph."""
    live: set[fx.Node] = set()
    pending = [node for node in ep.graph.nodes if node.op == "output"]
    while pending:
        node = pending.pop()
        if node not in live:
            live.add(node)
            pending.extend(node.all_input_nodes)
    params = ep.graph_signature.inputs_to_parameters
    return {
        params[node.name].rpartition(".")[0]
        for node in ep.graph.nodes
        if node.name in params and params[node.name].endswith(".weight") and node not in live
    }


def model_layer_types(model: ModelLike) -> dict[str, str]:
    """:func:`layer_types` of the module :func:`as_module` makes of ``model``, without copying its weights."""
    if isinstance(model, torch.export.ExportedProgram):
        return layer_types(trainable_module(model))  # shares the program's tensors, only to read the names
    if isinstance(model, nn.Module):
        return layer_types(model)
    raise _not_a_model(model)


def _not_a_model(model: object) -> TypeError:
    return TypeError(f"model must be a torch.nn.Module or torch.export.ExportedProgram, got {type(model).__name__}")


def default_config(
    model: ModelLike, config_defination: str | os.PathLike[str] | None = None, target: Target = "generic-qdq"
) -> QuantConfig:
    """The default config for ``model``: every quantizable layer, ULQ + ARQ, INT8, with the
    skips and overrides of ``config_defination`` (a simplified JSON/YAML config) applied.
    Embedding tables are listed but left in float on a target that cannot gather int8 rows."""
    types = model_layer_types(model)
    simple = load_simple_config(config_defination) if config_defination is not None else None
    config = build_config(types, simple)
    if refusal(target, "int8_gather") is not None:
        for name, entry in config.layers.items():
            if types[name] == EMBEDDING:
                entry.retrain_enable = False
    return config


def layer_types(model: nn.Module) -> dict[str, str]:
    """Module path -> class name, the vocabulary config files are checked against; a subclass of a
    supported layer that keeps its forward is named as that layer (:func:`quantlib.layers.supported_kind`)."""
    tied = _tied_parameters(model)
    return {name: _kind_name(module, tied) for name, module in model.named_modules() if name}


def _tied_parameters(model: nn.Module) -> set[int]:
    """ids of the parameters more than one module holds (GPT-2's token table, which ``lm_head`` reads)."""
    seen: set[int] = set()
    tied: set[int] = set()
    for _, parameter in model.named_parameters(remove_duplicate=False):
        (tied if id(parameter) in seen else seen).add(id(parameter))
    return tied


def _kind_name(module: nn.Module, tied: set[int]) -> str:
    if isinstance(module, nn.Embedding):
        if id(module.weight) in tied:
            # the layer that shares the table is quantized; the table's own rows stay float (as in a graph)
            return f"{type(module).__name__} with a tied weight"
        return EMBEDDING if quantizable_embedding(module) else f"{type(module).__name__} with max_norm"
    kind = supported_kind(module)
    return (kind or type(module)).__name__


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
    ``target`` decides the arithmetic the layers simulate (:data:`quantlib.spec.TARGET_FORMS`)."""
    types = layer_types(model)
    check_layers(config, types)
    check_target(config, target, types)
    form = TARGET_FORMS[target]
    if facts is None:
        facts = analyze_module(model, as_inputs(input_data))
    for name, entry in config.enabled_layers().items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        original = getattr(parent, child)
        if types[name] == EMBEDDING:
            setattr(parent, child, QuantEmbedding(original, entry))
            continue
        fixed_min = entry.retrain_data_config.fixed_min
        if fixed_min is None:
            fixed_min = facts.nonneg_input.get(name, False)
        quant = QuantLayer(
            original, entry, batch_num=config.batch_num, fixed_min=fixed_min, symmetric=form.symmetric_activations
        )
        quant.int32_bias = form.int32_bias
        quant.signed_weights = form.signed_weights
        if form.gemm_weight_headroom and runs_on_gemm(original) and quant.weight_quant.bits == BITS["INT8"]:
            quant.weight_quant.bits -= 1
        bn_name = facts.bn_after.get(name)
        if bn_name:
            quant.folds_bn = bn_name
            if can_fold(quant):
                quant.fold_with(bn_name, cast(nn.modules.batchnorm._BatchNorm, model.get_submodule(bn_name)))
        setattr(parent, child, quant)
    if form.between != "none" and isinstance(model, fx.GraphModule):
        quantize_between(model, config.batch_num, form)
    if config.quantize_activation_matmuls:
        if not isinstance(model, fx.GraphModule):
            raise ConfigError(
                "quantize_activation_matmuls needs the model as a graph, and torch.export could not make one of "
                "this nn.Module (see the warning above); give it as a .pt2, or leave the key out",
                field="quantize_activation_matmuls",
            )
        quantize_activation_matmuls(model, config.batch_num, form)
    return model


def prepare(model: ModelLike, config: QuantConfig, input_data: object, target: Target = "generic-qdq") -> nn.Module:
    """The QAT model for ``model``: a copy, with the config's layers quantized for ``target``."""
    module, facts = as_module(model, input_data, target, graph=config.quantize_activation_matmuls)
    return quantize_layers(module, config, facts, input_data, target)


def modules_of(model: nn.Module, kind: type[M]) -> Iterator[tuple[str, M]]:
    """Every submodule of ``model`` that is a ``kind``, with its path."""
    for name, module in model.named_modules():
        if isinstance(module, kind):
            yield name, module


def quant_layers(model: nn.Module) -> Iterator[tuple[str, QuantLayer]]:
    return modules_of(model, QuantLayer)


def quant_embeddings(model: nn.Module) -> Iterator[tuple[str, QuantEmbedding]]:
    return modules_of(model, QuantEmbedding)
