"""Exporting the QAT model once with the dynamo exporter, and writing both ONNX models."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from quantlib.errors import one_line
from quantlib.export.int_weights import store_weights_as_integers
from quantlib.export.modules import export_form
from quantlib.export.ops import translation_table
from quantlib.graph.exported import widen_batch
from quantlib.layers import QuantLayer
from quantlib.pt2archive import ModelError

ANSI_COLOR = re.compile(r"\x1b\[[0-9;]*m")
DynamicAxes = Mapping[str, Mapping[int, str] | Sequence[int]]


def needs_int4(model: nn.Module) -> bool:
    return any(getattr(m, "bits", 8) == 4 for m in model.modules())


def opset_for(model: nn.Module) -> int:
    """21 for INT4 (its types) and for the onnxruntime-cpu form (GELU is then one op, which
    onnxruntime fuses with the bias before it); else 18, which older TensorRT parsers read."""
    for_onnxruntime = any(isinstance(m, QuantLayer) and m.int32_bias for m in model.modules())
    return 21 if needs_int4(model) or for_onnxruntime else 18


def default_names(inputs: Sequence[torch.Tensor], prefix: str) -> list[str]:
    return [prefix] if len(inputs) == 1 else [f"{prefix}{i}" for i in range(len(inputs))]


def _without_trace_metadata(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the exporter's per-node debug records: they hold stack traces with the
    uploader's file paths and are most of a small model's bytes."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    return model


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter narrates every stage on stdout and warns about optional packages;
    our callers show their own progress, so that chatter is dropped."""
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_log.setLevel(level)


def export_onnx(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: DynamicAxes | None = None,
) -> onnx.ModelProto:
    """The QAT ``model`` as fake-quant QDQ ONNX, in the opset :func:`opset_for` picks."""
    opset = opset_for(model)
    form = export_form(model)
    input_names = list(input_names or default_names(inputs, "input"))
    with torch.no_grad():
        outputs = form(*inputs)
    n_out = len(outputs) if isinstance(outputs, (tuple, list)) else 1
    output_names = list(output_names or default_names([None] * n_out, "output"))  # type: ignore[list-item]
    if dynamic_axes is None:
        dynamic_axes = {name: {0: "batch"} for name in [*input_names, *output_names]}
        inputs = widen_batch(inputs)
    with _quiet_exporter():
        program = torch.onnx.export(
            form,
            inputs,
            dynamo=True,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dict(dynamic_axes) or None,  # type: ignore[arg-type]  # torch takes either form per input
            custom_translation_table=translation_table(opset),
            verbose=False,
        )
    if program is None:  # only the TorchScript exporter (dynamo=False) returns None
        raise RuntimeError("torch.onnx.export returned no ONNXProgram")
    return _without_trace_metadata(program.model_proto)


def check_exports(model: nn.Module, inputs: tuple[torch.Tensor, ...], input_names: Sequence[str]) -> None:
    """Export the FP32 model as :func:`export_onnx` will export its QAT copy, and drop the result: a
    model torch's exporter cannot take (Swin's window reshapes of a symbolic batch) is refused as the
    user's before any calibration or training is spent on it, instead of failing after the whole run."""
    try:
        export_onnx(model, inputs, input_names=input_names)
    except Exception as exc:  # noqa: BLE001 - any exporter failure means the same to the user
        raise ModelError(
            "the model does not export to ONNX with a dynamic batch, so no deployable INT8 model could be "
            f"written ({_exporter_cause(exc)}). Check that torch.onnx.export(model, args, dynamo=True, "
            "dynamic_shapes=...) works on your FP32 model first"
        ) from exc


def _exporter_cause(exc: BaseException) -> str:
    """What went wrong, from the exporter's report: its message is mostly colored advice to file a
    torch issue, with the cause under "Exception summary" and the user's own stack after it."""
    for link in (exc, exc.__cause__, exc.__context__):
        text = ANSI_COLOR.sub("", str(link or ""))
        if "## Exception summary" in text:
            summary = text.split("## Exception summary", 1)[1]
            return one_line(RuntimeError(re.split(r"Original traceback:|Use tlparse", summary)[0]))
    return one_line(exc)


def write_models(fake_quant: onnx.ModelProto, fake_path: Path, deploy_path: Path) -> None:
    """The fake-quant model at ``fake_path`` and, with integer weights, the deploy model at ``deploy_path``."""
    for path in (fake_path, deploy_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(fake_quant, str(fake_path))
    deploy = onnx.ModelProto()
    deploy.CopyFrom(fake_quant)
    onnx.save(store_weights_as_integers(deploy), str(deploy_path))
