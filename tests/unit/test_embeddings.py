"""Embedding tables quantized per row: what QAT simulates, what is deployed, and where it is refused.

The zoo (tests/unit/test_zoo.py) checks deploy = simulation on BERT, DistilBERT, GPT-2 and MiniLM
with their tables quantized; these tests pin the arithmetic and the config rules.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantlib import create_quant_retrain_config, create_quant_retrain_model, save_quant_retrain_model
from quantlib.config import ConfigError, LayerConfig, WeightConfig, load_config
from quantlib.embedding import QuantEmbedding
from quantlib.layers import QuantLayer
from quantlib.prepare import default_config, layer_types
from quantlib.quant.functional import ARQFunction

VOCAB, DIM = 300, 24


class Bag(nn.Module):
    """Token ids -> mean of their embeddings -> classes: a table and one Linear."""

    def __init__(self, tied: bool = False) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, DIM, padding_idx=0)
        self.head = nn.Linear(DIM, VOCAB if tied else 5)
        if tied:
            self.head.weight = self.tokens.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.tokens(ids).mean(1))


def _ids(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, 12), generator=torch.Generator().manual_seed(seed))


def _table() -> nn.Embedding:
    torch.manual_seed(0)
    table = nn.Embedding(VOCAB, DIM)
    with torch.no_grad():
        table.weight[7] *= 40  # one row far wider than the others: per-row scales keep the rest fine
    return table


@pytest.mark.parametrize("channel_wise", [True, False])
def test_the_rows_read_are_the_rows_of_the_quantized_table(channel_wise: bool) -> None:
    """Quantizing only the looked-up rows gives the integers of the whole table (a row's scale is its own)."""
    table = _table()
    config = LayerConfig(retrain_weight_config=WeightConfig(channel_wise=channel_wise))
    quantized = QuantEmbedding(table, config)
    ids = _ids(16, 1)
    whole = ARQFunction.apply(table.weight.detach(), 0 if channel_wise else None, 8)
    assert torch.equal(quantized(ids), F.embedding(ids, whole))
    q, scale = quantized.quantized_table()
    assert q.dtype == torch.int8 and scale.numel() == (VOCAB if channel_wise else 1)
    rows = q[ids].float() * (scale[ids].unsqueeze(-1) if channel_wise else scale)
    torch.testing.assert_close(rows, quantized(ids), rtol=0, atol=1e-6)


def test_per_row_scales_keep_an_outlier_row_from_coarsening_the_table() -> None:
    table, ids = _table(), _ids(64, 2)
    errors = {}
    for channel_wise in (True, False):
        config = LayerConfig(retrain_weight_config=WeightConfig(channel_wise=channel_wise))
        with torch.no_grad():
            looked_up = QuantEmbedding(table, config)(ids)
            errors[channel_wise] = float((looked_up - table(ids)).pow(2).mean())
    assert errors[True] * 100 < errors[False]


def test_training_moves_the_rows_it_read_straight_through() -> None:
    table = _table()
    quantized = QuantEmbedding(table, LayerConfig())
    ids = torch.tensor([[1, 2, 2]])
    quantized(ids).sum().backward()
    grad = table.weight.grad
    assert grad is not None
    assert torch.equal(grad[2], torch.full((DIM,), 2.0)) and torch.equal(grad[1], torch.ones(DIM))
    assert not grad[3:].any()


def test_a_text_model_deploys_its_table_as_int8_rows(tmp_path: Path) -> None:
    """Default config lists the table; the deploy model holds it as int8 (a quarter of the bytes), gathers
    int8 rows and scales them, and computes what QAT simulated."""
    model, ids, example = Bag().eval(), _ids(64, 3), (_ids(2, 4),)
    config, record = tmp_path / "config.json", tmp_path / "record.txt"
    create_quant_retrain_config(config, model, example)
    assert "tokens" in load_config(config).enabled_layers()
    qat = create_quant_retrain_model(config, model, record, example, target="onnxruntime-cpu")
    assert isinstance(qat.get_submodule("tokens"), QuantEmbedding)
    with torch.no_grad():
        qat(ids)
    qat.eval()
    _, deploy = save_quant_retrain_model(config, qat, record, tmp_path / "m", example, input_names=("ids",))
    graph = onnx.load(str(deploy)).graph
    tables = [t for t in graph.initializer if list(t.dims) == [VOCAB, DIM]]
    assert [t.data_type for t in tables] == [onnx.TensorProto.INT8]
    gathers = [n for n in graph.node if n.op_type == "Gather" and tables[0].name in n.input]
    assert gathers and gathers[0].input[0] == tables[0].name  # the int8 table itself is gathered
    session = ort.InferenceSession(str(deploy), providers=["CPUExecutionProvider"])
    deployed = session.run(None, {"ids": ids.numpy()})[0]
    with torch.no_grad():
        simulated = qat(ids).numpy()
    np.testing.assert_allclose(deployed, simulated, rtol=0, atol=1e-4 * float(np.abs(simulated).max()))


def test_tensorrt_leaves_tables_in_float_and_refuses_one_enabled(tmp_path: Path) -> None:
    model, example = Bag().eval(), (_ids(2, 4),)
    create_quant_retrain_config(tmp_path / "config.json", model, example, target="tensorrt")
    config = load_config(tmp_path / "config.json")
    assert not config.layers["tokens"].retrain_enable and config.layers["head"].retrain_enable
    config.layers["tokens"].retrain_enable = True
    config.write(tmp_path / "config.json")
    with pytest.raises(ConfigError, match="tensorrt has no kernel that gathers int8 rows") as refused:
        create_quant_retrain_model(tmp_path / "config.json", model, tmp_path / "record.txt", example, target="tensorrt")
    assert refused.value.field == "tokens.retrain_enable"


def test_a_table_can_be_left_in_float_by_type(tmp_path: Path) -> None:
    simple = tmp_path / "simple.yaml"
    simple.write_text("skip_layer_types: [Embedding]\n")
    model, example = Bag().eval(), (_ids(2, 4),)
    create_quant_retrain_config(tmp_path / "config.json", model, example, config_defination=simple)
    qat = create_quant_retrain_model(tmp_path / "config.json", model, tmp_path / "record.txt", example)
    assert isinstance(qat.get_submodule("tokens"), nn.Embedding)
    assert isinstance(qat.get_submodule("head"), QuantLayer)


def test_tables_that_cannot_be_stored_as_integers_are_named_so() -> None:
    """A tied table is quantized through the layer that shares it; ``max_norm`` rewrites rows on lookup."""
    assert layer_types(Bag(tied=True))["tokens"] == "Embedding with a tied weight"
    renormed = nn.Sequential(nn.Embedding(10, 4, max_norm=1.0))
    assert layer_types(renormed)["0"] == "Embedding with max_norm"
    config = default_config(Bag(tied=True), None)
    assert list(config.layers) == ["head"]
