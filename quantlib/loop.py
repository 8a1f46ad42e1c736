"""The numeric steps of a QAT run: calibration, fine-tuning and batched prediction.

Shared by one plain run and by each trial of the tuner, which repeats them with other
configs; the pipeline around them (phases, files, report) is :mod:`quantlib.train`, run by :mod:`quantlib.run`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from quantlib.errors import QuantlibError
from quantlib.inputs import Inputs
from quantlib.phases import Phases
from quantlib.spec import LossKind, QATSpec

EVAL_BATCH = 256


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // batch_size)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches; a short last batch is dropped (BatchNorm needs > 1 sample)."""
    batches = list(torch.randperm(n, generator=generator).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def shared_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over ``array``'s memory, not a copy. A read-only mapped array (:mod:`quantlib.mapped`) is
    fine: training only ever indexes it (which copies the rows), so torch's warning that it could write
    to it does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def tensors(x: Inputs, device: torch.device, rows: slice | np.ndarray = slice(None)) -> tuple[torch.Tensor, ...]:
    """``rows`` of every input, as the model's positional arguments on ``device``."""
    return tuple(torch.from_numpy(_writable(array[rows])).to(device, non_blocking=True) for array in x)


def _writable(batch: np.ndarray) -> np.ndarray:
    """``batch`` contiguous, and copied out of a read-only mapped array: a model may write to its input in
    place, which on the mapping itself would fault."""
    if not batch.flags.writeable:
        return np.array(batch, order="C")
    return np.ascontiguousarray(batch)


@torch.no_grad()
def calibrate(qat: nn.Module, x: Inputs, batch_num: int, batch_size: int, device: torch.device, phases: Phases) -> None:
    """The first ``batch_num`` batches in data order; a short dataset wraps around."""
    qat.eval()
    for b in range(batch_num):
        qat(*tensors(x, device, np.arange(b * batch_size, (b + 1) * batch_size) % len(x)))
        if phases.due():
            phases.step(b + 1, batch_num)


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def loss_function(kind: LossKind, ignore_index: int | None = None) -> LossFn:
    """The training loss ``kind`` names (:data:`quantlib.spec.TASK_LOSSES`): cross-entropy over axis 1
    (classes, or dense class maps with ``ignore_index`` pixels left out; None ignores no label, as
    class labels, where 255 is a class like any other), binary cross-entropy on multi-hot rows,
    MSE to float targets or to the FP32 outputs, or KL to the FP32 outputs."""
    if kind == "ce":
        ignored = -100 if ignore_index is None else ignore_index  # torch's default: no label is negative

        def cross_entropy(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            # the mean over the labels kept; 0, not NaN, for a batch of ignored pixels only
            kept = (target != ignored).sum().clamp_min(1)
            return F.cross_entropy(out, target, ignore_index=ignored, reduction="sum") / kept

        return cross_entropy
    if kind == "bce":
        return lambda out, target: F.binary_cross_entropy_with_logits(out, target.to(out.dtype))
    if kind in ("mse", "mse_labels"):
        return F.mse_loss
    return lambda out, target: F.kl_div(
        F.log_softmax(out, 1), F.log_softmax(target, 1), reduction="batchmean", log_target=True
    )


def fine_tune(
    qat: nn.Module,
    x: Inputs,
    targets: torch.Tensor,
    loss: LossFn,
    spec: QATSpec,
    device: torch.device,
    phases: Phases,
    *,
    resume: Mapping[str, Any] | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[float]:
    """Fine-tune with the lr decaying to 0 (cosine): a converged FP32 model needs polishing,
    not another descent. The loss is read on the host only when progress is due and once
    per epoch, so steps queue up on a GPU without waiting.

    ``on_epoch(epoch, state)`` gets the loop's state after each epoch but the last (what a
    checkpoint needs besides the model); ``resume`` is such a state: the loop goes on from
    the epoch after it, with the same batches and lr it would have had.
    """
    params = [p for p in qat.parameters() if p.requires_grad]
    if spec.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(params, lr=spec.lr, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(params, lr=spec.lr)
    generator = torch.Generator().manual_seed(spec.seed)
    total = steps_per_epoch(len(x), spec.batch_size) * spec.epochs
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total, 1))
    step = 0
    varied_at_start = False
    epoch_losses: list[float] = []
    done = 0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        generator.set_state(resume["generator"])
        torch.set_rng_state(resume["rng"])
        step, varied_at_start, done = resume["step"], resume["varied_at_start"], resume["epoch"]
        epoch_losses = list(resume["epoch_losses"])
    train_mode(qat, freeze_bn=spec.freeze_bn)
    for epoch in range(done + 1, spec.epochs + 1):
        batches = _batches(len(x), spec.batch_size, generator)
        running = torch.zeros((), device=device)
        for idx in batches:
            outputs = qat(*tensors(x, device, idx.numpy()))
            wanted = targets[idx].to(device, non_blocking=True)
            if step == 0:
                varied_at_start = not _constant(outputs.detach(), wanted)
            value = loss(outputs, wanted)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            schedule.step()
            running += value.detach()
            step += 1
            if phases.due():
                phases.step(step, total, _finite(value.item(), epoch, spec), epoch)
        epoch_losses.append(_finite(float(running) / len(batches), epoch, spec))
        if varied_at_start and _constant(outputs.detach(), wanted):
            raise _collapsed(epoch, spec)
        if on_epoch is not None and epoch < spec.epochs:
            state = {
                "epoch": epoch,
                "step": step,
                "varied_at_start": varied_at_start,
                "epoch_losses": epoch_losses,
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "generator": generator.get_state(),
                "rng": torch.get_rng_state(),
            }
            on_epoch(epoch, state)
    return epoch_losses


class DivergedError(QuantlibError):
    """The training loss stopped being a number: the user's settings or data, not the service."""

    code = "DIVERGED"
    default_field = "lr"


def _constant(outputs: torch.Tensor, targets: torch.Tensor) -> bool:
    """Every sample gave exactly the same output while the targets differ."""
    return len(outputs) > 1 and bool((outputs == outputs[:1]).all()) and not bool((targets == targets[:1]).all())


def _collapsed(epoch: int, spec: QATSpec) -> DivergedError:
    """The run blew the quantization ranges or weights so far that every input rounds to one
    value: the loss can stay finite there (a runaway bias may even round to nothing on the int32
    grid), so the loss check alone would call such a model trained. A model that was constant
    from its first step (a layer quantized to nothing) is the tuner's to fix, not this."""
    return DivergedError(
        f"in epoch {epoch} the model's outputs stopped depending on its input (every sample gives the same "
        f"output, where they differed when training began): the run diverged; lower spec.lr (it is {spec.lr})"
    )


def _finite(loss: float, epoch: int, spec: QATSpec) -> float:
    """``loss``, or :class:`DivergedError` once it is NaN or infinite: nothing after it can be trained."""
    if not math.isfinite(loss):
        raise DivergedError(
            f"the training loss became {loss} in epoch {epoch}: the run diverged; lower spec.lr (it is {spec.lr}), "
            "or check the data for extreme values"
        )
    return loss


def train_mode(model: nn.Module, *, freeze_bn: bool) -> None:
    """Training mode for QAT, which fine-tunes the network it deploys: dropout stays off (the
    deployed model has none, and the targets, the FP32 model's eval outputs or the labels, are
    to be met without it); with ``freeze_bn`` BatchNorm normalises with its running statistics
    (its affine weights still train), so training sees what evaluation will see."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) or (
            freeze_bn and isinstance(module, nn.modules.batchnorm._BatchNorm)
        ):
            module.eval()


@torch.no_grad()
def predict(model: nn.Module, x: Inputs, device: torch.device) -> np.ndarray:
    model.eval()
    outputs = [model(*tensors(x, device, slice(i, i + EVAL_BATCH))).float().cpu() for i in range(0, len(x), EVAL_BATCH)]
    return torch.cat(outputs).numpy()


def predict_onnx(path: Path, x: Inputs, *, integer_kernels: bool = True) -> np.ndarray:
    """Outputs of the ONNX model at ``path``; without ``integer_kernels`` its Q/DQ arithmetic as written
    (onnxruntime's basic optimizations only, which fuse no Q/DQ group into an integer kernel)."""
    options = ort.SessionOptions()
    # the run's thread budget (torch's, from OMP_NUM_THREADS or --threads), not onnxruntime's own one per core
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
    if not integer_kernels:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate(
        [session.run(None, feed(session, x[i : i + EVAL_BATCH]))[0] for i in range(0, len(x), EVAL_BATCH)]
    )


def feed(session: ort.InferenceSession, x: Inputs) -> dict[str, np.ndarray]:
    """``x`` as ``session``'s inputs, by position: the export names them after the model's inputs."""
    return {spec.name: np.ascontiguousarray(array) for spec, array in zip(session.get_inputs(), x, strict=True)}
