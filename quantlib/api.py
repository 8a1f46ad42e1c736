"""The four AMCT-compatible entry points. A team switches from AMCT by changing the import."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from quantlib.config import build_config, load_config, load_simple_config
from quantlib.export.modules import deployed_layers
from quantlib.export.onnx_export import DynamicAxes, export_onnx, write_models
from quantlib.export.record import write_record
from quantlib.prepare import ModelLike, as_inputs, as_module, layer_types, prepare

PathLike = str | os.PathLike[str]


def create_quant_retrain_config(
    config_file: PathLike,
    model: ModelLike,
    input_data: object,
    config_defination: PathLike | None = None,
) -> None:
    """Write the default config for ``model``: every quantizable layer, ULQ + ARQ, INT8.

    With ``config_defination`` (a simplified JSON/YAML config) its skips and overrides
    are applied on top. ``input_data`` is accepted for AMCT compatibility; the layer
    list comes from the module tree.
    """
    as_inputs(input_data)
    module, _ = as_module(model)
    simple = load_simple_config(config_defination) if config_defination is not None else None
    config = build_config(layer_types(module), simple)
    path = Path(config_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.to_file_dict(), indent=4) + "\n", encoding="utf-8")


def create_quant_retrain_model(
    config_file: PathLike, model: ModelLike, record_file: PathLike, input_data: object
) -> nn.Module:
    """The QAT model: train it with any loop; its first ``batch_num`` forwards calibrate.

    ``model`` is not modified: a copy is quantized. ``record_file`` is where
    :func:`save_quant_retrain_model` writes the record (AMCT's signature keeps it here).
    """
    del record_file
    return prepare(model, load_config(config_file), input_data)


def restore_quant_retrain_model(
    config_file: PathLike,
    model: ModelLike,
    record_file: PathLike,
    input_data: object,
    pth_file: PathLike,
    state_dict_name: str | None = None,
) -> nn.Module:
    """Rebuild the QAT model and load a checkpoint of it, learned clips included.

    Unlike AMCT, calibration does not run again after a restore: the checkpoint's
    clips are the ones that training learned, and they are kept.
    """
    qat = create_quant_retrain_model(config_file, model, record_file, input_data)
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
    return write_models(fake_quant, save_path)
