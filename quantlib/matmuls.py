"""Activation x activation matmuls quantized: attention's scores (``q @ k^T``) and values (``probs @ v``).

Off by default (AMCT quantizes layers with weights only); a config turns it on with
``"quantize_activation_matmuls": true``. Both inputs of every ``matmul``/``bmm`` that reads
no parameter get a quantizer of their own (ULQ, per tensor; the softmax output one-sided),
so the deployed graph has ``DequantizeLinear`` on both inputs of each ``MatMul``, which
onnxruntime runs as an integer matmul. Hugging Face models call
``scaled_dot_product_attention``, one op with the two matmuls inside: it is first written
out as the ops it stands for (scale, mask, softmax), so its matmuls can be quantized too.
"""

from __future__ import annotations

import math

import torch
from torch import fx

from quantlib.graph.analysis import nonneg_nodes, op_name
from quantlib.graph.exported import free_attr, node_arg
from quantlib.quant import ActivationQuantizer
from quantlib.spec import TargetForm

MATMULS = {"matmul", "bmm"}
BITS = 8

aten = torch.ops.aten


class MatmulInputQuantizer(ActivationQuantizer):
    """An :class:`ActivationQuantizer` on one input of an activation x activation matmul (named so for the
    report; it quantizes like any other)."""


def write_out_attention(gm: fx.GraphModule) -> int:
    """Replace each ``scaled_dot_product_attention`` of ``gm`` by its ops; how many were. One with dropout,
    grouped-query heads or a head size the graph does not fix stays as it is (its matmuls stay float)."""
    written = 0
    for node in list(gm.graph.nodes):
        if op_name(node) != "scaled_dot_product_attention":
            continue
        q, k, v = node.args[:3]
        mask, dropout, causal = (
            node_arg(node, 3, "attn_mask", None),
            node_arg(node, 4, "dropout_p", 0.0),
            node_arg(node, 5, "is_causal", False),
        )
        scale = _scale(node, q)
        if dropout or node.kwargs.get("enable_gqa") or scale is None:
            continue
        graph = gm.graph
        with graph.inserting_before(node):
            scores = graph.call_function(aten.matmul.default, (q, graph.call_function(aten.transpose.int, (k, -2, -1))))
            scores = graph.call_function(aten.mul.Tensor, (scores, scale))
            if causal:
                ones = graph.call_function(aten.ones_like.default, (scores,), {"dtype": torch.bool})
                scores = _masked(graph, scores, graph.call_function(aten.tril.default, (ones,)))
            if isinstance(mask, fx.Node):
                boolean = "val" in mask.meta and mask.meta["val"].dtype == torch.bool
                scores = (
                    _masked(graph, scores, mask) if boolean else graph.call_function(aten.add.Tensor, (scores, mask))
                )
            probs = graph.call_function(aten._softmax.default, (scores, -1, False))
            out = graph.call_function(aten.matmul.default, (probs, v))
        out.meta = dict(node.meta)
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        written += 1
    gm.recompile()
    return written


def _scale(node: fx.Node, q: object) -> float | None:
    """The attention's scale: given, or 1 / sqrt(head size); None where the graph leaves the head size open."""
    given = node.kwargs.get("scale")
    if isinstance(given, (int, float)):
        return float(given)
    head = q.meta["val"].shape[-1] if isinstance(q, fx.Node) and "val" in q.meta else None
    return 1 / math.sqrt(head) if isinstance(head, int) else None


def _masked(graph: fx.Graph, scores: fx.Node, keep: fx.Node) -> fx.Node:
    """``scores`` where ``keep``, -inf elsewhere."""
    dropped = graph.call_function(aten.logical_not.default, (keep,))
    return graph.call_function(aten.masked_fill.Scalar, (scores, dropped, float("-inf")))


def quantize_activation_matmuls(gm: fx.GraphModule, batch_num: int, form: TargetForm) -> list[str]:
    """Give both inputs of every activation x activation matmul of ``gm`` a quantizer, in place; the
    names of the matmul nodes quantized."""
    write_out_attention(gm)
    nonneg = nonneg_nodes(gm.graph)
    quantized = []
    for node in list(gm.graph.nodes):
        inputs = node.args[:2]
        if op_name(node) not in MATMULS or not all(isinstance(a, fx.Node) and a.op != "get_attr" for a in inputs):
            continue
        readers = []
        for index, source in enumerate(inputs):
            assert isinstance(source, fx.Node)  # checked above
            quantizer = MatmulInputQuantizer(
                BITS, batch_num=batch_num, fixed_min=nonneg.get(source, False), symmetric=form.symmetric_activations
            )
            name = free_attr(gm, f"{node.name}_input{index}_quant")
            gm.add_submodule(name, quantizer)
            with gm.graph.inserting_before(node):
                readers.append(gm.graph.call_module(name, (source,)))
        node.args = (*readers, *node.args[2:])
        quantized.append(node.name)
    gm.recompile()
    return quantized
