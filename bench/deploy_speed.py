"""Deployed INT8 against FP32 on onnxruntime's CPU, ours next to onnxruntime's own ``quantize_static``.

For each model of :data:`bench.deploy_models.DEPLOY_ZOO`: the FP32 ONNX export, our deploy
model per target (calibration only: QAT changes the numbers, not the graph), and ``quantize_static``
in its QDQ and QOperator formats (per-channel int8 weights on onnxruntime's 7-bit ``reduce_range``
grid, as ours, uint8 activations), all
calibrated on the same 50 inputs. Each is timed on one thread, batch 1 and 32, interleaved
medians; scored against FP32 on other inputs (SQNR, top-1 agreement); and the optimized
graph says which integer kernels onnxruntime ran.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from bench.deploy_models import DEPLOY_ZOO, DeployModel
from quantlib import create_quant_retrain_config, create_quant_retrain_model, save_quant_retrain_model
from quantlib.export.speed import optimized_ops
from quantlib.inputs import Inputs
from quantlib.loop import predict_onnx
from quantlib.metrics import sqnr_db, top1_agreement
from quantlib.spec import Target

BATCHES = (1, 32)
CALIBRATION = 50
EVAL = 64
# what counts as running in the integer domain, by onnxruntime op type
INTEGER_OPS = ("QLinear", "MatMulInteger", "ConvInteger", "QGemm", "QAttention", "DynamicQuantize")
FLOAT_COMPUTE = ("Conv", "FusedConv", "NchwcConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm")
OUR_TARGETS: tuple[Target, ...] = ("onnxruntime-cpu", "tensorrt", "generic-qdq")
VARIANTS = (
    "FP32",
    *(f"ours {target}" for target in OUR_TARGETS),
    "quantize_static QDQ",
    "quantize_static QOperator",
)


class _Reader(CalibrationDataReader):
    def __init__(self, name: str, x: np.ndarray) -> None:
        self.rows: Iterator[dict[str, np.ndarray]] = iter([{name: x}])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.rows, None)


def _fp32_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    # opset 21, as our onnxruntime-cpu export: GELU is one op there, for FP32 and quantize_static alike
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        opset_version=21,
        input_names=["input"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    assert program is not None
    program.save(str(path))


def _ours(
    model: torch.nn.Module, calibration: torch.Tensor, x_eval: np.ndarray, folder: Path, target: Target
) -> tuple[Path, np.ndarray]:
    """Our deploy model for ``target``, and what its QAT model simulates on ``x_eval``."""
    config, record = folder / "config.json", folder / "record.txt"
    create_quant_retrain_config(config, model, (calibration[:2],))
    qat = create_quant_retrain_model(config, model, record, (calibration[:2],), target=target)
    with torch.no_grad():
        qat(calibration)  # batch_num 1: this forward calibrates
        _, deploy = save_quant_retrain_model(config, qat.eval(), record, folder / target, (calibration[:2],))
        return deploy, qat(torch.from_numpy(x_eval)).numpy()


def _ort(fp32: Path, calibration: np.ndarray, out: Path, fmt: QuantFormat) -> Path:
    quantize_static(
        str(fp32),
        str(out),
        _Reader("input", calibration),
        quant_format=fmt,
        per_channel=True,
        # 7-bit weights, as ours onnxruntime-cpu: the full grid saturates uint8 x int8 kernels without VNNI
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _latencies(sessions: dict[str, ort.InferenceSession], sample: np.ndarray, repeats: int) -> dict[str, list[float]]:
    """Median ms per variant and batch size, the variants interleaved so load hits them alike."""
    out: dict[str, list[float]] = {name: [] for name in sessions}
    for batch in BATCHES:
        feed = np.ascontiguousarray(np.resize(sample, (batch, *sample.shape[1:])))
        for session in sessions.values():
            session.run(None, {"input": feed})
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(repeats):
            for name, session in sessions.items():
                start = time.perf_counter()
                session.run(None, {"input": feed})
                times[name].append((time.perf_counter() - start) * 1e3)
        for name in sessions:
            out[name].append(statistics.median(times[name]))
    return out


def _integer_share(ops: dict[str, int]) -> tuple[int, int]:
    integer = sum(n for op, n in ops.items() if op.startswith(INTEGER_OPS))
    return integer, sum(n for op, n in ops.items() if op in FLOAT_COMPUTE)


@torch.no_grad()
def _settle_batch_norms(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """BatchNorm statistics of ``x``, as a trained model has them for its data: with the
    default ones (mean 0, variance 1) a random-init deep net's activations vanish layer by
    layer (EfficientNet's reach 1e-10), and every output is the same."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the passes below
    model.train()
    model(x)
    return model.eval()


def measure_model(spec: DeployModel, repeats: int) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    calibration = torch.randn(CALIBRATION, *spec.sample_shape)
    model = _settle_batch_norms(spec.build(), calibration)
    x_eval = torch.randn(EVAL, *spec.sample_shape, generator=torch.Generator().manual_seed(1)).numpy()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        fp32 = folder / "fp32.onnx"
        _fp32_onnx(model, calibration[:2], fp32)
        ours = {f"ours {target}": _ours(model, calibration, x_eval, folder, target) for target in OUR_TARGETS}
        simulated = {name: outputs for name, (_, outputs) in ours.items()}
        paths = {
            "FP32": fp32,
            **{name: path for name, (path, _) in ours.items()},
            "quantize_static QDQ": _ort(fp32, calibration.numpy(), folder / "qdq.onnx", QuantFormat.QDQ),
            "quantize_static QOperator": _ort(fp32, calibration.numpy(), folder / "qop.onnx", QuantFormat.QOperator),
        }
        sessions = {name: _session(path) for name, path in paths.items()}
        # the tensorrt export scored by its Q/DQ arithmetic, as TensorRT computes it (quantlib.spec.TargetForm)
        outputs = {
            name: predict_onnx(path, Inputs({"input": x_eval}), integer_kernels=name != "ours tensorrt")
            for name, path in paths.items()
        }
        latency = _latencies(sessions, x_eval, repeats)
        ops = {name: dict(optimized_ops(path)) for name, path in paths.items()}
        sizes = {name: path.stat().st_size for name, path in paths.items()}
    rows = []
    for name in VARIANTS:
        integer, floating = _integer_share(ops[name])
        rows.append(
            {
                "model": spec.name,
                "variant": name,
                "latency_ms": dict(zip(map(str, BATCHES), latency[name], strict=True)),
                "latency_vs_fp32": [round(v / f, 3) for v, f in zip(latency[name], latency["FP32"], strict=True)],
                "sqnr_db": None if name == "FP32" else round(float(sqnr_db(outputs["FP32"], outputs[name])), 2),
                "agreement": None if name == "FP32" else round(top1_agreement(outputs["FP32"], outputs[name]), 4),
                # ours only: the deploy model against its own QAT simulation
                "deploy_vs_simulated_db": (
                    round(float(sqnr_db(simulated[name], outputs[name])), 1) if name in simulated else None
                ),
                "integer_ops": integer,
                "float_compute_ops": floating,
                "bytes": sizes[name],
                "ops": ops[name],
            }
        )
    return rows


def measure(quick: bool, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for spec in DEPLOY_ZOO:
        log(f"deploy speed: {spec.name}")
        rows += measure_model(spec, repeats=3 if quick else 9)
    return rows
