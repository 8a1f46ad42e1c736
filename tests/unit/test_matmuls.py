"""Activation x activation matmuls quantized on request: attention written out, both inputs quantized,
deployed as onnxruntime's integer matmuls computing what QAT simulated."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantlib import create_quant_retrain_config, create_quant_retrain_model, save_quant_retrain_model
from quantlib.config import ConfigError, load_config, load_simple_config, parse_config
from quantlib.export.speed import optimized_ops
from quantlib.graph import trainable_module
from quantlib.matmuls import MatmulInputQuantizer, write_out_attention
from quantlib.metrics import sqnr_db, top1_agreement
from quantlib.prepare import default_config
from support.zoo import ZOO

BERT = next(entry for entry in ZOO if entry.name == "bert")


class Attention(nn.Module):
    """One head of attention through torch's fused op, with a mask of either kind, or causal."""

    def __init__(self, mask: str) -> None:
        super().__init__()
        self.mask = mask
        self.qkv = nn.Linear(16, 48)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unsqueeze(1).chunk(3, dim=-1)
        if self.mask == "causal":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        mask = keep[:, None, None, :].bool()
        if self.mask == "float":
            mask = torch.zeros(mask.shape).masked_fill(~mask, -1e4)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("mask", ["bool", "float", "causal"])
def test_attention_written_out_computes_what_the_fused_op_computes(mask: str) -> None:
    torch.manual_seed(0)
    model = Attention(mask).eval()
    x, keep = torch.randn(3, 10, 16), (torch.arange(10) < torch.tensor([[10], [6], [3]])).long()
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (x, keep), dynamic_shapes=({0: batch}, {0: batch}), strict=False)
    gm = trainable_module(program)
    assert write_out_attention(gm) == 1
    assert not [n for n in gm.graph.nodes if "scaled_dot_product_attention" in str(n.target)]
    with torch.no_grad():
        torch.testing.assert_close(gm(x, keep), model(x, keep), rtol=1e-5, atol=1e-5)


def test_the_config_key_is_off_by_default_and_checked(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    assert not default_config(model).quantize_activation_matmuls
    assert "quantize_activation_matmuls" not in default_config(model).to_file_dict()  # AMCT's file, unchanged
    on = parse_config({"version": 1, "quantize_activation_matmuls": True})
    assert on.quantize_activation_matmuls and on.to_file_dict()["quantize_activation_matmuls"] is True
    with pytest.raises(ConfigError) as refused:
        parse_config({"quantize_activation_matmuls": "yes"})
    assert refused.value.field == "quantize_activation_matmuls"
    assert load_simple_config({"quantize_activation_matmuls": True}).quantize_activation_matmuls


def test_bert_attention_matmuls_deploy_as_integer_matmuls_computing_the_simulation(tmp_path: Path) -> None:
    """BERT (SDPA inside): its 2 x 2 attention matmuls get both inputs quantized, the softmax output
    one-sided; onnxruntime runs every matmul in the integer domain and agrees with the simulation."""
    calibration, evaluation = BERT.inputs(32, 0), BERT.inputs(64, 1)
    model = BERT.model(calibration)
    example = tuple(x[:2] for x in calibration)
    config, record = tmp_path / "config.json", tmp_path / "record.txt"
    create_quant_retrain_config(config, model, example)
    config.write_text(json.dumps({**json.loads(config.read_text()), "quantize_activation_matmuls": True}))
    assert load_config(config).quantize_activation_matmuls
    qat = create_quant_retrain_model(config, model, record, example, target="onnxruntime-cpu")
    quantizers = {name: m for name, m in qat.named_modules() if isinstance(m, MatmulInputQuantizer)}
    assert len(quantizers) == 8
    assert sum(m.fixed_min for m in quantizers.values()) == 2  # the attention probabilities, >= 0
    with torch.no_grad():
        qat(*calibration)
    qat.eval()
    _, deploy = save_quant_retrain_model(config, qat, record, tmp_path / "m", example, input_names=BERT.input_names)
    ops = optimized_ops(deploy)
    assert ops["MatMulIntegerToFloat"] + ops["QLinearMatMul"] >= 12 + 4 and ops["MatMul"] == 0, ops
    with torch.no_grad():
        simulated = qat(*evaluation).numpy()
    session = ort.InferenceSession(str(deploy), providers=["CPUExecutionProvider"])
    deployed = session.run(None, {n: x.numpy() for n, x in zip(BERT.input_names, evaluation, strict=True)})[0]
    assert sqnr_db(simulated, deployed) >= 40 and top1_agreement(simulated, deployed) >= 0.999
