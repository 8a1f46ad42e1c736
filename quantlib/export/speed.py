"""How much faster and smaller the deployed model is than the same network in FP32, on this CPU.

Users quantize to deploy, so a run reports the figure they care about: the deploy model's
onnxruntime latency and file size against the FP32 network's. The FP32 network is the
fake-quant export with every QuantizeLinear -> DequantizeLinear pair taken out (the same
graph, BatchNorm folded as onnxruntime would fold it, float weights), so no second export
of the user's model is needed and the comparison is of exactly one network. Both run
interleaved, one thread, for a bounded time.
"""

from __future__ import annotations

import collections
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from quantlib.inputs import Inputs
from quantlib.loop import feed

# interleaved repeats per batch size and the wall time they may take together
MAX_REPEATS = 15
BUDGET_S = 0.4


@dataclass(frozen=True)
class Speed:
    """Median latency per batch size, ms; file sizes, bytes; measured with ``threads`` threads."""

    batch_sizes: list[int]
    fp32_ms: list[float]
    int8_ms: list[float]
    fp32_bytes: int
    int8_bytes: int
    threads: int

    @property
    def latency_ratio(self) -> list[float]:
        return [int8 / fp32 for int8, fp32 in zip(self.int8_ms, self.fp32_ms, strict=True)]

    @property
    def size_ratio(self) -> float:
        return self.int8_bytes / self.fp32_bytes

    def to_dict(self) -> dict[str, object]:
        return {
            "batch_sizes": self.batch_sizes,
            "fp32_ms": [round(v, 4) for v in self.fp32_ms],
            "int8_ms": [round(v, 4) for v in self.int8_ms],
            "latency_ratio": [round(v, 4) for v in self.latency_ratio],
            "fp32_bytes": self.fp32_bytes,
            "int8_bytes": self.int8_bytes,
            "size_ratio": round(self.size_ratio, 4),
            "threads": self.threads,
        }


def float_twin(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with each QuantizeLinear -> DequantizeLinear pair bypassed and what only they used removed."""
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    graph = twin.graph
    producer = {out: node for node in graph.node for out in node.output}
    bypass: dict[str, str] = {}
    for node in graph.node:
        source = producer.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if source is not None and source.op_type == "QuantizeLinear":
            bypass[node.output[0]] = source.input[0]
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = bypass.get(name, name)
    for output in graph.output:
        output.name = bypass.get(output.name, output.name)
    _keep_only_what_outputs_need(graph)
    return twin


def _keep_only_what_outputs_need(graph: onnx.GraphProto) -> None:
    needed = {output.name for output in graph.output}
    live: list[onnx.NodeProto] = []
    for node in reversed(list(graph.node)):
        if any(out in needed for out in node.output):
            live.append(node)
            needed.update(name for name in node.input if name)
    kept_nodes = list(reversed(live))
    del graph.node[:]
    graph.node.extend(kept_nodes)
    initializers = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def measure_speed(fake_quant: Path, deploy: Path, sample: Inputs, batch_sizes: list[int]) -> Speed:
    """Latency of ``deploy`` and of the FP32 twin of ``fake_quant`` on batches made of ``sample`` rows."""
    with tempfile.TemporaryDirectory() as scratch:
        fp32_path = Path(scratch) / "fp32.onnx"
        onnx.save(float_twin(onnx.load(str(fake_quant))), str(fp32_path))
        fp32, int8 = _session(fp32_path), _session(deploy)
        fp32_bytes = fp32_path.stat().st_size
    budget_s = BUDGET_S / len(batch_sizes)
    fp32_ms, int8_ms = [], []
    for batch in batch_sizes:
        inputs = feed(
            int8, Inputs({name: np.resize(array, (batch, *array.shape[1:])) for name, array in sample.arrays.items()})
        )
        for session in (fp32, int8):  # warm-up: the first run allocates and prepacks
            session.run(None, inputs)
        times: tuple[list[float], list[float]] = ([], [])
        stop = time.perf_counter() + budget_s
        while not times[1] or (len(times[1]) < MAX_REPEATS and time.perf_counter() < stop):
            for session, kept in zip((fp32, int8), times, strict=True):
                start = time.perf_counter()
                session.run(None, inputs)
                kept.append((time.perf_counter() - start) * 1e3)
        fp32_ms.append(statistics.median(times[0]))
        int8_ms.append(statistics.median(times[1]))
    return Speed(batch_sizes, fp32_ms, int8_ms, fp32_bytes, deploy.stat().st_size, threads=1)


def optimized_ops(path: Path) -> collections.Counter[str]:
    """The op types onnxruntime runs for ``path`` once its graph optimizations (fusions) are done."""
    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # its warning that the saved graph is tuned to this CPU is the point
        options.optimized_model_filepath = str(Path(scratch) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    return collections.Counter(node.op_type for node in graph.node)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
