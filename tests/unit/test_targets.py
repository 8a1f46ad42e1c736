"""Deploy targets: onnxruntime-cpu's export runs on integer kernels and computes what QAT simulated.

The optimized graph onnxruntime builds (``SessionOptions.optimized_model_filepath``) says
which kernels run. A conv whose output only feeds the next layer's input quantizer becomes a
QLinearConv once its bias is int32 on the accumulator's grid; QAT rounds the bias the same
way, so the deployed model agrees with the simulation to float rounding.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantlib import create_quant_retrain_config, create_quant_retrain_model, save_quant_retrain_model
from quantlib.config import ConfigError, check_target
from quantlib.data import validate_arrays
from quantlib.errors import SpecError
from quantlib.export.speed import optimized_ops
from quantlib.export.tensorrt_rules import COMMUTING, tensorrt_violations
from quantlib.graph.analysis import op_name
from quantlib.inputs import Inputs
from quantlib.layers import QuantLayer
from quantlib.loop import predict_onnx
from quantlib.metrics import sqnr_db, top1_agreement
from quantlib.prepare import default_config
from quantlib.quant import ActivationQuantizer
from quantlib.run import run_qat
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


def calibrated_export(model: nn.Module, x: torch.Tensor, target: Target, folder: Path) -> tuple[nn.Module, Path]:
    """The QAT model calibrated on ``x`` (in eval mode) and its deploy model."""
    create_quant_retrain_config(folder / "config.json", model, (x[:2],))
    qat = create_quant_retrain_model(folder / "config.json", model, folder / "record.txt", (x[:2],), target=target)
    with torch.no_grad():
        qat(x)  # calibrates
    _, deploy = save_quant_retrain_model(
        folder / "config.json", qat.eval(), folder / "record.txt", folder / "m", (x[:2],)
    )
    return qat, deploy


def export(model: nn.Module, target: Target, folder: Path) -> tuple[nn.Module, Path]:
    return calibrated_export(
        model, torch.randn(50, 3, 16, 16, generator=torch.Generator().manual_seed(1)), target, folder
    )


def deployed_vs_simulated(qat: nn.Module, deploy: Path, *, integer_kernels: bool = True) -> tuple[float, float]:
    x = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        simulated = qat(x).numpy()
    deployed = predict_onnx(deploy, Inputs({"input": x.numpy()}), integer_kernels=integer_kernels)
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
    qat, deploy = calibrated_export(net, x, "onnxruntime-cpu", tmp_path)
    with torch.no_grad():
        simulated, reference = qat(x).numpy(), net(x).numpy()
    session = ort.InferenceSession(str(deploy), providers=["CPUExecutionProvider"])
    deployed = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert sqnr_db(reference, simulated) > 20 and sqnr_db(simulated, deployed) > 40


class Branchy(nn.Module):
    """The patterns between layers: max pooling, a residual add, a concat of two branches,
    average pooling, global pooling, and a tensor read by a conv and an add at once."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 16)
        self.pool = nn.MaxPool2d(2)
        self.body = nn.Sequential(conv_bn_relu(16, 16), nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.left, self.right = conv_bn_relu(16, 8), conv_bn_relu(16, 8)
        self.mix = nn.Conv2d(16, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        x = torch.relu(x + self.body(x))
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        x = F.avg_pool2d(self.mix(x), 2)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@pytest.fixture(scope="module")
def branchy() -> nn.Module:
    torch.manual_seed(0)
    return Branchy().eval()


def test_onnxruntime_cpu_keeps_adds_pools_and_concats_in_int8(branchy: nn.Module, tmp_path: Path) -> None:
    qat, deploy = export(branchy, "onnxruntime-cpu", tmp_path)
    ops = optimized_ops(deploy)
    assert ops["QLinearConv"] == 6 and ops["QGemm"] == 1, ops  # every conv, the classifier
    assert ops["QLinearAdd"] == 1 and ops["QLinearConcat"] == 1 and ops["QLinearAveragePool"] == 1, ops
    assert sum(ops[op] for op in ("Conv", "FusedConv", "Add", "Concat", "AveragePool")) == 0, ops
    # Q/DQ left only where the float graph starts and ends, and around the global pooling's ReduceMean
    assert ops["QuantizeLinear"] <= 2 and ops["DequantizeLinear"] <= 2, ops
    sqnr, agreement = deployed_vs_simulated(qat, deploy)
    assert agreement >= 0.999 and sqnr >= 40, (sqnr, agreement)


def test_one_quantizer_per_tensor_shared_by_its_readers(branchy: nn.Module, tmp_path: Path) -> None:
    """The relu after the add feeds both branches: one quantizer, one Q in the export, so the
    add has the single Q consumer its fusion needs; the quantizer sits before the max pooling."""
    x = torch.randn(4, 3, 16, 16)
    create_quant_retrain_config(tmp_path / "config.json", branchy, (x[:2],))
    qat = create_quant_retrain_model(
        tmp_path / "config.json", branchy, tmp_path / "r.txt", (x[:2],), target="onnxruntime-cpu"
    )
    layers = dict(qat.named_modules())
    left, right = layers["left.0"], layers["right.0"]
    assert isinstance(left, QuantLayer) and isinstance(right, QuantLayer)
    assert left.input_quantized and right.input_quantized and left.act_quant is right.act_quant
    quantizers = {id(m) for m in qat.modules() if isinstance(m, ActivationQuantizer)}
    # input, stem relu, body relu, body bn (into the add), add relu, two branch relus (into the
    # concat), concat, mix conv (into the average pool), average pool, global pool
    assert len(quantizers) == 11
    readers = [n.args[0] for n in qat.graph.nodes if n.op == "call_module" and n.target.endswith("_quant")]
    assert "max_pool2d" in {op_name(n) for n in qat.graph.nodes}
    assert "max_pool2d" not in {op_name(n) for n in readers}  # quantized before the pooling, not after


def test_a_model_that_does_not_export_keeps_its_form(tmp_path: Path) -> None:
    """A batch fixed in the model's code: no graph to place quantizers in, so only its layers'
    inputs are quantized, and it still trains and deploys."""

    class FixedBatch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 6 * 6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.conv(x)).reshape(4, -1))

    x = torch.randn(4, 3, 8, 8)
    create_quant_retrain_config(tmp_path / "config.json", FixedBatch(), (x,))
    qat = create_quant_retrain_model(
        tmp_path / "config.json", FixedBatch(), tmp_path / "r.txt", (x,), target="onnxruntime-cpu"
    )
    assert type(qat).__name__ == "FixedBatch"
    assert all(not layer.input_quantized for layer in qat.modules() if isinstance(layer, QuantLayer))


class Excited(nn.Module):
    """EfficientNet's patterns: SiLU, squeeze-and-excite (global pooling, sigmoid, a product), residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.SiLU())
        self.squeeze, self.excite = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.project = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        gate = torch.sigmoid(self.excite(F.silu(self.squeeze(F.adaptive_avg_pool2d(h, 1)))))
        h = h + self.project(h * gate)
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def test_onnxruntime_cpu_runs_silu_and_squeeze_excite_in_int8(tmp_path: Path) -> None:
    """SiLU is split into x * sigmoid(x) so both halves have integer kernels; global pooling is
    written as GlobalAveragePool (torch's ReduceMean has none)."""
    torch.manual_seed(0)
    qat, deploy = export(Excited().eval(), "onnxruntime-cpu", tmp_path)
    ops = optimized_ops(deploy)
    # two SiLUs (a sigmoid and a product each), the gate's sigmoid and its product
    assert ops["QLinearConv"] == 4 and ops["QLinearSigmoid"] == 3 and ops["QLinearMul"] == 3, ops
    assert ops["QLinearGlobalAveragePool"] == 2 and ops["QLinearAdd"] == 1, ops
    assert sum(ops[op] for op in ("Conv", "FusedConv", "Mul", "Sigmoid", "ReduceMean")) == 0, ops
    sqnr, agreement = deployed_vs_simulated(qat, deploy)
    assert agreement >= 0.999 and sqnr >= 40, (sqnr, agreement)


def _dequantized(graph: onnx.GraphProto, name: str) -> bool:
    """Whether tensor ``name`` comes from a DequantizeLinear, through ops that commute with it."""
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get(name)
    while node is not None and node.op_type in COMMUTING:
        node = producers.get(node.input[0])
    return node is not None and node.op_type == "DequantizeLinear"


def test_tensorrt_export_follows_its_rules_and_matches_the_simulation(branchy: nn.Module, tmp_path: Path) -> None:
    qat, deploy = export(branchy, "tensorrt", tmp_path)
    model = onnx.load(str(deploy))
    assert tensorrt_violations(model) == []
    # the residual add: the body's conv output left to TensorRT to fuse, the identity quantized
    adds = [n for n in model.graph.node if n.op_type == "Add" and not any(i.endswith("bias") for i in n.input)]
    residual = [n for n in adds if any(_dequantized(model.graph, i) for i in n.input)]
    assert len(residual) == 1 and not all(_dequantized(model.graph, i) for i in residual[0].input)
    # its Q/DQ arithmetic, as TensorRT computes it: onnxruntime's CPU int8 x int8 kernels saturate without VNNI
    sqnr, agreement = deployed_vs_simulated(qat, deploy, integer_kernels=False)
    assert agreement >= 0.999 and sqnr >= 40, (sqnr, agreement)


def test_the_rules_catch_an_export_for_another_runtime(model: nn.Module, tmp_path: Path) -> None:
    _, deploy = export(model, "onnxruntime-cpu", tmp_path)
    problems = tensorrt_violations(onnx.load(str(deploy)))
    assert any("zero point uint8" in p for p in problems) and any("int32 bias" in p for p in problems), problems


def test_a_symmetric_quantizer_has_zero_point_zero_and_one_learned_clip() -> None:
    quantizer = ActivationQuantizer(8, batch_num=1, symmetric=True, fixed_min=True)
    x = torch.rand(1000) * 3  # non-negative: TensorRT's grid stays symmetric anyway
    quantizer(x)
    scale, offset = quantizer.qparams()
    assert int(offset) == 0 and torch.isclose(scale, quantizer.clip_max.detach() / 127)
    assert [name for name, _ in quantizer.named_parameters()] == ["clip_max"]
    quantizer(x.requires_grad_()).sum().backward()
    assert quantizer.clip_max.grad is not None and quantizer.clip_max.grad != 0


@pytest.mark.parametrize("target", ["onnxruntime-cpu", "tensorrt"])
def test_int4_is_refused_where_the_target_has_no_int4_kernels(model: nn.Module, target: Target) -> None:
    config = default_config(model, None)
    config.layers["fc"].retrain_weight_config.dst_type = "INT4"
    with pytest.raises(ConfigError, match=f"target {target} has no kernels for INT4") as err:
        check_target(config, target)
    assert err.value.field == "fc.retrain_weight_config.dst_type"
    check_target(config, "generic-qdq")
    with pytest.raises(SpecError) as spec_err:
        parse_spec({"target": target, "accuracy": {"weight_bits_budget": 6.0}})
    assert spec_err.value.field == "accuracy.weight_bits_budget"
    assert parse_spec({"target": "generic-qdq", "accuracy": {"weight_bits_budget": 6.0}}).target == "generic-qdq"


def test_sizes_and_integer_tensors_are_never_quantized(tmp_path: Path) -> None:
    """``operator.add`` on symbolic sizes and an add of int64 tensors are named ``add`` in the
    graph too; only float activations get quantizers."""

    class Indexed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8 * 64, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.conv(x))
            counts = (h.mean(dim=(0, 2, 3)) > 0.1).long() + 1  # an add of int64 tensors
            h = h * counts.view(1, -1, 1, 1)  # a product of a float and an int64 tensor
            return self.fc((h + h).reshape(h.shape[0] + 0, -1))  # a size sum

    x = torch.randn(4, 3, 8, 8)
    create_quant_retrain_config(tmp_path / "config.json", Indexed(), (x,))
    qat = create_quant_retrain_model(
        tmp_path / "config.json", Indexed().eval(), tmp_path / "r.txt", (x,), target="onnxruntime-cpu"
    )
    quantizers = [n for n in qat.graph.nodes if n.op == "call_module" and n.target.endswith("_quant")]
    assert all(n.args[0].meta["val"].is_floating_point() for n in quantizers)
    with torch.no_grad():
        qat(x)
        assert qat(x).shape == (4, 4)


def test_a_pt2_with_residuals_trains_through_shared_quantizers(branchy: nn.Module, tmp_path: Path) -> None:
    """The service's path: a ``.pt2`` program, run_qat with the default target, label-free
    fine-tuning of the shared clips; what ships runs in int8 and is what was trained."""
    x = torch.randn(2, 3, 16, 16)
    program = torch.export.export(branchy, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    rng = np.random.default_rng(0)
    arrays = {
        name: rng.standard_normal((n, 3, 16, 16)).astype(np.float32) for name, n in (("x_train", 64), ("x_eval", 32))
    }
    report = run_qat(program, validate_arrays(arrays), tmp_path, spec=QATSpec(epochs=1, lr=1e-3, batch_size=16))
    ops = optimized_ops(report.files["deploy_model"])
    assert ops["QLinearAdd"] == 1 and ops["QLinearConcat"] == 1 and ops["QLinearConv"] == 6, ops
    assert report.deploy_vs_simulated.agreement >= 0.999 and report.deploy_vs_simulated.sqnr_db >= 40
    assert report.accuracy["int8_onnxruntime"].sqnr_db > 15  # against FP32: quantized, not broken


SATURATING = {
    "linear": (nn.Linear(64, 8), (64,)),
    "conv": (nn.Conv2d(8, 8, 3, padding=1), (8, 6, 6)),
    "grouped conv": (nn.Conv2d(16, 16, 3, padding=1, groups=4), (16, 6, 6)),
    "depthwise conv": (nn.Conv2d(16, 16, 3, padding=1, groups=16), (16, 6, 6)),
}


@pytest.mark.parametrize("kind", SATURATING)
def test_extreme_weights_and_activations_deploy_as_simulated(kind: str, tmp_path: Path) -> None:
    """Every input at the top of its uint8 grid times every weight at 127 overflows the 16-bit pair sums of
    onnxruntime's uint8 x int8 kernels on x86 CPUs without VNNI (this one's AVX2: 0.3 dB with full-range
    weights). The GEMM-run layers get a 7-bit grid there; a depthwise conv has its own kernel and keeps 8 bits."""
    layer, shape = SATURATING[kind]
    with torch.no_grad():
        layer.weight.fill_(1.0)
        cast(torch.Tensor, layer.bias).zero_()
    model = nn.Sequential(layer, nn.Flatten(), nn.LazyLinear(4))
    calibration = torch.rand(8, *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    model(calibration)  # materialises the lazy layer
    qat, deploy = calibrated_export(model, calibration, "onnxruntime-cpu", tmp_path)
    grids = {name: q.weight_quant.bits for name, q in qat.named_modules() if isinstance(q, QuantLayer)}
    assert grids == {"0": 8 if kind == "depthwise conv" else 7, "2": 7}, grids
    x = torch.ones(4, *shape)  # above the calibrated range: every input quantizes to 255
    with torch.no_grad():
        simulated = qat(x).numpy()
    deployed = predict_onnx(deploy, Inputs({"input": x.numpy()}))
    assert sqnr_db(simulated, deployed) >= 40
    assert optimized_ops(deploy)["QLinearConv" if "conv" in kind else "QGemm"] >= 1  # the integer kernel ran
