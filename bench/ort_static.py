"""onnxruntime's own post-training quantization, set up as its documentation does for x86 CPUs.

The FP32 model is exported to ONNX (opset 21, batch axis dynamic) and quantized by
``quantize_static``: QDQ format, per-channel int8 weights with ``reduce_range`` (the 7-bit
weights ours also uses on hosts without VNNI), uint8 activations from MinMax calibration
on the same samples the other tools calibrate on. It does not train: the PTQ baseline.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from torch import nn


class _Reader(CalibrationDataReader):
    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self.rows: Iterator[dict[str, np.ndarray]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.rows, None)


def quantize_static_session(
    model: nn.Module, calibration: dict[str, np.ndarray], names: Sequence[str], folder: Path, batch: int = 10
) -> ort.InferenceSession:
    """The onnxruntime session of ``model`` quantized by ``quantize_static``; ``calibration`` maps each
    input name (in ``names`` order) to its calibration samples, fed ``batch`` at a time."""
    fp32, int8 = folder / "fp32.onnx", folder / "qdq.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    example = tuple(torch.from_numpy(calibration[name][:2]) for name in names)
    dim = torch.export.Dim("batch")
    program = torch.onnx.export(
        model.eval(),
        example,
        dynamo=True,
        opset_version=21,
        input_names=list(names),
        dynamic_shapes=tuple({0: dim} for _ in example),
    )
    assert program is not None
    program.save(str(fp32))
    count = len(calibration[names[0]])
    batches = [{name: calibration[name][i : i + batch] for name in names} for i in range(0, count, batch)]
    quantize_static(
        str(fp32),
        str(int8),
        _Reader(batches),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
