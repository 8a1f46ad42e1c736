"""The two halves of a QAT run: :func:`train` (calibration and fine-tuning) and
:func:`finish` (export, evaluation, the report).

:func:`quantlib.run.run_qat` runs them once, the tuner (:mod:`quantlib.tune`) repeats
``train`` with the configs it proposes; this module knows neither. Both take the
config as an object, parsed once by the caller, and call the library directly, not
through the AMCT file facade (:mod:`quantlib.api`). ``finish`` writes the files under
their published names (:data:`quantlib.outputs.OUTPUT_FILES`).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from quantlib.caveats import run_caveats
from quantlib.checkpoint import Checkpoints
from quantlib.config import QuantConfig, check_calibration, check_layers, check_target
from quantlib.data import DataError, Dataset, check_labels
from quantlib.errors import SpecError, is_out_of_memory, one_line
from quantlib.export.fold import can_fold
from quantlib.export.modules import deployed_layers
from quantlib.export.onnx_export import check_exports, export_onnx, write_models
from quantlib.export.record import write_record
from quantlib.export.speed import Speed, measure_speed
from quantlib.inputs import Inputs
from quantlib.loop import (
    calibrate,
    fine_tune,
    loss_function,
    predict,
    predict_onnx,
    shared_tensor,
    steps_per_epoch,
    tensors,
)
from quantlib.matmuls import MatmulInputQuantizer
from quantlib.metrics import sqnr_db
from quantlib.modelfile import ModelError
from quantlib.outputs import OUTPUT_FILES
from quantlib.phases import Phase, Phases, ProgressFn
from quantlib.prepare import (
    ModelLike,
    as_module,
    layer_types,
    modules_of,
    quant_embeddings,
    quant_layers,
    quantize_layers,
)
from quantlib.report import write_report_html
from quantlib.selection import Selection, keep_better, snapshot
from quantlib.signature import model_inputs
from quantlib.spec import DISTILLATION_LOSSES, TARGET_FORMS, QATSpec, check_budget
from quantlib.tasks import Task, infer_task

__all__ = ["LayerReport", "ProgressFn", "QATSpec", "Report", "Scores", "Trained", "finish", "train"]
# the "typical batch" of the speed figure: the training batch, at most this
SPEED_BATCH = 32


@dataclass(frozen=True)
class Scores:
    """One row of the accuracy table. ``metric`` is the task's (report.json's ``task`` names it), None
    without labels; ``top1`` the same for class labels only; ``agreement`` None where outputs are no
    decisions (regression)."""

    top1: float | None
    agreement: float | None
    sqnr_db: float
    metric: float | None = None


@dataclass(frozen=True)
class LayerReport:
    """What a user needs to tune one layer's config entry."""

    observed_min: float
    observed_max: float
    clip_min: float
    clip_max: float
    clip_min_learned: bool
    clip_max_learned: bool
    fixed_min: bool
    data_dst_type: str
    weight_dst_type: str
    channel_wise: bool
    weight_rel_mse: float
    folded_bn: str | None


@dataclass(frozen=True)
class EmbeddingReport:
    """One quantized embedding table: its shape and how far its int8 rows are from the float ones."""

    rows: int
    dim: int
    weight_dst_type: str
    channel_wise: bool
    weight_rel_mse: float


@dataclass
class Report:
    """The outcome of a run; ``report.json`` holds the same, paths relative to ``out_dir``.

    ``deploy_vs_simulated`` compares the exported ONNX model with the PyTorch QAT model
    (top1 is None there): the evidence that what ships computes what was evaluated.
    ``tuning`` is the tuner's account (target, sensitivity, trials, verdict) when
    ``spec.accuracy`` asked for one. ``speed`` is the deploy model's latency and size
    against the same network in FP32 (:mod:`quantlib.export.speed`). ``selection`` says whether
    the fine-tuned or the calibrated-only state was exported (:mod:`quantlib.selection`);
    ``caveats`` what the scores cannot be trusted for (:mod:`quantlib.caveats`).
    """

    out_dir: Path
    files: dict[str, Path]
    accuracy: dict[str, Scores]
    deploy_vs_simulated: Scores
    layers: dict[str, LayerReport]
    loss: str
    epoch_losses: list[float]
    timings_s: dict[str, float]
    dataset: dict[str, Any]
    spec: QATSpec
    batch_num: int
    task: Task
    speed: Speed | None = None
    tuning: dict[str, Any] | None = None
    selection: Selection | None = None
    caveats: list[str] = field(default_factory=list)
    embeddings: dict[str, EmbeddingReport] = field(default_factory=dict)
    # per input quantizer of an activation x activation matmul (config quantize_activation_matmuls)
    activation_matmuls: dict[str, dict[str, float]] = field(default_factory=dict)
    # the run's CPU threads (torch's and onnxruntime's): QAT_CHILD_THREADS in a job, --threads in qat quantize
    threads: int = 1
    # the first epoch this run trained, when it went on from an earlier attempt's checkpoint
    resumed_at_epoch: int | None = None
    # where it trained: "cpu", or "cuda:0 (<the GPU's name>)"
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        tuning = {} if self.tuning is None else {"tuning": self.tuning}
        speed = {} if self.speed is None else {"speed": self.speed.to_dict()}
        selection = {} if self.selection is None else {"fine_tune": self.selection.to_dict()}
        return _json_safe(
            {
                "files": {key: path.name for key, path in self.files.items()},
                "accuracy": {key: asdict(row) for key, row in self.accuracy.items()},
                "deploy_vs_simulated": asdict(self.deploy_vs_simulated),
                "layers": {key: asdict(layer) for key, layer in self.layers.items()},
                "embeddings": {key: asdict(table) for key, table in self.embeddings.items()},
                "activation_matmuls": self.activation_matmuls,
                "threads": self.threads,
                "resumed_at_epoch": self.resumed_at_epoch,
                "device": self.device,
                "loss": {"kind": self.loss, "epoch_means": self.epoch_losses},
                "timings_s": self.timings_s,
                "dataset": self.dataset,
                "spec": self.spec.model_dump(),
                "batch_num": self.batch_num,
                "task": {"name": self.task.name, "metric": self.task.metric, "label": self.task.metric_label},
                "caveats": self.caveats,
                **speed,
                **selection,
                **tuning,
            }
        )


def _json_safe(value: Any) -> Any:
    """JSON has no infinity: an SQNR of identical outputs is written as the string ``"inf"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


@dataclass
class Trained:
    """A calibrated and fine-tuned QAT model before export: what one tuning trial costs.

    ``fp32`` holds the FP32 model's outputs on the eval split, the reference every score
    compares with; they are computed before the layers are quantized, on the same copy.
    ``example`` is one training sample, named as the model's inputs (the export's input names).
    """

    qat: nn.Module
    config: QuantConfig
    fp32: np.ndarray
    task: Task
    loss_kind: str
    epoch_losses: list[float]
    example: Inputs
    device: torch.device
    # fine-tuned or calibrated only, whichever scored better (None without fine-tuning)
    selection: Selection | None = None
    resumed_at_epoch: int | None = None


def output_files(out: Path) -> dict[str, Path]:
    """Where a run leaves each result, by the key ``report.json`` lists it under."""
    return {key: out / name for key, name in OUTPUT_FILES.items()}


def train(
    model: ModelLike,
    dataset: Dataset,
    config: QuantConfig,
    spec: QATSpec,
    phases: Phases,
    *,
    first: bool = True,
    checkpoints: Checkpoints | None = None,
) -> Trained:
    """Calibrate and fine-tune a QAT copy of ``model`` quantized as ``config`` says.

    ``model`` is copied once: the copy first gives the FP32 outputs (the distillation
    targets and the eval reference), then its layers are quantized in place, so no FP32
    model is held beside the QAT one. The ``first`` run of a model also checks that it
    exports to ONNX at all (the tuner's later trials skip that). With ``checkpoints`` the
    fine-tune saves its state after each epoch and, given one, goes on from it: everything
    before (probe, calibration) runs again, cheaply and identically, and is then overwritten.
    """
    device = _device(spec.device)
    torch.manual_seed(spec.seed)
    task = infer_task(dataset.y_train, spec.task, spec.ignore_index)
    loss_kind = spec.resolved_loss(task.name)
    dataset = dataset.bound(model_inputs(model))
    x_train, example = dataset.x_train, dataset.x_train[:1]

    with phases.phase(Phase.LOADING, 1):
        module, facts = as_module(
            model, tensors(example, torch.device("cpu")), spec.target, graph=config.quantize_activation_matmuls
        )
        types = layer_types(module)
        check_layers(config, types)  # before any forward pass is spent on a config that cannot apply
        check_target(config, spec.target, types)
        check_budget(spec)
        module.eval().to(device)
        _probe(module, dataset, task, device)
        if first:
            check_exports(module, tensors(example, device), example.names)
        check_calibration(config.batch_num, spec.batch_size)
        teacher = predict(module, dataset.x_train, device) if loss_kind in DISTILLATION_LOSSES else None
        fp32 = predict(module, dataset.eval_split()[0], device)
        qat = quantize_layers(module, config, facts, tensors(example, device), spec.target).to(device)

    with phases.phase(Phase.CALIBRATING, config.batch_num):
        calibrate(qat, x_train, config.batch_num, spec.batch_size, device, phases)

    labels = teacher if teacher is not None else dataset.y_train
    assert labels is not None  # a run without labels distills toward the teacher's outputs
    targets = shared_tensor(labels)
    calibrated = snapshot(qat) if spec.epochs else None
    resume = _resume(qat, checkpoints, spec)
    if resume is not None:
        calibrated = resume["calibrated"]

    def save(epoch: int, state: dict[str, Any]) -> None:
        assert checkpoints is not None
        checkpoints.save(epoch, {**state, "model": qat.state_dict(), "calibrated": calibrated})

    with phases.phase(Phase.TRAINING, steps_per_epoch(len(x_train), spec.batch_size) * spec.epochs):
        loss = loss_function(loss_kind, task.ignore_index if task.name == "segmentation" else None)
        epoch_losses = fine_tune(
            qat, x_train, targets, loss, spec, device, phases, resume=resume, on_epoch=save if checkpoints else None
        )
    x_eval, y_eval, _ = dataset.eval_split()
    labels = y_eval if task.labelled else None
    selection = None if calibrated is None else keep_better(qat, calibrated, x_eval, labels, fp32, task, device)
    resumed_at = None if resume is None else resume["epoch"] + 1
    return Trained(qat, config, fp32, task, loss_kind, epoch_losses, example, device, selection, resumed_at)


def _resume(qat: nn.Module, checkpoints: Checkpoints | None, spec: QATSpec) -> dict[str, Any] | None:
    """The checkpoint to go on from, its model state already in ``qat``; ``None`` to train from the start."""
    state = checkpoints.load() if checkpoints is not None and spec.epochs else None
    if state is None or not 0 < state["epoch"] < spec.epochs:
        return None
    qat.load_state_dict(state["model"])
    print(
        f"resuming the fine-tune at epoch {state['epoch'] + 1} of {spec.epochs} from an earlier attempt",
        file=sys.stderr,
    )
    return state


def finish(trained: Trained, dataset: Dataset, out: Path, spec: QATSpec, phases: Phases) -> Report:
    """Export ``trained`` into ``out`` and score it; ``out/config.json`` is the caller's to write."""
    files = output_files(out)
    qat, device = trained.qat, trained.device
    with phases.phase(Phase.EXPORTING, 1):  # on the CPU, where the example input lives
        qat.eval().cpu()
        write_record(files["record"], deployed_layers(qat))
        onnx_model = export_onnx(qat, tensors(trained.example, torch.device("cpu")), input_names=trained.example.names)
        write_models(onnx_model, files["fake_quant_model"], files["deploy_model"])
    qat.to(device)

    x_eval, y_eval, eval_source = dataset.eval_split()
    fp32, task = trained.fp32, trained.task
    labels = y_eval if task.labelled else None
    with phases.phase(Phase.EVALUATING, 3):
        # the selection already ran the kept state on the eval split
        simulated = predict(qat, x_eval, device) if trained.selection is None else trained.selection.outputs
        phases.step(1, 3)
        deployed = predict_onnx(
            files["deploy_model"], x_eval, integer_kernels=TARGET_FORMS[spec.target].cpu_integer_kernels
        )
        accuracy = {
            "fp32": scores(fp32, fp32, labels, task),
            "int8_simulated": scores(fp32, simulated, labels, task),
            "int8_onnxruntime": scores(fp32, deployed, labels, task),
        }
        phases.step(2, 3)
        batches = sorted({1, min(spec.batch_size, SPEED_BATCH)})
        speed = measure_speed(files["fake_quant_model"], files["deploy_model"], x_eval[: max(batches)], batches)

    return Report(
        out_dir=out,
        files=files,
        accuracy=accuracy,
        deploy_vs_simulated=scores(simulated, deployed, None, task),
        layers=_layer_reports(qat, trained.config),
        embeddings=_embedding_reports(qat, trained.config),
        activation_matmuls=_matmul_reports(qat),
        threads=torch.get_num_threads(),
        resumed_at_epoch=trained.resumed_at_epoch,
        device=_device_name(trained.device),
        loss=trained.loss_kind,
        epoch_losses=trained.epoch_losses,
        timings_s=phases.timings,
        dataset={
            "train_samples": len(dataset.x_train),
            "eval_samples": len(x_eval),
            "eval_source": eval_source,
            "inputs": trained.example.describe(),
            **({"classes": list(dataset.classes)} if dataset.classes else {}),
            "labels": dataset.has_labels,
        },
        spec=spec,
        batch_num=trained.config.batch_num,
        task=task,
        speed=speed,
        selection=trained.selection,
        caveats=run_caveats(fp32, y_eval if task.name == "classification" else None, eval_source),
    )


def write_report(report: Report) -> None:
    """``report.json`` and the page rendered from it, beside the models."""
    report.files["report"].write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    write_report_html(report.to_dict(), report.out_dir)


def _device_name(device: torch.device) -> str:
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def _device(name: str) -> torch.device:
    """The device ``spec.device`` names; ``auto`` is the GPU torch sees, if any, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError(
            f"device '{name}' was requested, but torch sees no CUDA device here; use device cpu", field="device"
        )
    return torch.device(name)


PROBE_ERRORS = (RuntimeError, ValueError, TypeError, AssertionError, IndexError)


def _probe(reference: nn.Module, dataset: Dataset, task: Task, device: torch.device) -> None:
    """Run the FP32 model on two samples and on three, so a data/model mismatch or a batch size fixed
    at export fails before any work, with torch's whole message (it says what the program expected)."""
    out = _forward(reference, dataset.x_train[:2], device)
    if isinstance(out, BaseException):
        if not isinstance(_forward(reference, dataset.x_train[:1], device), BaseException):
            raise _fixed_batch(1, 2, out) from out
        raise DataError(
            f"the model cannot run on x_train samples ({_samples(dataset.x_train)}): {one_line(out)}", field="x_train"
        ) from out
    if not isinstance(out, torch.Tensor):
        raise ModelError(
            f"the model must return one tensor, the one the INT8 model is scored and deployed by; it returns "
            f"{_returned(out)}: export a wrapper whose forward returns that tensor, e.g. model(x).logits"
        )
    if out.dim() < 2:
        raise ModelError(f"the model's output must be N x outputs (2+ dimensions), got shape {tuple(out.shape)}")
    if len(dataset.x_train) > 2:
        three = _forward(reference, dataset.x_train[:3], device)
        if isinstance(three, BaseException):
            raise _fixed_batch(2, 3, three) from three
    check_labels(dataset, task, tuple(out.shape))


@torch.no_grad()
def _forward(reference: nn.Module, x: Inputs, device: torch.device) -> object:
    """The model's output on ``x``, or the error it raised (out of memory is raised, not returned)."""
    try:
        return reference(*tensors(x, device))
    except PROBE_ERRORS as exc:
        if is_out_of_memory(exc):
            raise
        return exc


def _returned(out: object) -> str:
    """``a dict of logits, hidden_states.0, hidden_states.1``: the outputs' names, as torch flattens them."""
    leaves, _ = torch.utils._pytree.tree_flatten_with_path(out)
    names = [
        ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path) for path, _ in leaves
    ]
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f"a {type(out).__name__} of {len(leaves)} values ({shown})"


def _samples(x: Inputs) -> str:
    """``input_ids int64 (128,), attention_mask bool (128,)``: what the model was given."""
    return ", ".join(f"{name} {info['dtype']} {tuple(info['shape'])}" for name, info in x.describe().items())


def _fixed_batch(works: int, fails: int, exc: BaseException) -> ModelError:
    return ModelError(
        f"the model runs on a batch of {works} but not of {fails}: its batch size is fixed ({one_line(exc)}). "
        "Calibration, training and evaluation pass batches of every size: export it with a dynamic batch, "
        "torch.export.export(model, args, dynamic_shapes=({0: torch.export.Dim('batch')},))"
    )


def scores(reference: np.ndarray, outputs: np.ndarray, labels: np.ndarray | None, task: Task) -> Scores:
    """``outputs`` against ``reference`` and, given ``labels``, against them by ``task``'s metric."""
    metric = task.score(outputs, labels) if labels is not None else None
    return Scores(
        top1=metric if task.name == "classification" else None,
        agreement=task.agreement(reference, outputs),
        sqnr_db=sqnr_db(reference, outputs),
        metric=metric,
    )


def _relative_error(quantized: torch.Tensor, weight: torch.Tensor) -> float:
    """|Q(w) - w|^2 / |w|^2."""
    return float((quantized - weight).pow(2).sum() / weight.pow(2).sum().clamp_min(1e-30))


@torch.no_grad()
def _matmul_reports(qat: nn.Module) -> dict[str, dict[str, float]]:
    """Observed range and clips of each matmul input's quantizer, by its name (``<matmul>_input<i>_quant``)."""
    reports = {}
    for name, quantizer in modules_of(qat, MatmulInputQuantizer):
        clip_max, clip_min = quantizer.clips()
        reports[name] = {
            "observed_min": float(quantizer.observed_min),
            "observed_max": float(quantizer.observed_max),
            "clip_min": float(clip_min),
            "clip_max": float(clip_max),
        }
    return reports


@torch.no_grad()
def _embedding_reports(qat: nn.Module, config: QuantConfig) -> dict[str, EmbeddingReport]:
    reports = {}
    for name, table in quant_embeddings(qat):
        weight = table.layer.weight.detach().float()
        entry = config.layers[name].retrain_weight_config
        reports[name] = EmbeddingReport(
            rows=weight.shape[0],
            dim=weight.shape[1],
            weight_dst_type=entry.dst_type,
            channel_wise=entry.channel_wise,
            weight_rel_mse=_relative_error(table.weight_quant(weight), weight),
        )
    return reports


@torch.no_grad()
def _layer_reports(qat: nn.Module, config: QuantConfig) -> dict[str, LayerReport]:
    reports = {}
    for name, layer in quant_layers(qat):
        act, entry = layer.act_quant, config.layers[name]
        clip_max, clip_min = act.clips()
        weight = layer.layer.weight.detach().float()
        reports[name] = LayerReport(
            observed_min=float(act.observed_min),
            observed_max=float(act.observed_max),
            clip_min=float(clip_min.clamp_max(0.0)),
            clip_max=float(clip_max.clamp_min(1e-8)),
            clip_min_learned=isinstance(act.clip_min, nn.Parameter),
            clip_max_learned=isinstance(act.clip_max, nn.Parameter),
            fixed_min=bool(act.fixed_min),
            data_dst_type=entry.retrain_data_config.dst_type,
            weight_dst_type=entry.retrain_weight_config.dst_type,
            channel_wise=entry.retrain_weight_config.channel_wise,
            weight_rel_mse=_relative_error(layer.weight_quant(weight), weight),
            folded_bn=layer.folds_bn if layer.folds_bn and can_fold(layer) else None,
        )
    return reports
