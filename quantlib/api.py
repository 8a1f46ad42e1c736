"""The four AMCT-compatible entry points. A team switches from AMCT by changing the import.

Each is a thin adapter over the library (:mod:`quantlib.prepare`, :mod:`quantlib.config`,
:mod:`quantlib.export`) that keeps AMCT's file-based signatures; quantlib's own pipeline
(:mod:`quantlib.run`) calls the library directly and passes configs as objects.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from quantlib.config import load_config
from quantlib.export.modules import deployed_layers
from quantlib.export.onnx_export import DynamicAxes, export_onnx, write_models
from quantlib.export.record import write_record
from quantlib.prepare import ModelLike, as_inputs, default_config, prepare
from quantlib.spec import Target

PathLike = str | os.PathLike[str]


def create_quant_retrain_config(
    config_file: PathLike,
    model: ModelLike,
    input_data: object,
    config_defination: PathLike | None = None,
    target: Target = "generic-qdq",
) -> None:
    """Write the default config for ``model``: every quantizable layer, ULQ + ARQ, INT8.

    With ``config_defination`` (a simplified JSON/YAML config) its skips and overrides
    are applied on top. ``input_data`` is accepted for AMCT compatibility; the layer
    list comes from the module tree. ``target`` (as for :func:`create_quant_retrain_model`)
    leaves embedding tables in float where it has no int8 gather.
    """
    as_inputs(input_data)
    default_config(model, config_defination, target).write(config_file)


def create_quant_retrain_model(
    config_file: PathLike,
    model: ModelLike,
    record_file: PathLike,
    input_data: object,
    *,
    target: Target = "generic-qdq",
) -> nn.Module:
    """The QAT model: train it with any loop; its first ``batch_num`` forwards calibrate.

    ``model`` is not modified: a copy is quantized. ``record_file`` is where
    :func:`save_quant_retrain_model` writes the record (AMCT's signature keeps it here).
    ``target`` (not AMCT's) shapes the export for a runtime, e.g. ``"onnxruntime-cpu"``
    for its integer kernels; AMCT's form, ``"generic-qdq"``, is the default.
    """
    del record_file
    return prepare(model, load_config(config_file), input_data, target)


def restore_quant_retrain_model(
    config_file: PathLike,
    model: ModelLike,
    record_file: PathLike,
    input_data: object,
    pth_file: PathLike,
    state_dict_name: str | None = None,
    *,
    target: Target = "generic-qdq",
) -> nn.Module:
    """Rebuild the QAT model and load a checkpoint of it, learned clips included.

    Unlike AMCT, calibration does not run again after a restore: the checkpoint's
    clips are the ones that training learned, and they are kept.
    """
    qat = create_quant_retrain_model(config_file, model, record_file, input_data, target=target)
    checkpoint = torch.load(pth_file, map_location="cpu", weights_only=True)
    state = checkpoint[state_dict_name] if state_dict_name else checkpoint
    qat.load_state_dict(state)
    return qat


def save_quant_retrain_model(
    config_file: PathLike,
    model: nn.Module,
    record_file: PathLike,
    save_path: PathLike,
    input_data: object,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: DynamicAxes | None = None,
) -> tuple[Path, Path]:
    """Export ``{save_path}_fake_quant_model.onnx`` and ``{save_path}_deploy_model.onnx``
    (QDQ ONNX, BatchNorm folded, int8/int4 weights in the deploy model) and the record.

    The batch axis is dynamic unless ``dynamic_axes`` says otherwise.
    """
    load_config(config_file)
    inputs = as_inputs(input_data)
    write_record(record_file, deployed_layers(model))
    fake_quant = export_onnx(
        model, inputs, input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes
    )
    fake_path, deploy_path = Path(f"{save_path}_fake_quant_model.onnx"), Path(f"{save_path}_deploy_model.onnx")
    write_models(fake_quant, fake_path, deploy_path)
    return fake_path, deploy_path
