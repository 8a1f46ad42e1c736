"""QAT training-step cost against FP32, measured interleaved in one process.

Each round runs one step of every variant in turn, so machine noise hits all of them
alike; the medians are reported as ratios to FP32. Every variant trains as a QAT
fine-tune does, BatchNorm statistics frozen. Memory is what autograd keeps from the
forward pass for the backward pass (distinct storages of saved tensors): the peak of
a training step above the model and optimizer state, and where fake quantization
costs memory. Process RSS would mostly measure the allocator and the interpreter.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import quantlib
from bench.baselines import BASELINES, train_frozen_bn
from bench.models import BenchModel
from quantlib.spec import QATSpec

Prepare = Callable[[nn.Module, tuple[torch.Tensor, ...]], nn.Module]


def _ours(model: nn.Module, example: tuple[torch.Tensor, ...]) -> nn.Module:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        quantlib.create_quant_retrain_config(config, model, example)
        # the default target of a run: its int32-bias rounding is part of the step
        return quantlib.create_quant_retrain_model(
            config, model, Path(tmp) / "record.txt", example, target=QATSpec().target
        )


# name -> (make a trainable copy, put it in fine-tuning mode)
VARIANTS: dict[str, tuple[Prepare, Callable[[nn.Module], None]]] = {
    "fp32": (lambda model, example: copy.deepcopy(model), train_frozen_bn),
    "ours": (_ours, train_frozen_bn),
    **{b.name: (b.prepare, b.train) for b in BASELINES},
}


def _loss(spec: BenchModel, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y) if spec.classes else F.mse_loss(out, x)


def saved_bytes(step: Callable[[], None]) -> int:
    """Bytes of the distinct storages autograd saves for backward during ``step``."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(storages.values())


def measure(spec: BenchModel, rounds: int, warmup: int = 3) -> dict[str, Any]:
    torch.manual_seed(0)
    base = spec.build()
    x = torch.randn(*spec.input_shape)
    y = torch.randint(0, spec.classes or 1, (spec.input_shape[0],))
    example = (x,)
    steps: dict[str, Callable[[], None]] = {}
    errors: dict[str, str] = {}
    for name, (make, mode) in VARIANTS.items():
        try:
            model = make(base, example)
            mode(model)
        except Exception as exc:  # noqa: BLE001 - a tool that cannot take a model is a result
            errors[name] = f"{type(exc).__name__}: {exc}"[:200]
            continue
        opt = torch.optim.Adam(model.parameters(), lr=1e-5)

        def step(model: nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
            loss = _loss(spec, model(x), x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[name] = step
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    saved = {name: saved_bytes(step) for name, step in steps.items()}
    medians = {name: statistics.median(t) for name, t in times.items()}
    fp32 = medians["fp32"]
    return {
        "model": spec.name,
        "input_shape": list(spec.input_shape),
        "rounds": rounds,
        "median_ms": {name: round(m * 1e3, 3) for name, m in medians.items()},
        "ratio_to_fp32": {name: round(m / fp32, 3) for name, m in medians.items()},
        "saved_for_backward_mib": {name: round(b / 2**20, 2) for name, b in saved.items()},
        "errors": errors,
    }
