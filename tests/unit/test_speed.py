"""The speed figure: the FP32 twin is the same network without its Q/DQ pairs, and both are timed."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from quantlib import create_quant_retrain_config, create_quant_retrain_model, save_quant_retrain_model
from quantlib.export.speed import float_twin, measure_speed
from quantlib.inputs import Inputs
from quantlib.metrics import sqnr_db


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, Path, np.ndarray]:
    torch.manual_seed(0)
    model = ConvNet().eval()
    x = torch.randn(16, 3, 8, 8)
    folder = tmp_path_factory.mktemp("speed")
    create_quant_retrain_config(folder / "config.json", model, (x,))
    qat = create_quant_retrain_model(folder / "config.json", model, folder / "record.txt", (x,))
    qat(x)  # calibration
    fake, deploy = save_quant_retrain_model(
        folder / "config.json", qat.eval(), folder / "record.txt", folder / "model", (x[:2],)
    )
    return model, fake, deploy, x.numpy()


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_the_twin_is_the_fp32_network(exported: tuple[nn.Module, Path, Path, np.ndarray]) -> None:
    model, fake, _, x = exported
    quantized = onnx.load(str(fake))
    twin = float_twin(quantized)
    onnx.checker.check_model(twin)
    ops = collections.Counter(node.op_type for node in twin.graph.node)
    assert not {"QuantizeLinear", "DequantizeLinear"} & set(ops)
    before = collections.Counter(node.op_type for node in quantized.graph.node)
    assert ops["Conv"] == before["Conv"] == 1 and ops["Gemm"] == before["Gemm"] == 1
    assert len(twin.graph.initializer) < len(quantized.graph.initializer), "scales and zero points are gone"
    reference = model(torch.from_numpy(x)).detach().numpy()
    # grid-valued weights and float activations: close to FP32, closer than the quantized model
    assert sqnr_db(reference, _run(twin, x)) > max(30.0, sqnr_db(reference, _run(quantized, x)))


def test_speed_is_measured_for_both_models_at_each_batch(exported: tuple[nn.Module, Path, Path, np.ndarray]) -> None:
    _, fake, deploy, x = exported
    speed = measure_speed(fake, deploy, Inputs({"input": x[:4]}), [1, 8])
    assert speed.batch_sizes == [1, 8] and speed.threads == 1
    assert all(ms > 0 for ms in (*speed.fp32_ms, *speed.int8_ms))
    assert speed.int8_bytes == deploy.stat().st_size and speed.fp32_bytes > speed.int8_bytes  # int8 weights
    assert speed.latency_ratio == pytest.approx([i / f for i, f in zip(speed.int8_ms, speed.fp32_ms, strict=True)])
    assert speed.to_dict()["size_ratio"] == pytest.approx(speed.size_ratio, abs=1e-4)
