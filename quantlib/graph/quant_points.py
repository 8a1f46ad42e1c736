"""Which tensors between layers the onnxruntime-cpu target quantizes, so chains run on integer kernels.

onnxruntime fuses ``DQ -> op -> Q`` groups into integer kernels (QLinearConv, QLinearAdd,
QLinearMul, QLinearSigmoid, QLinearAveragePool, QLinearConcat ...): an op runs in int8 only when every tensor
input comes from a DequantizeLinear and its output goes to a QuantizeLinear. A tensor is
therefore quantized where it is an input of a quantized layer or of an integer op whose
output is itself quantized; one quantizer per tensor, shared by all its consumers, so a
producer has the single Q consumer its fusion needs.

Ops that commute with quantization to one grid (max pooling, reshapes, dropout at
inference) are seen through: the quantizer sits before them, as onnxruntime moves Q/DQ
pairs across them itself (its QDQ propagation), and the integer values flow through.
A ReLU/ReLU6 right after the producer is absorbed by onnxruntime into the Q's range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import fx

from quantlib.graph.analysis import DROPOUTS, RESHAPES, op_name

# they give the same values whether their input is quantized before or after them
TRANSPARENT = RESHAPES | DROPOUTS | {"max_pool1d", "max_pool2d", "max_pool3d"}
# activations onnxruntime folds into the range of the Q after them
ABSORBED = {"relu", "relu_", "hardtanh", "hardtanh_", "relu6", "clamp"}
# ops onnxruntime runs on int8 inputs and output, by op name: which arguments are the tensor inputs
INTEGER_OPS: dict[str, Callable[[fx.Node], list[object]]] = {
    "add": lambda node: list(node.args[:2]),
    "cat": lambda node: list(node.args[0]) if isinstance(node.args[0], (list, tuple)) else [],
    "mul": lambda node: list(node.args[:2]),
    "adaptive_avg_pool2d": lambda node: [node.args[0]],
    "avg_pool2d": lambda node: [node.args[0]],
    "sigmoid": lambda node: [node.args[0]],
}


@dataclass
class QuantPoints:
    """The tensors to quantize: per tensor, the nodes that read it directly (to read its
    quantized value instead) and the quantized layers among its consumers (the layers
    whose input quantizer it shares)."""

    readers: dict[fx.Node, list[fx.Node]] = field(default_factory=dict)
    layers: dict[fx.Node, list[fx.Node]] = field(default_factory=dict)

    def add(self, point: fx.Node, reader: fx.Node, consumer: fx.Node, is_layer: bool) -> None:
        readers = self.readers.setdefault(point, [])
        if reader not in readers:
            readers.append(reader)
        layers = self.layers.setdefault(point, [])
        if is_layer and consumer not in layers:
            layers.append(consumer)


def _activation(arg: object) -> bool:
    """A float activation: computed in the graph (or a model input), not a weight, a constant,
    an integer tensor or a symbolic size (``operator.add`` on sizes is named ``add`` too)."""
    if not isinstance(arg, fx.Node) or arg.op not in {"call_function", "call_module", "placeholder"}:
        return False
    value = arg.meta.get("val")
    return value is None or (isinstance(value, torch.Tensor) and value.is_floating_point())


def _integer_inputs(node: fx.Node) -> list[fx.Node] | None:
    """The tensor inputs of an integer op, or None when ``node`` is none (or, for ``add`` and
    ``mul``, takes a constant, a scalar or a scaled operand: QLinearAdd/Mul take two activations)."""
    name = op_name(node)
    if name not in INTEGER_OPS or (name == "add" and node.kwargs.get("alpha", 1) != 1):
        return None
    args = INTEGER_OPS[name](node)
    if not args or not all(_activation(a) for a in args):
        return None
    return [a for a in args if isinstance(a, fx.Node)]


def source(node: fx.Node) -> tuple[fx.Node, fx.Node | None]:
    """The tensor ``node`` is, seen through transparent ops, and the transparent op that
    reads that tensor directly (None when ``node`` is no transparent op)."""
    reader = None
    while op_name(node) in TRANSPARENT and node.args and isinstance(node.args[0], fx.Node):
        reader = node
        node = node.args[0]
    return node, reader


def _consumers(node: fx.Node) -> list[fx.Node]:
    """The users of ``node``, seeing through transparent ops and absorbed activations."""
    out: list[fx.Node] = []
    for user in node.users:
        if op_name(user) in TRANSPARENT | ABSORBED and user.args and user.args[0] is node:
            out += _consumers(user)
        else:
            out.append(user)
    return out


def _fused_branch(
    inputs: list[fx.Node], is_layer: Callable[[fx.Node], bool], order: dict[fx.Node, int]
) -> fx.Node | None:
    """The input of a residual add that TensorRT fuses into the layer computing it: the
    latest one a layer (or the BatchNorm after it) produces; None if no layer does."""
    produced = [
        arg
        for arg in inputs
        if is_layer(arg) or (arg.op == "call_module" and bool(arg.args) and is_layer(cast(fx.Node, arg.args[0])))
    ]
    return max(produced, key=order.__getitem__) if produced else None


def find_points(graph: fx.Graph, is_layer: Callable[[fx.Node], bool], *, residual_only: bool = False) -> QuantPoints:
    """The quantization points of ``graph``, where ``is_layer`` says which nodes are quantized layers.

    An integer op counts when something integer consumes its output; deciding in reverse
    order lets a chain of adds and pools be integer up to the layer that reads it. With
    ``residual_only`` (TensorRT) the integer ops are the adds, and the branch a layer
    produces last is left to TensorRT to fuse into that layer: only the others are quantized.
    """
    ops = {"add"} if residual_only else set(INTEGER_OPS)
    active: set[fx.Node] = set()
    for node in reversed(graph.nodes):
        if op_name(node) not in ops or _integer_inputs(node) is None:
            continue
        if any(is_layer(u) or u in active for u in _consumers(node)):
            active.add(node)
    order = {node: i for i, node in enumerate(graph.nodes)}
    points = QuantPoints()
    for node in graph.nodes:
        layer = is_layer(node)
        if layer and node.args and isinstance(node.args[0], fx.Node):
            inputs = [node.args[0]]
        elif node in active:
            inputs = _integer_inputs(node) or []
            if residual_only:
                fused = _fused_branch(inputs, is_layer, order)
                inputs = [arg for arg in inputs if arg is not fused]
        else:
            continue
        for arg in inputs:
            point, reader = source(arg)
            points.add(point, reader or node, node, layer)
    return points
