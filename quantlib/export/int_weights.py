"""The deploy model from the fake-quant model: weights stored as integers.

In the fake-quant graph every weight is a float initializer feeding QuantizeLinear then
DequantizeLinear. Quantizing that initializer ahead of time (what a QDQ runtime would
do at load) leaves ``int8/uint8/int4 initializer -> DequantizeLinear`` (uint8: int8 values
shifted by 128, see :func:`quantlib.export.ops.onnx_storage`): the same arithmetic,
about a quarter of the bytes, and one torch export instead of two.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import onnx
from onnx import numpy_helper

_STORAGE: dict[int, tuple[Any, int, int]] = {
    onnx.TensorProto.UINT8: (np.uint8, 0, 255),
    onnx.TensorProto.INT8: (np.int8, -128, 127),
    onnx.TensorProto.INT4: (ml_dtypes.int4, -8, 7),
}


def _quantize(weight: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int, storage: int) -> np.ndarray:
    dtype, low, high = _STORAGE[storage]
    shape = [1] * weight.ndim
    if scale.ndim:
        shape[axis] = -1
    q = np.round(weight / scale.reshape(shape)) + zero_point.astype(np.int32).reshape(shape)
    return np.clip(q, low, high).astype(np.int16).astype(dtype)


def store_weights_as_integers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace ``float initializer -> QuantizeLinear`` with the integer initializer (in place)."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    rename: dict[str, str] = {}
    drop: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits or len(node.input) < 3:
            continue
        zero_point = inits[node.input[2]]
        if zero_point.data_type not in _STORAGE:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        weight = numpy_helper.to_array(inits[node.input[0]])
        q = _quantize(
            weight,
            numpy_helper.to_array(inits[node.input[1]]),
            numpy_helper.to_array(zero_point),
            axis if axis >= 0 else axis + weight.ndim,
            zero_point.data_type,
        )
        name = f"{node.input[0]}_quantized"
        graph.initializer.append(numpy_helper.from_array(q, name))
        rename[node.output[0]] = name
        drop.append(node)
        uses[node.input[0]] -= 1
    for node in drop:
        graph.node.remove(node)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    unused = [t for t in graph.initializer if uses.get(t.name, 1) == 0]
    for tensor in unused:
        graph.initializer.remove(tensor)
    return model
