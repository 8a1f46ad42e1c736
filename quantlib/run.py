"""The QAT pipeline as one call, :func:`run_qat`, used by ``qat quantize`` and by the service's workers.

It reads the config once (the user's file, or the default generated for the model),
writes it into ``out_dir`` once, and then either trains and exports it
(:mod:`quantlib.train`) or hands it to the tuner (:mod:`quantlib.tune`), which repeats
the training with the configs it proposes: ``run -> tune -> train``, never back.
It reports its phase through a callback (the CLI draws a progress bar, a worker writes
the job row) and leaves everything a user needs in ``out_dir`` under the published
names (:data:`quantlib.outputs.OUTPUT_FILES`): the ONNX models, the record, the config
that was used, ``report.json`` and ``report.html``.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import torch

from quantlib.checkpoint import Checkpoints
from quantlib.config import QUANTIZABLE_TYPES, ConfigError, QuantConfig, load_config
from quantlib.data import Dataset
from quantlib.errors import NoQuantizableLayers, SpecError
from quantlib.outputs import OUTPUT_FILES
from quantlib.phases import Phases, ProgressFn
from quantlib.prepare import ModelLike, default_config, model_layer_types
from quantlib.signature import model_inputs
from quantlib.spec import AccuracyTarget, QATSpec, Target
from quantlib.tasks import Task, infer_task
from quantlib.train import Report, finish, train, write_report
from quantlib.tune import run_tuned

__all__ = ["Report", "run_qat"]


def run_qat(
    model: ModelLike,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    config_file: str | Path | None = None,
    config_defination: str | Path | None = None,
    spec: QATSpec | None = None,
    on_progress: ProgressFn | None = None,
    checkpoints: Checkpoints | None = None,
) -> Report:
    """Quantize ``model`` with QAT on ``dataset`` and write the results into ``out_dir``.

    Without ``config_file`` the default config (optionally shaped by
    ``config_defination``) is generated. With ``spec.accuracy`` the config is tuned
    until the accuracy target is met (:mod:`quantlib.tune`). Bad inputs raise
    ConfigError, DataError or ModelError before any training starts. ``checkpoints``
    (a plain run's, not a tuned one's) saves the fine-tune after each epoch and resumes
    from an earlier attempt's checkpoint (:mod:`quantlib.checkpoint`).
    """
    spec = spec or QATSpec()
    dataset = dataset.bound(model_inputs(model))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = _run_config(out / OUTPUT_FILES["config"], model, config_file, config_defination, spec.target)
    _check_something_to_quantize(
        model, config, given="config" if config_file else "config_defination" if config_defination else None
    )
    if spec.accuracy is not None:
        _check_tuning_metric(spec.accuracy, infer_task(dataset.y_train, spec.task, spec.ignore_index))
        origin = (
            "the given config"
            if config_file
            else "the config_defination"
            if config_defination
            else "the default config"
        )
        return run_tuned(model, dataset, out, config, origin=origin, spec=spec, on_progress=on_progress)
    phases = Phases(on_progress)
    report = finish(train(model, dataset, config, spec, phases, checkpoints=checkpoints), dataset, out, spec, phases)
    write_report(report)
    return report


def _check_tuning_metric(target: AccuracyTarget, task: Task) -> None:
    """The tuner's ``top1`` drop is in points of a fraction (top-1, mIoU, F1); a PSNR has no such points."""
    if target.metric == "top1" and task.name == "regression":
        raise SpecError(
            "accuracy.metric top1 drives a drop in points of top-1, mIoU or F1, but this run's task is regression "
            "(scored in dB PSNR); use accuracy.metric sqnr",
            field="accuracy.metric",
        )


def _run_config(
    path: Path,
    model: ModelLike,
    config_file: str | Path | None,
    config_defination: str | Path | None,
    target: Target,
) -> QuantConfig:
    """The run's config, also left at ``path``: the user's (validated, copied as written) or a generated default."""
    if config_file is not None and config_defination is not None:
        raise ConfigError("give either a config file or a config_defination, not both", field="config_defination")
    if config_file is None:
        config = default_config(model, config_defination, target)
        config.write(path)
        return config
    config = load_config(config_file)
    if not (path.exists() and path.samefile(config_file)):
        shutil.copyfile(config_file, path)
    return config


def _check_something_to_quantize(model: ModelLike, config: QuantConfig, *, given: str | None) -> None:
    """A config that quantizes nothing would fine-tune the FP32 model and call it INT8: refused first.
    ``given`` names the user's file the config came from (its field), None for the default config."""
    if config.enabled_layers():
        return
    if given is not None:
        raise NoQuantizableLayers(
            f"the {given} enables no layer (none is left with retrain_enable true), so nothing would be "
            "quantized; enable at least one layer, or leave it out to quantize every supported one",
            field=given,
        )
    root = _root_weights(model)
    if root:
        raise NoQuantizableLayers(
            f"the model's weights ({', '.join(root[:4])}) belong to its root module, so no layer has a name a "
            "config could refer to; wrap the layer in a module (torch.nn.Sequential(layer)) and export that",
            field="model",
        )
    types = model_layer_types(model)
    leaves = Counter(kind for name, kind in types.items() if not any(other.startswith(f"{name}.") for other in types))
    found = ", ".join(f"{kind} x{count}" for kind, count in leaves.most_common(6)) or "none"
    raise NoQuantizableLayers(
        f"the model has no layer that can be quantized (supported: {', '.join(QUANTIZABLE_TYPES)}); "
        f"its layers are {found}. Build it from those layers, or give it as a torch.export program (.pt2), "
        "where a matmul on a module's own weight (addmm as transformers' Conv1D, x @ self.weight) is found too",
        field="model",
    )


def _root_weights(model: ModelLike) -> list[str]:
    """The parameters of ``model``'s root module itself (an exported bare ``nn.Linear``): layers need a name."""
    names = model.state_dict.keys() if isinstance(model, torch.export.ExportedProgram) else model.state_dict()
    return sorted(name for name in names if "." not in name)
