"""The four AMCT entry points end to end on tiny models, on CPU.

create_quant_retrain_config -> create_quant_retrain_model -> SGD -> save_quant_retrain_model,
then the exported ONNX models run in onnxruntime at a batch size the example never had
and must compute what the QAT model computes in eval mode.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto
from torch import nn

import quantlib
from quantlib.config import ConfigError
from quantlib.layers import QuantLayer
from support.toy_models import (
    CONV_BN_INPUT,
    LAYER_MODELS,
    MIXED_MODELS,
    NUM_CLASSES,
    ConvBnNet,
    read_json,
    set_dst_type,
    train_steps,
    write_json,
)

EVAL_BATCH = 2000  # the example input has batch 1: the exported batch axis must be dynamic

SUPPORTED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear)


# ------------------------------------------------------------------------ helpers


@dataclass
class Exported:
    """One finished pipeline run: the QAT model (eval mode) and what was written."""

    qat: nn.Module
    input_shape: tuple[int, ...]
    config: Path
    record: Path
    fake: Path
    deploy: Path


def run_pipeline(
    model: nn.Module | torch.export.ExportedProgram,
    input_shape: tuple[int, ...],
    out: Path,
    *,
    dst_type: str = "INT8",
    edit_config: Callable[[dict], None] | None = None,
    example_batch: int = 1,
) -> Exported:
    """The documented user flow, with the default config (optionally edited)."""
    example = (torch.randn(example_batch, *input_shape),)
    config = out / "config.json"
    record = out / "record.txt"
    quantlib.create_quant_retrain_config(config, model, example)
    set_dst_type(config, dst_type)
    if edit_config is not None:
        data = read_json(config)
        edit_config(data)
        write_json(config, data)
    qat = quantlib.create_quant_retrain_model(config, model, record, example)
    train_steps(qat, input_shape)
    qat.eval()
    fake, deploy = quantlib.save_quant_retrain_model(config, qat, record, out / "net", example)
    return Exported(qat, input_shape, config, record, fake, deploy)


def run_onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def assert_onnx_matches_qat(case: Exported, path: Path) -> None:
    """onnxruntime computes what the QAT model computes in eval mode, at another batch size."""
    x = torch.randn(EVAL_BATCH, *case.input_shape)
    with torch.no_grad():
        expected = case.qat.eval()(x).numpy()
    got = run_onnx(path, x)
    assert got.shape == expected.shape == (EVAL_BATCH, NUM_CLASSES)
    agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    assert agreement >= 0.999, f"argmax agreement {agreement:.4f}"
    # Float order differs between runtimes; now and then a value lands on the other side
    # of a rounding boundary in a later quantizer and one row moves by a grid step.
    diff = np.abs(got - expected)
    scale = float(np.abs(expected).max())
    rows_off = float((diff > 1e-4 * scale).any(axis=1).mean())
    assert rows_off <= 0.005, f"{rows_off:.2%} of rows differ"
    assert diff.max() <= 0.02 * scale, f"max abs diff {diff.max():.3g} (outputs up to {scale:.3g})"


def initializers(path: Path) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in onnx.load(str(path)).graph.initializer}


def op_types(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def opset(path: Path) -> int:
    return next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))


def quant_layer_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, QuantLayer)]


def weight_initializers(path: Path) -> list[onnx.TensorProto]:
    """The stored weight of every Conv/ConvTranspose/Gemm, in graph order: the
    initializer its weight input is dequantized from."""
    graph = onnx.load(str(path)).graph
    inits = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    found = []
    for node in graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            dq = producers[node.input[1]]
            assert dq.op_type == "DequantizeLinear", f"{node.op_type} weight comes from {dq.op_type}"
            found.append(inits[dq.input[0]])
    return found


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Exported]:
    """Runs each (model kind, dst_type) once per module; several tests read the result."""
    cache: dict[tuple[str, str], Exported] = {}
    models = {**LAYER_MODELS, **MIXED_MODELS}

    def get(kind: str, dst_type: str = "INT8") -> Exported:
        if (kind, dst_type) not in cache:
            torch.manual_seed(0)
            build, shape = models[kind]
            out = tmp_path_factory.mktemp(f"{kind}-{dst_type}")
            cache[kind, dst_type] = run_pipeline(build(), shape, out, dst_type=dst_type)
        return cache[kind, dst_type]

    return get


# ----------------------------------------------------------------- layer types


@pytest.mark.parametrize("kind", list(LAYER_MODELS))
def test_layer_type_int8_round_trip(kind: str, pipeline: Callable[[str, str], Exported]) -> None:
    case = pipeline(kind, "INT8")
    layer = case.qat.get_submodule("0")
    assert isinstance(layer, QuantLayer) and isinstance(layer.layer, SUPPORTED_TYPES)
    assert isinstance(case.qat.get_submodule("3"), QuantLayer)  # the classifier too
    for path in (case.fake, case.deploy):
        onnx.checker.check_model(str(path))
        assert opset(path) == 18
        assert_onnx_matches_qat(case, path)
    fake_ops = op_types(case.fake)
    assert fake_ops.count("QuantizeLinear") == 4  # input + weight of both layers
    assert fake_ops.count("DequantizeLinear") == 4
    deploy_ops = op_types(case.deploy)
    assert deploy_ops.count("QuantizeLinear") == 2  # inputs only: weights are stored quantized
    assert deploy_ops.count("DequantizeLinear") == 4


@pytest.mark.parametrize("kind", list(LAYER_MODELS))
def test_deploy_model_stores_int8_weights(kind: str, pipeline: Callable[[str, str], Exported]) -> None:
    """Stored unsigned, shifted by 128 (onnxruntime's overflow-free 8-bit kernels)."""
    case = pipeline(kind, "INT8")
    layers = _quant_layers(case.qat)
    stored = weight_initializers(case.deploy)
    assert len(stored) == len(layers)
    for (name, layer), init in zip(layers, stored, strict=True):
        assert init.data_type == TensorProto.UINT8, name
        assert tuple(init.dims) == tuple(layer.layer.weight.shape)
        q, _ = layer.weight_quant.quantize(layer.layer.weight)
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(init).astype(np.int16) - 128, q.numpy())
    # no float copy of any weight is left in the deploy model
    weight_dims = {tuple(m.layer.weight.shape) for _, m in layers}
    float_dims = {tuple(i.dims) for i in initializers(case.deploy).values() if i.data_type == TensorProto.FLOAT}
    assert not weight_dims & float_dims


def _quant_layers(model: nn.Module) -> list[tuple[str, QuantLayer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLayer)]


def test_exported_batch_axis_is_dynamic(pipeline: Callable[[str, str], Exported]) -> None:
    case = pipeline("Conv2d", "INT8")
    for path in (case.fake, case.deploy):
        graph = onnx.load(str(path)).graph
        assert graph.input[0].type.tensor_type.shape.dim[0].dim_param
        assert graph.output[0].type.tensor_type.shape.dim[0].dim_param
        for batch in (1, 3):
            assert run_onnx(path, torch.randn(batch, *case.input_shape)).shape == (batch, NUM_CLASSES)


def test_deploy_model_is_about_4x_smaller_than_fp32(pipeline: Callable[[str, str], Exported]) -> None:
    """The fake-quant model keeps FP32 weights (an FP32 export plus QDQ nodes); the deploy
    model stores one byte per weight."""
    case = pipeline("Linear", "INT8")
    weights = sum(layer.layer.weight.numel() for _, layer in _quant_layers(case.qat))
    fp32_size = case.fake.stat().st_size
    deploy_size = case.deploy.stat().st_size
    assert fp32_size >= 4 * weights
    assert deploy_size <= 0.35 * fp32_size, (deploy_size, fp32_size)
    assert deploy_size >= weights  # int8 really stored, not dropped


@pytest.mark.parametrize("kind", list(MIXED_MODELS))
def test_int4_round_trip(kind: str, pipeline: Callable[[str, str], Exported]) -> None:
    """dst_type INT4 for data and weights: opset 21, int4 initialisers, same predictions."""
    case = pipeline(kind, "INT4")
    names = quant_layer_names(case.qat)
    assert len(names) >= 4
    for name in names:
        layer = case.qat.get_submodule(name)
        assert layer.act_quant.bits == 4 and layer.weight_quant.bits == 4
    for path in (case.fake, case.deploy):
        onnx.checker.check_model(str(path))
        assert opset(path) == 21
        assert_onnx_matches_qat(case, path)
    stored = weight_initializers(case.deploy)
    assert len(stored) == len(names)
    for name, init in zip(names, stored, strict=True):
        assert init.data_type == TensorProto.INT4, name
        values = onnx.numpy_helper.to_array(init).astype(np.int32)
        assert values.min() >= -8 and values.max() <= 7  # the whole int4 grid, as AMCT
        q, _ = case.qat.get_submodule(name).weight_quant.quantize(case.qat.get_submodule(name).layer.weight)
        np.testing.assert_array_equal(values, q.numpy())
    # activations are quantized to int4 too: every QuantizeLinear has an int4 zero point
    graph = onnx.load(str(case.deploy)).graph
    inits = initializers(case.deploy)
    quantizers = [node for node in graph.node if node.op_type == "QuantizeLinear"]
    assert len(quantizers) == len(names)
    for node in quantizers:
        assert inits[node.input[2]].data_type == TensorProto.INT4


def test_int4_record_and_layers(pipeline: Callable[[str, str], Exported]) -> None:
    case = pipeline("mixed_2d", "INT4")
    record = json.loads(case.record.with_suffix(".json").read_text())
    for name in quant_layer_names(case.qat):
        assert record[name]["data_bits"] == 4 and record[name]["weight_bits"] == 4
        assert -8 <= record[name]["offset_d"] <= 7


# ---------------------------------------------------------------- BatchNorm folding


@pytest.fixture(scope="module")
def conv_bn(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """conv-bn-relu net with a negative BN scale on some channels and a per-tensor conv2,
    trained (BN statistics move), then exported."""
    torch.manual_seed(0)
    model = ConvBnNet()
    with torch.no_grad():
        model.bn2.weight[::3] *= -1.0  # folding must flip these channels' integer weights

    def per_tensor_conv2(config: dict) -> None:
        config["conv2"]["retrain_weight_config"]["channel_wise"] = False

    return run_pipeline(model, CONV_BN_INPUT, tmp_path_factory.mktemp("conv-bn"), edit_config=per_tensor_conv2)


def test_bn_is_folded_and_export_matches(conv_bn: Exported) -> None:
    assert conv_bn.qat.conv1.folds_bn == "bn1" and conv_bn.qat.conv2.folds_bn == "bn2"
    assert conv_bn.qat.fc.folds_bn is None
    for path in (conv_bn.fake, conv_bn.deploy):
        ops = op_types(path)
        assert "BatchNormalization" not in ops
        assert ops.count("Conv") == 2
        assert_onnx_matches_qat(conv_bn, path)


def test_bn_statistics_were_trained(conv_bn: Exported) -> None:
    """Guard: folding trained (not initial) statistics is what the match above proves."""
    assert not torch.equal(conv_bn.qat.bn1.running_mean, torch.zeros(8))
    assert int(conv_bn.qat.bn1.num_batches_tracked) > 0


def test_no_fold_when_bn_does_not_follow_directly() -> None:
    """A BN that sees the conv output through a ReLU cannot be folded into its weights."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 16, 3))
    model.eval()
    from quantlib.graph import analyze_module

    facts = analyze_module(model, (torch.randn(1, 3, 6, 6),))
    assert facts.bn_after == {}


# ---------------------------------------------------------------------- the record

RECORD_BLOCK = re.compile(
    r'record \{\n  key: "(?P<key>[^"]+)"\n  value \{\n'
    r"    scale_d: (?P<scale_d>\S+)\n"
    r"    offset_d: (?P<offset_d>-?\d+)\n"
    r"(?P<scale_w>(?:    scale_w: \S+\n)+)"
    r"(?P<offset_w>(?:    offset_w: -?\d+\n)+)"
    r"  \}\n\}\n"
)


def parse_record(text: str) -> dict[str, dict[str, object]]:
    """AMCT's record text, parsed strictly: anything outside the block layout fails."""
    out: dict[str, dict[str, object]] = {}
    pos = 0
    for match in RECORD_BLOCK.finditer(text):
        assert match.start() == pos, f"unexpected text: {text[pos : match.start()]!r}"
        pos = match.end()
        out[match["key"]] = {
            "scale_d": float(match["scale_d"]),
            "offset_d": int(match["offset_d"]),
            "scale_w": [float(line.split(": ")[1]) for line in match["scale_w"].splitlines()],
            "offset_w": [int(line.split(": ")[1]) for line in match["offset_w"].splitlines()],
        }
    assert pos == len(text), f"unexpected text: {text[pos:]!r}"
    return out


def test_record_text_has_amct_format_and_json_agrees(conv_bn: Exported) -> None:
    text = conv_bn.record.read_text()
    assert text.startswith('record {\n  key: "conv1"\n  value {\n    scale_d: ')
    records = parse_record(text)
    assert list(records) == ["conv1", "conv2", "fc"]
    as_json = json.loads(conv_bn.record.with_suffix(".json").read_text())
    assert set(as_json) == set(records)
    for name, rec in records.items():
        for key in ("scale_d", "offset_d", "scale_w", "offset_w"):
            assert as_json[name][key] == rec[key], (name, key)
        assert as_json[name]["data_bits"] == 8 and as_json[name]["weight_bits"] == 8
    assert len(records["conv1"]["scale_w"]) == 8 and len(records["fc"]["scale_w"]) == NUM_CLASSES
    assert records["conv2"]["scale_w"] != [records["conv2"]["scale_w"][0]] * 8  # per-tensor, then BN per channel
    for rec in records.values():
        assert rec["offset_w"] == [0] * len(rec["scale_w"])  # symmetric weights


def test_record_numbers_are_the_qat_model_numbers(conv_bn: Exported) -> None:
    """scale_d/offset_d follow from the learned clips; scale_w is AMCT's ARQ scale,
    max(max(w) / 127, -min(w) / 128), of the weight with the sign of the folded BN's k
    (k = gamma / sqrt(var + eps)) already in, times |k|."""
    records = json.loads(conv_bn.record.with_suffix(".json").read_text())
    qat = conv_bn.qat
    for name in ("conv1", "conv2", "fc"):
        act = qat.get_submodule(name).act_quant
        hi, lo = act.clip_max.item(), act.clip_min.item()
        scale_d = (hi - lo) / 255
        assert records[name]["scale_d"] == pytest.approx(scale_d, rel=1e-5)
        assert records[name]["offset_d"] == round(-128 - lo / scale_d)
    assert records["fc"]["offset_d"] == -128  # after ReLU/pool/dropout: fixed_min, lower clip 0

    def bn_k(bn: nn.BatchNorm2d) -> np.ndarray:
        return (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double().numpy()

    def arq(w: np.ndarray, per_channel: bool) -> np.ndarray:
        dims = tuple(range(1, w.ndim)) if per_channel else None
        return np.maximum(w.max(axis=dims) / 127, w.min(axis=dims) / -128)

    for name, bn, per_channel in (("conv1", qat.bn1, True), ("conv2", qat.bn2, False)):
        k = bn_k(bn)
        w = qat.get_submodule(name).layer.weight.detach().double().numpy() * np.sign(k).reshape(-1, 1, 1, 1)
        np.testing.assert_allclose(records[name]["scale_w"], arq(w, per_channel) * np.abs(k), rtol=1e-5)
    wf = qat.fc.layer.weight.detach().double().numpy()
    np.testing.assert_allclose(records["fc"]["scale_w"], arq(wf, True), rtol=1e-5)
    assert qat.conv2.weight_quant.fold_sign is not None, "bn2 has negative gammas: their sign is quantized in"


# --------------------------------------------------------- fixed_min from the graph


class Branches(nn.Module):
    """One quantized layer per kind of input tensor, to read fixed_min off the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.relu, self.relu6, self.pool, self.flat = nn.ReLU(), nn.ReLU6(), nn.MaxPool2d(2), nn.Flatten()
        self.bn = nn.BatchNorm2d(2)
        for name in ("raw", "relu", "relu6", "pool", "bn", "sub", "pool_raw"):
            setattr(self, f"conv_{name}", nn.Conv2d(2, 2, 1))
        self.conv_cat = nn.Conv2d(4, 2, 1)
        self.conv_cat_mixed = nn.Conv2d(4, 2, 1)
        self.fc_flat = nn.Linear(32, 2)
        self.fc_after_conv = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.relu(x)
        outs = [
            self.conv_raw(x),
            self.conv_relu(r),
            self.conv_relu6(self.relu6(x)),
            self.conv_pool(self.pool(r)),
            self.conv_bn(self.bn(x)),
            self.conv_sub(r - 0.5),
            self.conv_pool_raw(self.pool(x)),
            self.conv_cat(torch.cat([r, self.relu6(x)], 1)),
            self.conv_cat_mixed(torch.cat([r, x], 1)),
        ]
        flat = [self.fc_flat(self.flat(r)), self.fc_after_conv(self.flat(self.conv_raw(x)))]
        return torch.cat([o.flatten(1) for o in outs] + flat, 1)


FIXED_MIN_EXPECTED = {
    "conv_raw": False,
    "conv_relu": True,
    "conv_relu6": True,
    "conv_pool": True,
    "conv_bn": False,
    "conv_sub": False,
    "conv_pool_raw": False,
    "conv_cat": True,
    "conv_cat_mixed": False,
    "fc_flat": True,
    "fc_after_conv": False,
}


@pytest.fixture(scope="module")
def branches_qat(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    out = tmp_path_factory.mktemp("branches")
    example = (torch.randn(1, 2, 4, 4),)
    quantlib.create_quant_retrain_config(out / "c.json", Branches(), example)
    return quantlib.create_quant_retrain_model(out / "c.json", Branches(), out / "r.txt", example)


@pytest.mark.parametrize(("layer", "expected"), list(FIXED_MIN_EXPECTED.items()))
def test_fixed_min_detected_from_graph(layer: str, expected: bool, branches_qat: nn.Module) -> None:
    """fixed_min absent from the config: true exactly where the input is provably >= 0."""
    quant = branches_qat.get_submodule(layer).act_quant
    assert quant.fixed_min is expected
    if expected:
        assert "clip_min" in dict(quant.named_buffers()) and quant.clip_min.item() == 0.0


def test_fixed_min_in_config_overrides_the_graph(tmp_path: Path) -> None:
    example = (torch.randn(1, 2, 4, 4),)
    config = tmp_path / "c.json"
    quantlib.create_quant_retrain_config(config, Branches(), example)
    data = read_json(config)
    data["conv_relu"]["retrain_data_config"]["fixed_min"] = False
    data["conv_raw"]["retrain_data_config"]["fixed_min"] = True
    write_json(config, data)
    qat = quantlib.create_quant_retrain_model(config, Branches(), tmp_path / "r.txt", example)
    assert qat.conv_relu.act_quant.fixed_min is False
    assert qat.conv_raw.act_quant.fixed_min is True


# ------------------------------------------------------------ ExportedProgram path


def _export(model: nn.Module) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(model.eval(), (torch.randn(2, *CONV_BN_INPUT),), dynamic_shapes=({0: batch},))


ProgramRun = tuple[torch.export.ExportedProgram, dict[str, torch.Tensor], Exported]


@pytest.fixture(scope="module")
def from_program(tmp_path_factory: pytest.TempPathFactory) -> ProgramRun:
    """A .pt2-style upload through the whole flow; the program's state before it ran."""
    torch.manual_seed(0)
    program = _export(ConvBnNet())
    before = {k: v.clone() for k, v in program.state_dict.items()}
    case = run_pipeline(program, CONV_BN_INPUT, tmp_path_factory.mktemp("program"), example_batch=2)
    return program, before, case


def test_program_path_exports_and_matches(from_program: ProgramRun) -> None:
    _, _, case = from_program
    assert quant_layer_names(case.qat) == ["conv1", "conv2", "fc"]
    assert case.qat.conv1.folds_bn == "bn1"
    for path in (case.fake, case.deploy):
        assert "BatchNormalization" not in op_types(path)
        assert_onnx_matches_qat(case, path)


def test_program_is_not_modified_by_training(from_program: ProgramRun) -> None:
    """ExportedProgram.module() shares the program's tensors; the QAT model must not."""
    program, before, _ = from_program
    after = program.state_dict
    assert set(after) == set(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key


@pytest.mark.parametrize("loaded", [False, True], ids=["in-memory", "pt2-file"])
def test_program_qat_train_eval_switch_batchnorm_and_dropout(loaded: bool, tmp_path: Path) -> None:
    """Also for a program loaded from a .pt2 file, whose own module refuses .train()."""
    program = _export(ConvBnNet())
    if loaded:
        torch.export.save(program, tmp_path / "model.pt2")
        program = torch.export.load(tmp_path / "model.pt2")
    example = (torch.randn(2, *CONV_BN_INPUT),)
    config = tmp_path / "c.json"
    quantlib.create_quant_retrain_config(config, program, example)
    assert set(read_json(config)) == {"version", "batch_num", "conv1", "conv2", "fc"}
    qat = quantlib.create_quant_retrain_model(config, program, tmp_path / "r.txt", example)
    bn = qat.get_submodule("bn1")
    assert isinstance(bn, nn.BatchNorm2d)
    assert any(isinstance(m, nn.Dropout) for m in qat.modules())
    x = torch.randn(8, *CONV_BN_INPUT)

    qat.train()
    assert bn.training
    qat(x)  # calibration
    stats = bn.running_mean.clone()
    a, b = qat(x), qat(x)
    assert not torch.equal(bn.running_mean, stats), "train mode must update BN statistics"
    assert not torch.equal(a, b), "train mode must apply dropout"

    qat.eval()
    assert not bn.training
    stats = bn.running_mean.clone()
    a, b = qat(x), qat(x)
    assert torch.equal(bn.running_mean, stats), "eval mode must not touch BN statistics"
    assert torch.equal(a, b)


def test_program_and_module_give_the_same_qat_model(tmp_path: Path) -> None:
    """Lifting a .pt2 must not change the network: same layers, same facts, same outputs."""
    model = ConvBnNet().eval()
    program = _export(model)
    example = (torch.randn(2, *CONV_BN_INPUT),)
    config = tmp_path / "c.json"
    quantlib.create_quant_retrain_config(config, model, example)
    from_module = quantlib.create_quant_retrain_model(config, model, tmp_path / "r.txt", example).eval()
    from_prog = quantlib.create_quant_retrain_model(config, program, tmp_path / "r.txt", example).eval()
    calib, x = torch.randn(8, *CONV_BN_INPUT), torch.randn(16, *CONV_BN_INPUT)
    with torch.no_grad():
        from_module(calib), from_prog(calib)
        torch.testing.assert_close(from_prog(x), from_module(x))
    for name in ("conv1", "conv2", "fc"):
        a, b = from_module.get_submodule(name), from_prog.get_submodule(name)
        assert a.act_quant.fixed_min == b.act_quant.fixed_min
        assert a.folds_bn == b.folds_bn
        assert a.act_quant.clip_max.item() == b.act_quant.clip_max.item()


# ---------------------------------------------------------- the user's model, restore


def test_original_model_is_not_modified(tmp_path: Path) -> None:
    model = ConvBnNet().train()
    before = copy.deepcopy(model.state_dict())
    example = (torch.randn(1, *CONV_BN_INPUT),)
    quantlib.create_quant_retrain_config(tmp_path / "c.json", model, example)
    qat = quantlib.create_quant_retrain_model(tmp_path / "c.json", model, tmp_path / "r.txt", example)
    train_steps(qat, CONV_BN_INPUT)
    assert model.training  # graph analysis switched to eval and back
    assert not any(isinstance(m, QuantLayer) for m in model.modules())
    assert isinstance(model.conv1, nn.Conv2d)
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert qat.conv1.layer.weight.data_ptr() != model.conv1.weight.data_ptr()


def test_restore_keeps_learned_clips_and_does_not_recalibrate(tmp_path: Path) -> None:
    model = ConvBnNet()
    example = (torch.randn(1, *CONV_BN_INPUT),)
    config = tmp_path / "c.json"
    quantlib.create_quant_retrain_config(config, model, example)
    qat = quantlib.create_quant_retrain_model(config, model, tmp_path / "r.txt", example)
    qat(torch.randn(8, *CONV_BN_INPUT))  # calibration: IFMR sets the clips
    from_ifmr = qat.conv1.act_quant.clip_max.item()
    train_steps(qat, CONV_BN_INPUT, steps=5, lr=0.05)
    clips = {n: (m.act_quant.clip_max.item(), m.act_quant.clip_min.item()) for n, m in _quant_layers(qat)}
    assert clips["conv1"][0] != from_ifmr  # training moved the clips: a re-run of IFMR would lose that

    pth = tmp_path / "qat.pth"
    torch.save(qat.state_dict(), pth)
    restored = quantlib.restore_quant_retrain_model(config, model, tmp_path / "r.txt", example, pth)
    for name, layer in _quant_layers(restored):
        assert (layer.act_quant.clip_max.item(), layer.act_quant.clip_min.item()) == clips[name]
        assert layer.act_quant.calibrated

    x = torch.randn(16, *CONV_BN_INPUT)
    with torch.no_grad():
        torch.testing.assert_close(restored.eval()(x), qat.eval()(x), rtol=0, atol=0)

    # the next training forward quantizes with the restored clips: no calibration pass
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hook = restored.conv1.act_quant.register_forward_hook(lambda m, i, o: seen.update(conv1=(i[0], o)))
    restored.train()
    restored(x)
    hook.remove()
    x_in, x_out = seen["conv1"]
    assert not torch.equal(x_in, x_out)
    for name, layer in _quant_layers(restored):
        assert (layer.act_quant.clip_max.item(), layer.act_quant.clip_min.item()) == clips[name]
        assert int(layer.act_quant.calibrated_batches) == 1


def test_restore_with_state_dict_name(tmp_path: Path) -> None:
    model = ConvBnNet()
    example = (torch.randn(1, *CONV_BN_INPUT),)
    config = tmp_path / "c.json"
    quantlib.create_quant_retrain_config(config, model, example)
    qat = quantlib.create_quant_retrain_model(config, model, tmp_path / "r.txt", example)
    train_steps(qat, CONV_BN_INPUT)
    pth = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "model": qat.state_dict()}, pth)
    restored = quantlib.restore_quant_retrain_model(config, model, tmp_path / "r.txt", example, pth, "model")
    assert restored.fc.act_quant.clip_max.item() == qat.fc.act_quant.clip_max.item()


# ------------------------------------------------------------ what gets quantized


def test_default_config_lists_every_quantizable_layer(tmp_path: Path) -> None:
    model = MIXED_MODELS["mixed_2d"][0]()
    config = tmp_path / "c.json"
    quantlib.create_quant_retrain_config(config, model, (torch.randn(1, 3, 4, 4),))
    data = read_json(config)
    assert data["version"] == 1 and data["batch_num"] == 1
    layers = {k: v for k, v in data.items() if k not in ("version", "batch_num")}
    assert set(layers) == {"0", "2", "4", "5", "8"}
    for entry in layers.values():
        assert entry == {
            "retrain_enable": True,
            "retrain_data_config": {"algo": "ulq_quantize", "dst_type": "INT8"},
            "retrain_weight_config": {"algo": "arq_retrain", "channel_wise": True, "dst_type": "INT8"},
        }


def _linear_head_model() -> nn.Module:
    return LAYER_MODELS["Conv2d"][0]()


def test_layers_missing_from_config_stay_float(tmp_path: Path) -> None:
    example = (torch.randn(1, 3, 6, 6),)
    config = write_json(tmp_path / "c.json", {"version": 1, "3": {}})
    qat = quantlib.create_quant_retrain_model(config, _linear_head_model(), tmp_path / "r.txt", example)
    assert type(qat.get_submodule("0")) is nn.Conv2d
    assert isinstance(qat.get_submodule("3"), QuantLayer)
    assert qat(torch.randn(2, 3, 6, 6)).shape == (2, NUM_CLASSES)


def test_retrain_enable_false_stays_float(tmp_path: Path) -> None:
    example = (torch.randn(1, 3, 6, 6),)
    config = tmp_path / "c.json"
    quantlib.create_quant_retrain_config(config, _linear_head_model(), example)
    data = read_json(config)
    data["3"]["retrain_enable"] = False
    write_json(config, data)
    qat = quantlib.create_quant_retrain_model(config, _linear_head_model(), tmp_path / "r.txt", example)
    assert isinstance(qat.get_submodule("0"), QuantLayer)
    assert type(qat.get_submodule("3")) is nn.Linear


def test_config_layer_not_in_model_is_rejected(tmp_path: Path) -> None:
    config = write_json(tmp_path / "c.json", {"version": 1, "conv_1": {}})
    with pytest.raises(ConfigError, match="did you mean 'conv1'"):
        quantlib.create_quant_retrain_model(config, ConvBnNet(), tmp_path / "r.txt", (torch.randn(1, *CONV_BN_INPUT),))
    config = write_json(tmp_path / "c.json", {"version": 1, "bn1": {}})
    with pytest.raises(ConfigError, match="BatchNorm2d"):
        quantlib.create_quant_retrain_model(config, ConvBnNet(), tmp_path / "r.txt", (torch.randn(1, *CONV_BN_INPUT),))


def test_config_settings_reach_the_quantizers(tmp_path: Path) -> None:
    example = (torch.randn(1, *CONV_BN_INPUT),)
    config = write_json(
        tmp_path / "c.json",
        {
            "version": 1,
            "batch_num": 2,
            "conv1": {
                "retrain_data_config": {"clip_max": 3.0, "clip_min": -3.0, "dst_type": "INT4"},
                "retrain_weight_config": {"channel_wise": False},
            },
            "fc": {"retrain_weight_config": {"dst_type": "INT4"}},
        },
    )
    qat = quantlib.create_quant_retrain_model(config, ConvBnNet(), tmp_path / "r.txt", example)
    conv1, fc = qat.conv1, qat.fc
    assert conv1.act_quant.bits == 4 and conv1.weight_quant.bits == 8
    assert conv1.weight_quant.scale_axis is None
    assert (conv1.act_quant.clip_max.item(), conv1.act_quant.clip_min.item()) == (3.0, -3.0)
    assert list(conv1.act_quant.parameters()) == []
    assert fc.act_quant.bits == 8 and fc.weight_quant.bits == 4
    assert type(qat.conv2) is nn.Conv2d
    # batch_num 2: two forwards calibrate, the third quantizes
    for seen in (1, 2):
        assert not fc.act_quant.calibrated
        qat(torch.randn(4, *CONV_BN_INPUT))
        assert int(fc.act_quant.calibrated_batches) == seen
    assert fc.act_quant.calibrated
    qat(torch.randn(4, *CONV_BN_INPUT))
    assert int(fc.act_quant.calibrated_batches) == 2
    assert (conv1.act_quant.clip_max.item(), conv1.act_quant.clip_min.item()) == (3.0, -3.0)


def test_config_defination_through_create_quant_retrain_config(tmp_path: Path) -> None:
    """AMCT's simplified config: skips and overrides expand into the full config file."""
    simple = tmp_path / "simple.yaml"
    simple.write_text(
        "batch_num: 2\n"
        "skip_layers: [conv2]\n"
        "type_overrides: {Linear: {weight_dst_type: INT4}}\n"
        "layer_overrides: {conv1: {clip_max: 6, fixed_min: true}}\n",
        encoding="utf-8",
    )
    example = (torch.randn(1, *CONV_BN_INPUT),)
    config = tmp_path / "out" / "config.json"
    quantlib.create_quant_retrain_config(config, ConvBnNet(), example, config_defination=simple)
    data = read_json(config)
    assert data["batch_num"] == 2
    assert data["conv2"]["retrain_enable"] is False
    assert data["fc"]["retrain_weight_config"]["dst_type"] == "INT4"
    assert data["conv1"]["retrain_data_config"]["clip_max"] == 6.0
    assert data["conv1"]["retrain_data_config"]["fixed_min"] is True
    qat = quantlib.create_quant_retrain_model(config, ConvBnNet(), tmp_path / "r.txt", example)
    assert type(qat.conv2) is nn.Conv2d
    assert qat.fc.weight_quant.bits == 4
    assert qat.conv1.act_quant.clip_max.item() == 6.0 and qat.conv1.act_quant.fixed_min
    assert qat.conv1.act_quant.batch_num == 2


def test_config_defination_errors_surface(tmp_path: Path) -> None:
    simple = tmp_path / "simple.json"
    simple.write_text(json.dumps({"skip_layers": ["conv_1"]}), encoding="utf-8")
    with pytest.raises(ConfigError, match="did you mean 'conv1'"):
        quantlib.create_quant_retrain_config(
            tmp_path / "c.json", ConvBnNet(), (torch.randn(1, *CONV_BN_INPUT),), config_defination=simple
        )
    assert not (tmp_path / "c.json").exists()


def test_bad_input_data_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="input_data"):
        quantlib.create_quant_retrain_config(tmp_path / "c.json", ConvBnNet(), [1, 2, 3])
