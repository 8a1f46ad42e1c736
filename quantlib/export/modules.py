"""The export form of a QAT model: QuantLayers become QDQ layers, quantized embeddings int8 tables,
folded BNs vanish."""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import fx, nn

from quantlib.embedding import QuantEmbedding
from quantlib.export.fold import DeployedLayer, can_fold, deploy_layer
from quantlib.export.ops import dequantize_int32, gather_rows, quant_dequant
from quantlib.graph.analysis import op_name
from quantlib.layers import QuantLayer
from quantlib.prepare import quant_embeddings, quant_layers
from quantlib.quant import ActivationQuantizer, IntRange


class TensorQDQ(nn.Module):
    """A tensor's fake quantization as exported: one QuantizeLinear/DequantizeLinear pair."""

    def __init__(self, scale: torch.Tensor, offset: torch.Tensor, bits: int, signed: bool) -> None:
        super().__init__()
        self.grid = IntRange(bits)
        self.signed = signed  # int8 storage (a symmetric grid's zero point 0), else uint8
        self.register_buffer("scale", scale.reshape(()))
        self.register_buffer("zero_point", offset.to(torch.int32).reshape(()))

    @classmethod
    def of(cls, quantizer: ActivationQuantizer) -> TensorQDQ:
        return cls(*quantizer.qparams(), quantizer.bits, quantizer.symmetric)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quant_dequant(x, self.scale, self.zero_point, 1, self.grid.qmin, self.grid.qmax, self.signed)


class QDQLayer(nn.Module):
    """A quantized layer as exported: QDQ on the input and on the (grid-valued) weight.

    The bias takes one of two forms. With ``int32_bias`` (the onnxruntime-cpu target) it
    is an int32 tensor behind a DequantizeLinear on the accumulator's grid, inside the
    Conv/Gemm: the form onnxruntime fuses into QLinearConv/QGemm, and what the QAT model
    simulated. Otherwise it is added after the layer as its own float ``Add``: a Conv/Gemm
    whose inputs come from DequantizeLinear and whose bias is a float initializer is read
    by onnxruntime as having an int32 bias on the ``scale_in x scale_w`` grid (its
    WeightBiasQuantization pass), which a QAT model that kept the bias in float does not
    compute; with INT4 that rounding is large enough to change predictions.
    """

    def __init__(self, source: QuantLayer, deployed: DeployedLayer) -> None:
        super().__init__()
        self.layer = copy.deepcopy(source.layer)
        self.layer.bias = None
        self.bias = None if deployed.bias is None or deployed.bias_int32 is not None else nn.Parameter(deployed.bias)
        self._run = source._run
        # None where the graph quantizes the input before the layer (quantlib.between)
        self.input_qdq = None if source.input_quantized else TensorQDQ.of(source.act_quant)
        self.weight_grid = IntRange(deployed.weight_bits)
        self.signed_weights = source.signed_weights
        self.axis = deployed.weight_axis
        self.register_buffer("weight_scale", deployed.weight_scale)
        self.register_buffer("weight_zero_point", torch.zeros_like(deployed.weight_scale, dtype=torch.int32))
        self.register_buffer("bias_int32", deployed.bias_int32)
        self.register_buffer("bias_scale", deployed.bias_scale)
        self.layer.weight = nn.Parameter(deployed.grid_weight())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight_grid
        if self.input_qdq is not None:
            x = self.input_qdq(x)
        weight = quant_dequant(
            self.layer.weight, self.weight_scale, self.weight_zero_point, self.axis, w.qmin, w.qmax, self.signed_weights
        )
        if self.bias_int32 is not None and self.bias_scale is not None:
            return self._run(self.layer, x, weight, dequantize_int32(self.bias_int32, self.bias_scale))
        y = self._run(self.layer, x, weight, None)
        if self.bias is None:
            return y
        if isinstance(self.layer, nn.Linear):
            return y + self.bias
        return y + self.bias.reshape(-1, *[1] * (y.dim() - 2))


class EmbeddingQDQ(nn.Module):
    """A quantized embedding as exported: the int8 table and one scale per row (a per-tensor scale
    repeated), gathered as int8 rows and then scaled (:func:`quantlib.export.ops.gather_rows`)."""

    def __init__(self, source: QuantEmbedding) -> None:
        super().__init__()
        table, scale = source.quantized_table()
        self.register_buffer("table", table)
        self.register_buffer("scale", scale.float().expand(table.shape[0]).contiguous())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return gather_rows(self.table, self.scale, ids)


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def deployed_layers(model: nn.Module) -> dict[str, DeployedLayer]:
    """Per quantized layer, its deployed numbers (BN folded where one follows)."""
    out: dict[str, DeployedLayer] = {}
    for name, layer in quant_layers(model):
        # folds_bn names the BatchNorm that graph analysis found after the layer
        bn = (
            cast(nn.modules.batchnorm._BatchNorm, model.get_submodule(layer.folds_bn))
            if layer.folds_bn and can_fold(layer)
            else None
        )
        out[name] = deploy_layer(layer, bn)
    return out


def _global(output_size: object) -> bool:
    """Whether an adaptive pooling's output size is 1 x 1 (one value per channel)."""
    sizes = [output_size] if isinstance(output_size, int) else output_size
    return isinstance(sizes, (list, tuple)) and all(size == 1 for size in sizes)


def export_form(model: nn.Module) -> nn.Module:
    """A copy of the QAT model in eval mode, ready for ``torch.onnx.export``."""
    model = copy.deepcopy(model).eval()
    deployed = deployed_layers(model)
    if isinstance(model, fx.GraphModule):
        for node in model.graph.nodes:
            quantizer = model.get_submodule(node.target) if node.op == "call_module" else None
            if isinstance(quantizer, ActivationQuantizer):
                _set(model, node.target, TensorQDQ.of(quantizer))
            elif op_name(node) == "adaptive_avg_pool2d" and _global(node.args[1]):
                node.target, node.args = torch.ops.quantlib.global_average_pool.default, node.args[:1]
        model.recompile()
    for name, embedding in list(quant_embeddings(model)):
        _set(model, name, EmbeddingQDQ(embedding))
    for name, layer in list(quant_layers(model)):
        _set(model, name, QDQLayer(layer, deployed[name]))
        if layer.folds_bn and can_fold(layer):
            _set(model, layer.folds_bn, nn.Identity())
    return model
