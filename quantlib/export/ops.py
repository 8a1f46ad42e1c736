"""Quantize-dequantize as a torch custom op that the ONNX exporter turns into
QuantizeLinear/DequantizeLinear, with int8 or int4 zero points; and the other integer
ops of the deploy model (int32 biases, global pooling, lookups in int8 tables).

The torch implementation computes exactly what ONNX Runtime computes, so the exported
graph can be checked against the export-form module in PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from onnx import TensorProto
from onnx.helper import make_tensor
from onnxscript import opset13, opset21

INT4_RANGE = (-8, 7)
UINT8_SHIFT = 128


def onnx_storage(qmin: int, signed: bool) -> tuple[int, int]:
    """The ONNX integer type of a grid and the shift added to its zero point.

    8-bit grids are stored unsigned, shifted by 128, unless ``signed``: the same arithmetic
    either way. Activations are always uint8. Weights are int8 for onnxruntime-cpu, whose
    fastest kernels (uint8 x int8) then run: 15-35 % faster than uint8 x uint8 on an AVX2
    host. Those kernels add pairs of products in saturating 16-bit lanes on x86 CPUs without
    VNNI, so that target gives the layers they run a 7-bit weight grid, whose pairs cannot
    overflow (:attr:`quantlib.spec.TargetForm.gemm_weight_headroom`); generic-qdq keeps
    full-range weights as uint8, where uint8 x uint8 cannot overflow.
    """
    if qmin >= INT4_RANGE[0]:
        return TensorProto.INT4, 0
    return (TensorProto.INT8, 0) if signed else (TensorProto.UINT8, UINT8_SHIFT)


@torch.library.custom_op("quantlib::quant_dequant", mutates_args=())
def quant_dequant(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int, qmin: int, qmax: int, signed: bool
) -> torch.Tensor:
    """Per-tensor (scale has one element) or per-``axis`` fake quantization; ``signed`` picks the ONNX storage."""
    if scale.numel() == 1:
        return torch.fake_quantize_per_tensor_affine(x, scale.reshape(1), zero_point.int().reshape(1), qmin, qmax)
    return torch.fake_quantize_per_channel_affine(x, scale, zero_point.int(), axis, qmin, qmax)


@quant_dequant.register_fake
def _(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int, qmin: int, qmax: int, signed: bool
) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("quantlib::dequantize_int32", mutates_args=())
def dequantize_int32(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """An int32 bias on a per-channel grid as float: ``values * scale`` (DequantizeLinear in ONNX)."""
    return values.float() * scale


@dequantize_int32.register_fake
def _(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.empty(values.shape, dtype=torch.float32, device=values.device)


@torch.library.custom_op("quantlib::global_average_pool", mutates_args=())
def global_average_pool(x: torch.Tensor) -> torch.Tensor:
    """``adaptive_avg_pool2d(x, 1)``, written as ONNX's GlobalAveragePool: torch's exporter writes a
    ReduceMean, for which onnxruntime has no integer kernel (it has QLinearGlobalAveragePool)."""
    return torch.nn.functional.adaptive_avg_pool2d(x, 1)


@global_average_pool.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty((*x.shape[:2], 1, 1), dtype=x.dtype, device=x.device)


@torch.library.custom_op("quantlib::gather_rows", mutates_args=())
def gather_rows(table: torch.Tensor, scale: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Rows ``ids`` of an int8 ``table`` as float, each times its row's ``scale``."""
    return table[ids].float() * scale[ids].unsqueeze(-1)


@gather_rows.register_fake
def _(table: torch.Tensor, scale: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.empty((*ids.shape, table.shape[1]), dtype=torch.float32, device=table.device)


def translation_table(opset: int) -> dict[Callable[..., object], Callable[..., object]]:
    """The ONNX translation of the op for the exporter's ``custom_translation_table``."""
    # Any: onnxscript types an op's output by a type variable that only the op's inputs bind, so no chain of ops checks.
    op: Any = opset21 if opset >= 21 else opset13

    # The exporter infers the ONNX signature from these hints (typing.get_type_hints): unannotated parameters are
    # graph inputs, the int ones attributes; annotating x, scale and zero_point would change that signature.
    def onnx_quant_dequant(x, scale, zero_point, axis: int, qmin: int, qmax: int, signed: bool):  # type: ignore[no-untyped-def]
        storage, shift = onnx_storage(qmin, signed)
        shifted = op.Add(
            op.Cast(zero_point, to=TensorProto.INT32),
            op.Constant(value=make_tensor("shift", TensorProto.INT32, [], [shift])),
        )
        zp = op.Cast(shifted, to=storage)
        return op.DequantizeLinear(op.QuantizeLinear(x, scale, zp, axis=axis), scale, zp, axis=axis)

    def onnx_dequantize_int32(values, scale):  # type: ignore[no-untyped-def]  # hints as above
        return op.DequantizeLinear(values, scale, axis=0)

    def onnx_global_average_pool(x):  # type: ignore[no-untyped-def]  # hints as above
        return op.GlobalAveragePool(x)

    def onnx_gather_rows(table, scale, ids):  # type: ignore[no-untyped-def]  # hints as above
        # the int8 rows are gathered first, so a lookup reads only its rows; each row's scale follows its row
        rows = op.Cast(op.Gather(table, ids, axis=0), to=TensorProto.FLOAT)
        row_scale = op.Unsqueeze(op.Gather(scale, ids, axis=0), op.Constant(value_ints=[-1]))
        return op.Mul(rows, row_scale)

    return {
        torch.ops.quantlib.gather_rows.default: onnx_gather_rows,
        torch.ops.quantlib.quant_dequant.default: onnx_quant_dequant,
        torch.ops.quantlib.dequantize_int32.default: onnx_dequantize_int32,
        torch.ops.quantlib.global_average_pool.default: onnx_global_average_pool,
    }


__all__ = ["dequantize_int32", "gather_rows", "global_average_pool", "quant_dequant", "translation_table"]
