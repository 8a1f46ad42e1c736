"""Deploy targets: onnxruntime-cpu's export runs on integer kernels and computes what QAT simulated.

The optimized graph onnxruntime builds (``SessionOptions.optimized_model_filepath``) says
which kernels run. A conv whose output only feeds the next layer's input quantizer becomes a
QLinearConv once its bias is int32 on the accumulator's grid; QAT rounds the bias the same
way, so the deployed model agrees with the simulation to float rounding.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from torch import nn

from quantlib import create_quant_retrain_config, create_quant_retrain_model, save_quant_retrain_model
from quantlib.export.speed import optimized_ops
from quantlib.layers import QuantLayer
from quantlib.metrics import sqnr_db, top1_agreement
from quantlib.spec import QATSpec, Target, parse_spec


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Plain(nn.Module):
    """Four conv-bn-relu (gammas of both signs), a conv with its own bias, pooling, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(3, 16), conv_bn_relu(16, 32, 2), conv_bn_relu(32, 32), conv_bn_relu(32, 64, 2)
        )
        self.last = nn.Conv2d(64, 64, 3, padding=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.last(self.features(x))).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    net = Plain()
    for bn in net.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(-1.5, 1.5)
            bn.bias.data.uniform_(-0.3, 0.3)
    return net.eval()


def export(model: nn.Module, target: Target, folder: Path) -> tuple[nn.Module, Path]:
    x = torch.randn(50, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    create_quant_retrain_config(folder / "config.json", model, (x[:2],))
    qat = create_quant_retrain_model(folder / "config.json", model, folder / "record.txt", (x[:2],), target=target)
    with torch.no_grad():
        qat(x)  # calibrates
    _, deploy = save_quant_retrain_model(
        folder / "config.json", qat.eval(), folder / "record.txt", folder / "m", (x[:2],)
    )
    return qat, deploy


def deployed_vs_simulated(qat: nn.Module, deploy: Path) -> tuple[float, float]:
    x = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        simulated = qat(x).numpy()
    session = ort.InferenceSession(str(deploy), providers=["CPUExecutionProvider"])
    deployed = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return sqnr_db(simulated, deployed), top1_agreement(simulated, deployed)


def test_onnxruntime_cpu_runs_integer_convolutions_and_matches_the_simulation(model: nn.Module, tmp_path: Path) -> None:
    qat, deploy = export(model, "onnxruntime-cpu", tmp_path)
    assert all(layer.int32_bias for layer in qat.modules() if isinstance(layer, QuantLayer))
    ops = optimized_ops(deploy)
    # the four convs whose outputs feed the next conv's quantizer; the last feeds the float pooling
    assert ops["QLinearConv"] == 4, ops
    assert ops["QGemm"] == 1, ops
    sqnr, agreement = deployed_vs_simulated(qat, deploy)
    assert agreement == 1.0 and sqnr > 60, (sqnr, agreement)  # the issue asks >= 40 dB, >= 99.9 %


def test_generic_qdq_keeps_float_convolutions_and_its_own_match(model: nn.Module, tmp_path: Path) -> None:
    qat, deploy = export(model, "generic-qdq", tmp_path)
    ops = optimized_ops(deploy)
    assert ops["QLinearConv"] == 0 and ops["Conv"] + ops["FusedConv"] == 5, ops
    sqnr, agreement = deployed_vs_simulated(qat, deploy)
    assert agreement == 1.0 and sqnr > 40, (sqnr, agreement)


def test_the_simulated_bias_is_the_int32_one(model: nn.Module, tmp_path: Path) -> None:
    """Rounding the bias is visible (the simulation differs from a float bias) and is what ships."""
    qat, deploy = export(model, "onnxruntime-cpu", tmp_path)
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        rounded = qat(x)
        for layer in qat.modules():
            if isinstance(layer, QuantLayer):
                layer.int32_bias = False
        floating = qat(x)
    assert not torch.equal(rounded, floating)
    assert sqnr_db(rounded.numpy(), floating.numpy()) > 30  # a small change: the accumulator's grid is fine


def test_target_is_a_spec_choice() -> None:
    assert QATSpec().target == "onnxruntime-cpu"
    with pytest.raises(ValueError, match="target"):
        parse_spec({"target": "tflite"})


def test_a_bias_too_wide_for_the_accumulator_stays_float(tmp_path: Path) -> None:
    """Vanishing activations make the accumulator's steps tiny: an int32 bias would overflow the
    kernel's sum, so that layer keeps a float bias, in the simulation and in the export alike."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)).eval()
    with torch.no_grad():
        net[0].weight.mul_(1e-6)  # its outputs, the second conv's inputs, are ~1e-6
        net[0].bias.zero_()
        net[2].bias.fill_(5.0)
    x = torch.randn(50, 3, 8, 8)
    create_quant_retrain_config(tmp_path / "config.json", net, (x[:2],))
    qat = create_quant_retrain_model(
        tmp_path / "config.json", net, tmp_path / "r.txt", (x[:2],), target="onnxruntime-cpu"
    )
    with torch.no_grad():
        qat(x)
    _, deploy = save_quant_retrain_model(
        tmp_path / "config.json", qat.eval(), tmp_path / "r.txt", tmp_path / "m", (x[:2],)
    )
    with torch.no_grad():
        simulated, reference = qat(x).numpy(), net(x).numpy()
    session = ort.InferenceSession(str(deploy), providers=["CPUExecutionProvider"])
    deployed = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert sqnr_db(reference, simulated) > 20 and sqnr_db(simulated, deployed) > 40
