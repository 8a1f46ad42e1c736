"""Quantizers between layers: what lets a deployed chain of layers stay in int8 end to end.

For the targets that quantize between layers (``between`` in :data:`quantlib.spec.TARGET_FORMS`) each tensor that
:func:`quantlib.graph.quant_points.find_points` picks gets one quantizer in the graph,
read by all its consumers: the quantized layers reading it share it as their input
quantizer (their config decides it), the integer ops (residual adds, pooling, concat)
read its output. Export writes that quantizer as one Q/DQ pair, so the QAT model computes
what the deployed integer kernels compute.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import fx

from quantlib.graph.analysis import nonneg_nodes, op_name
from quantlib.graph.exported import free_attr
from quantlib.graph.quant_points import INTEGER_OPS, find_points
from quantlib.layers import QuantLayer
from quantlib.quant import ActivationQuantizer
from quantlib.spec import TargetForm

# the activation type of tensors no layer's config speaks for
DEFAULT_BITS = 8


def _layer_nodes(gm: fx.GraphModule) -> dict[fx.Node, QuantLayer]:
    out = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = gm.get_submodule(cast(str, node.target))
            if isinstance(module, QuantLayer):
                out[node] = module
    return out


def split_silu(gm: fx.GraphModule) -> None:
    """``silu(x)`` as ``x * sigmoid(x)``: onnxruntime has integer kernels for both halves
    (QLinearSigmoid, QLinearMul), none for SiLU; its ONNX export is that product anyway."""
    for node in list(gm.graph.nodes):
        if op_name(node) in {"silu", "silu_"}:
            with gm.graph.inserting_before(node):
                sigmoid = gm.graph.call_function(torch.ops.aten.sigmoid.default, (node.args[0],))
                product = gm.graph.call_function(torch.ops.aten.mul.Tensor, (node.args[0], sigmoid))
            sigmoid.meta, product.meta = dict(node.meta), dict(node.meta)  # same shape and dtype as the SiLU
            node.replace_all_uses_with(product)
            gm.graph.erase_node(node)


def quantize_between(gm: fx.GraphModule, batch_num: int, form: TargetForm) -> None:
    """Install the shared quantizers in ``gm`` (a QAT model), in place.

    Layers that read one tensor with different data configs keep their own input
    quantizers; the tensor's integer-op readers then get a quantizer of their own.
    """
    if form.between == "integer-ops":
        split_silu(gm)
    layers = _layer_nodes(gm)
    points = find_points(gm.graph, lambda node: node in layers, residual_only=form.between == "residual-adds")
    nonneg = nonneg_nodes(gm.graph)
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    for point, readers in points.readers.items():
        sharing = [layers[node] for node in points.layers[point]]
        agree = len({layer.act_quant.settings() for layer in sharing}) <= 1
        if not agree:
            sharing, readers = [], [r for r in readers if op_name(r) in INTEGER_OPS]
            if not readers:
                continue
        quantizer = (
            sharing[0].act_quant
            if sharing
            else ActivationQuantizer(
                DEFAULT_BITS,
                batch_num=batch_num,
                fixed_min=nonneg.get(point, False),
                symmetric=form.symmetric_activations,
            )
        )
        name = free_attr(gm, f"{point.name}_quant")
        gm.add_submodule(name, quantizer)
        with gm.graph.inserting_before(min(readers, key=order.__getitem__)):
            quantized = gm.graph.call_module(name, (point,))
        for reader in readers:
            reader.replace_input_with(point, quantized)
        for layer in sharing:
            layer.act_quant, layer.input_quantized = quantizer, True
    gm.recompile()
