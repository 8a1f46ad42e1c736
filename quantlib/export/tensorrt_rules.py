"""TensorRT's explicit-quantization rules, checked on an exported ONNX graph.

TensorRT itself needs a GPU; what its builder requires of a Q/DQ graph can be read off
the graph (TensorRT developer guide, "Explicit Quantization"): signed int8 with zero
point 0, per-tensor activation scales, per-channel weight scales on the output-channel
axis, every weighted op fed by DequantizeLinear on both its data and its weight, no
int32 bias behind a DequantizeLinear (TensorRT quantizes biases itself), and every
QuantizeLinear followed only by DequantizeLinear.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
# TensorRT moves DequantizeLinear across these itself (its Q/DQ propagation)
COMMUTING = {"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze"}


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers and Constant nodes by name: where zero points and stored weights live."""
    out = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return out


def _through_commuting(producers: dict[str, onnx.NodeProto], name: str) -> onnx.NodeProto | None:
    node = producers.get(name)
    while node is not None and node.op_type in COMMUTING:
        node = producers.get(node.input[0])
    return node


def _qdq_violations(constants: dict[str, np.ndarray], node: onnx.NodeProto) -> list[str]:
    out = []
    zero_point = constants.get(node.input[2]) if len(node.input) > 2 else None
    data = constants.get(node.input[0])
    if node.op_type == "DequantizeLinear" and data is not None and data.dtype == np.int32:
        out.append(f"{node.name}: an int32 bias behind DequantizeLinear (TensorRT quantizes biases itself)")
    elif zero_point is None or zero_point.dtype != np.int8 or bool(np.any(zero_point != 0)):
        kind = "missing" if zero_point is None else f"{zero_point.dtype} {np.unique(zero_point)[:3].tolist()}"
        out.append(f"{node.name}: zero point {kind}; TensorRT takes int8 with zero point 0")
    return out


def tensorrt_violations(model: onnx.ModelProto) -> list[str]:
    """What in ``model`` TensorRT's explicit quantization would refuse or silently run in float; [] if none."""
    graph = model.graph
    producers, constants = _producers(graph), _constants(graph)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    problems: list[str] = []
    for node in graph.node:
        if node.op_type in {"QuantizeLinear", "DequantizeLinear"}:
            problems += _qdq_violations(constants, node)
        if node.op_type == "QuantizeLinear":
            odd = [c.op_type for c in consumers.get(node.output[0], []) if c.op_type != "DequantizeLinear"]
            if odd:
                problems.append(f"{node.name}: QuantizeLinear read by {', '.join(odd)}, not a DequantizeLinear")
        if node.op_type in WEIGHTED:
            fed = [_through_commuting(producers, name) for name in node.input[:2]]
            quantized = [p is not None and p.op_type == "DequantizeLinear" for p in fed]
            if any(quantized) and not all(quantized):
                problems.append(f"{node.name}: {node.op_type} with only some inputs dequantized: it runs in float")
    return problems
