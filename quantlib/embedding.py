"""QuantEmbedding: an embedding table quantized per row (or per tensor), as the deploy model stores it.

A text model's largest tensor is its token table (MiniLM: 30522 x 384, half its bytes), and
it is read by a gather, not a matmul: no activation is quantized, only the table. The
deploy model stores it as int8 with one scale per row and gathers the int8 rows before
scaling them (:class:`quantlib.export.modules.EmbeddingQDQ`), so a lookup costs what the
float one did. A row's scale depends on that row only, so QAT quantizes just the rows a
batch reads: the same integers as quantizing the whole table, at the cost of the lookup.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quantlib.config import BITS, LayerConfig
from quantlib.quant import WeightQuantizer


def quantizable_embedding(module: nn.Module) -> bool:
    """An ``nn.Embedding`` (or a subclass keeping its forward) whose lookup is a plain gather: ``max_norm``
    rewrites the table in place on every lookup, which no stored integer table can follow."""
    return isinstance(module, nn.Embedding) and type(module).forward is nn.Embedding.forward and module.max_norm is None


class QuantEmbedding(nn.Module):
    """Fake-quantizes the rows ``layer`` looks up (ARQ, axis 0 of the table: one scale per row)."""

    def __init__(self, layer: nn.Embedding, config: LayerConfig) -> None:
        super().__init__()
        if not quantizable_embedding(layer):
            raise TypeError(f"{type(layer).__name__} is no embedding quantlib can quantize")
        weight = config.retrain_weight_config
        self.layer = layer
        self.weight_quant = WeightQuantizer(BITS[weight.dst_type], channel_wise=weight.channel_wise, axis=0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.weight_quant.channel_wise:
            return self._lookup(ids, self.weight_quant(self.layer.weight))
        rows = self._lookup(ids, self.layer.weight)
        return self.weight_quant(rows.reshape(-1, rows.shape[-1])).reshape(rows.shape)

    def _lookup(self, ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        return F.embedding(ids, table, layer.padding_idx, None, 2.0, layer.scale_grad_by_freq, layer.sparse)

    @torch.no_grad()
    def quantized_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The int8 table and its scales (one per row, or one), as deployed."""
        return self.weight_quant.quantize(self.layer.weight.detach().float())
