"""The QAT pipeline: config, calibration, fine-tuning, evaluation, export and a report.

One function, :func:`run_qat`, used by ``qat quantize`` and by the service's workers.
It reports its phase through a callback (the CLI draws a progress bar, a worker writes
the job row) and leaves everything a user needs in ``out_dir``: the ONNX models, the
record, the config that was used and ``report.json``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from quantlib.api import create_quant_retrain_config, create_quant_retrain_model, save_quant_retrain_model
from quantlib.config import ConfigError, QuantConfig, check_calibration, load_config
from quantlib.data import DataError, Dataset, check_labels
from quantlib.errors import is_out_of_memory
from quantlib.export.fold import can_fold
from quantlib.metrics import sqnr_db, top1_accuracy, top1_agreement
from quantlib.modelfile import ModelError
from quantlib.prepare import ModelLike, as_module, quant_layers
from quantlib.spec import QATSpec

__all__ = ["LayerReport", "QATSpec", "Report", "Scores", "run_qat"]

# on_progress(phase, step, total, loss, epoch); loss and epoch are None outside training.
ProgressFn = Callable[[str, int, int, float | None, int | None], None]

PROGRESS_INTERVAL_S = 1.0
EVAL_BATCH = 256


@dataclass(frozen=True)
class Scores:
    """One row of the accuracy table; ``top1`` is None without labels."""

    top1: float | None
    agreement: float
    sqnr_db: float


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


@dataclass
class Report:
    """The outcome of a run; ``report.json`` holds the same, paths relative to ``out_dir``.

    ``deploy_vs_simulated`` compares the exported ONNX model with the PyTorch QAT model
    (top1 is None there): the evidence that what ships computes what was evaluated.
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

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(
            {
                "files": {key: path.name for key, path in self.files.items()},
                "accuracy": {key: asdict(row) for key, row in self.accuracy.items()},
                "deploy_vs_simulated": asdict(self.deploy_vs_simulated),
                "layers": {key: asdict(layer) for key, layer in self.layers.items()},
                "loss": {"kind": self.loss, "epoch_means": self.epoch_losses},
                "timings_s": self.timings_s,
                "dataset": self.dataset,
                "spec": self.spec.model_dump(),
                "batch_num": self.batch_num,
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


class _Phases:
    """Times each phase and forwards progress at most once per interval, plus phase edges."""

    def __init__(self, callback: ProgressFn | None) -> None:
        self.callback = callback
        self.timings: dict[str, float] = {}
        self.name = ""
        self._last = 0.0

    @contextmanager
    def phase(self, name: str, total: int) -> Iterator[None]:
        self.name = name
        start = time.perf_counter()
        self._emit(0, total, None, None)
        yield
        self.timings[name] = round(time.perf_counter() - start, 3)
        self._emit(total, total, None, None)

    def due(self) -> bool:
        return self.callback is not None and time.monotonic() - self._last >= PROGRESS_INTERVAL_S

    def step(self, step: int, total: int, loss: float | None = None, epoch: int | None = None) -> None:
        self._emit(step, total, loss, epoch)

    def _emit(self, step: int, total: int, loss: float | None, epoch: int | None) -> None:
        if self.callback is not None:
            self._last = time.monotonic()
            self.callback(self.name, step, total, loss, epoch)


def run_qat(
    model: ModelLike,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    config_file: str | Path | None = None,
    config_defination: str | Path | None = None,
    spec: QATSpec | None = None,
    on_progress: ProgressFn | None = None,
) -> Report:
    """Quantize ``model`` with QAT on ``dataset`` and write the results into ``out_dir``.

    Without ``config_file`` the default config (optionally shaped by
    ``config_defination``) is generated. Bad inputs raise ConfigError, DataError or
    ModelError before any training starts.
    """
    spec = spec or QATSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    phases = _Phases(on_progress)
    device = _device(spec.device)
    torch.manual_seed(spec.seed)
    loss_kind = spec.resolved_loss(dataset.has_labels)
    x_train = torch.from_numpy(dataset.x_train)
    example = (x_train[:1],)
    files = {
        "config": out / "config.json",
        "deploy_model": out / "model_deploy_model.onnx",
        "fake_quant_model": out / "model_fake_quant_model.onnx",
        "record": out / "record.txt",
        "record_json": out / "record.json",
        "report": out / "report.json",
    }

    with phases.phase("loading", 1):
        reference = as_module(model)[0].eval().to(device)
        _probe(reference, dataset, device)
        config = _write_config(files["config"], model, example, config_file, config_defination)
        check_calibration(config.batch_num, spec.batch_size)
        qat = create_quant_retrain_model(files["config"], model, files["record"], example).to(device)
        teacher = _predict(reference, dataset.x_train, device) if loss_kind != "ce" else None

    with phases.phase("calibrating", config.batch_num):
        _calibrate(qat, x_train, config.batch_num, spec.batch_size, device, phases)

    targets = torch.from_numpy(dataset.y_train) if loss_kind == "ce" else torch.from_numpy(teacher)
    with phases.phase("training", _steps_per_epoch(len(x_train), spec.batch_size) * spec.epochs):
        epoch_losses = _train(qat, x_train, targets, loss_kind, spec, device, phases)

    with phases.phase("exporting", 1):  # on the CPU, where the example input lives
        save_quant_retrain_model(files["config"], qat.eval().cpu(), files["record"], out / "model", example)
    qat.to(device)

    x_eval, y_eval, eval_source = dataset.eval_split()
    with phases.phase("evaluating", 3):
        fp32 = _predict(reference, x_eval, device)
        simulated = _predict(qat, x_eval, device)
        deployed = _predict_onnx(files["deploy_model"], x_eval)
        accuracy = {
            "fp32": _scores(fp32, fp32, y_eval),
            "int8_simulated": _scores(fp32, simulated, y_eval),
            "int8_onnxruntime": _scores(fp32, deployed, y_eval),
        }

    report = Report(
        out_dir=out,
        files=files,
        accuracy=accuracy,
        deploy_vs_simulated=_scores(simulated, deployed, None),
        layers=_layer_reports(qat, config),
        loss=loss_kind,
        epoch_losses=epoch_losses,
        timings_s=phases.timings,
        dataset={
            "train_samples": len(dataset.x_train),
            "eval_samples": len(x_eval),
            "eval_source": eval_source,
            "sample_shape": list(dataset.sample_shape),
            "labels": dataset.has_labels,
        },
        spec=spec,
        batch_num=config.batch_num,
    )
    files["report"].write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return report


def _device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device '{name}' was requested, but torch sees no CUDA device here; use device cpu",
            field="device",
            code="BAD_SPEC",
        )
    return torch.device(name)


def _probe(reference: nn.Module, dataset: Dataset, device: torch.device) -> None:
    """Run the FP32 model on two samples, so a data/model mismatch fails before any work."""
    try:
        with torch.no_grad():
            out = reference(torch.from_numpy(dataset.x_train[:2]).to(device))
    except (RuntimeError, ValueError, TypeError, AssertionError, IndexError) as exc:
        if is_out_of_memory(exc):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"the model cannot run on x_train samples of shape {dataset.sample_shape}: {reason}", field="x_train"
        ) from exc
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"the model must return one tensor, it returns {type(out).__name__}")
    if out.dim() < 2:
        raise ModelError(f"the model's output must be N x outputs (2+ dimensions), got shape {tuple(out.shape)}")
    if dataset.has_labels:
        check_labels(dataset, out.shape[1])


def _write_config(
    path: Path,
    model: ModelLike,
    example: tuple[torch.Tensor, ...],
    config_file: str | Path | None,
    config_defination: str | Path | None,
) -> QuantConfig:
    """The run's config at ``path``: the user's (validated, copied) or a generated default."""
    if config_file is not None and config_defination is not None:
        raise ConfigError("give either a config file or a config_defination, not both", field="config_defination")
    if config_file is None:
        create_quant_retrain_config(path, model, example, config_defination)
        return load_config(path)
    config = load_config(config_file)
    if not (path.exists() and path.samefile(config_file)):
        shutil.copyfile(config_file, path)
    return config


def _steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // batch_size)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches; a short last batch is dropped (BatchNorm needs > 1 sample)."""
    batches = list(torch.randperm(n, generator=generator).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


@torch.no_grad()
def _calibrate(
    qat: nn.Module, x: torch.Tensor, batch_num: int, batch_size: int, device: torch.device, phases: _Phases
) -> None:
    """The first ``batch_num`` batches in data order; a short dataset wraps around."""
    qat.eval()
    for b in range(batch_num):
        idx = torch.arange(b * batch_size, (b + 1) * batch_size) % len(x)
        qat(x[idx].to(device))
        if phases.due():
            phases.step(b + 1, batch_num)


def _loss(kind: str, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "ce":
        return F.cross_entropy(out, target)
    if kind == "mse":
        return F.mse_loss(out, target)
    return F.kl_div(F.log_softmax(out, 1), F.log_softmax(target, 1), reduction="batchmean", log_target=True)


def _train(
    qat: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    loss_kind: str,
    spec: QATSpec,
    device: torch.device,
    phases: _Phases,
) -> list[float]:
    """Fine-tune with the lr decaying to 0 (cosine): a converged FP32 model needs polishing,
    not another descent. The loss is read on the host only when progress is due and once
    per epoch, so steps queue up on a GPU without waiting."""
    params = [p for p in qat.parameters() if p.requires_grad]
    if spec.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(params, lr=spec.lr, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(params, lr=spec.lr)
    generator = torch.Generator().manual_seed(spec.seed)
    total = _steps_per_epoch(len(x), spec.batch_size) * spec.epochs
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total, 1))
    step = 0
    epoch_losses: list[float] = []
    _train_mode(qat, freeze_bn=spec.freeze_bn)
    for epoch in range(1, spec.epochs + 1):
        batches = _batches(len(x), spec.batch_size, generator)
        running = torch.zeros((), device=device)
        for idx in batches:
            loss = _loss(
                loss_kind, qat(x[idx].to(device, non_blocking=True)), targets[idx].to(device, non_blocking=True)
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += loss.detach()
            step += 1
            if phases.due():
                phases.step(step, total, loss.item(), epoch)
        epoch_losses.append(float(running) / len(batches))
    return epoch_losses


def _train_mode(model: nn.Module, *, freeze_bn: bool) -> None:
    """Training mode; with ``freeze_bn`` BatchNorm normalises with its running statistics
    (its affine weights still train), so training sees what evaluation will see."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


@torch.no_grad()
def _predict(model: nn.Module, x: np.ndarray, device: torch.device) -> np.ndarray:
    model.eval()
    outputs = [
        model(torch.from_numpy(x[i : i + EVAL_BATCH]).to(device)).float().cpu() for i in range(0, len(x), EVAL_BATCH)
    ]
    return torch.cat(outputs).numpy()


def _predict_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.ascontiguousarray(x)
    return np.concatenate([session.run(None, {name: x[i : i + EVAL_BATCH]})[0] for i in range(0, len(x), EVAL_BATCH)])


def _scores(reference: np.ndarray, outputs: np.ndarray, labels: np.ndarray | None) -> Scores:
    return Scores(
        top1=top1_accuracy(outputs, labels) if labels is not None else None,
        agreement=top1_agreement(reference, outputs),
        sqnr_db=sqnr_db(reference, outputs),
    )


@torch.no_grad()
def _layer_reports(qat: nn.Module, config: QuantConfig) -> dict[str, LayerReport]:
    reports = {}
    for name, layer in quant_layers(qat):
        act, entry = layer.act_quant, config.layers[name]
        weight = layer.layer.weight.detach().float()
        error = (layer.weight_quant(weight) - weight).pow(2).sum() / weight.pow(2).sum().clamp_min(1e-30)
        reports[name] = LayerReport(
            observed_min=float(act.observed_min),
            observed_max=float(act.observed_max),
            clip_min=float(act.clip_min.clamp_max(0.0)),
            clip_max=float(act.clip_max.clamp_min(1e-8)),
            clip_min_learned=isinstance(act.clip_min, nn.Parameter),
            clip_max_learned=isinstance(act.clip_max, nn.Parameter),
            fixed_min=bool(act.fixed_min),
            data_dst_type=entry.retrain_data_config.dst_type,
            weight_dst_type=entry.retrain_weight_config.dst_type,
            channel_wise=entry.retrain_weight_config.channel_wise,
            weight_rel_mse=float(error),
            folded_bn=layer.folds_bn if layer.folds_bn and can_fold(layer) else None,
        )
    return reports
