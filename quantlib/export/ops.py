"""Quantize-dequantize as a torch custom op that the ONNX exporter turns into
QuantizeLinear/DequantizeLinear, with int8 or int4 zero points.

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


def onnx_storage(qmin: int) -> tuple[int, int]:
    """The ONNX integer type of a grid and the shift added to its zero point.

    8-bit grids are stored unsigned, shifted by 128: the same arithmetic as signed int8,
    but onnxruntime runs uint8 x uint8 products in kernels that cannot overflow, while
    its uint8 x int8 kernels on x86 CPUs without VNNI add pairs of products in saturating
    16-bit lanes and lose up to several percent of an output (seen on AVX2 hosts).
    """
    if qmin >= INT4_RANGE[0]:
        return TensorProto.INT4, 0
    return TensorProto.UINT8, UINT8_SHIFT


@torch.library.custom_op("quantlib::quant_dequant", mutates_args=())
def quant_dequant(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int, qmin: int, qmax: int
) -> torch.Tensor:
    """Per-tensor (scale has one element) or per-``axis`` fake quantization."""
    if scale.numel() == 1:
        return torch.fake_quantize_per_tensor_affine(x, scale.reshape(1), zero_point.int().reshape(1), qmin, qmax)
    return torch.fake_quantize_per_channel_affine(x, scale, zero_point.int(), axis, qmin, qmax)


@quant_dequant.register_fake
def _(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int, qmin: int, qmax: int) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("quantlib::dequantize_int32", mutates_args=())
def dequantize_int32(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """An int32 bias on a per-channel grid as float: ``values * scale`` (DequantizeLinear in ONNX)."""
    return values.float() * scale


@dequantize_int32.register_fake
def _(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.empty(values.shape, dtype=torch.float32, device=values.device)


def translation_table(opset: int) -> dict[Callable[..., object], Callable[..., object]]:
    """The ONNX translation of the op for the exporter's ``custom_translation_table``."""
    # Any: onnxscript types an op's output by a type variable that only the op's inputs bind, so no chain of ops checks.
    op: Any = opset21 if opset >= 21 else opset13

    # The exporter infers the ONNX signature from these hints (typing.get_type_hints): unannotated parameters are
    # graph inputs, the int ones attributes; annotating x, scale and zero_point would change that signature.
    def onnx_quant_dequant(x, scale, zero_point, axis: int, qmin: int, qmax: int):  # type: ignore[no-untyped-def]
        storage, shift = onnx_storage(qmin)
        shifted = op.Add(
            op.Cast(zero_point, to=TensorProto.INT32),
            op.Constant(value=make_tensor("shift", TensorProto.INT32, [], [shift])),
        )
        zp = op.Cast(shifted, to=storage)
        return op.DequantizeLinear(op.QuantizeLinear(x, scale, zp, axis=axis), scale, zp, axis=axis)

    def onnx_dequantize_int32(values, scale):  # type: ignore[no-untyped-def]  # hints as above
        return op.DequantizeLinear(values, scale, axis=0)

    return {
        torch.ops.quantlib.quant_dequant.default: onnx_quant_dequant,
        torch.ops.quantlib.dequantize_int32.default: onnx_dequantize_int32,
    }


__all__ = ["dequantize_int32", "quant_dequant", "translation_table"]
