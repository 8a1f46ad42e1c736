"""The inputs a model takes, as :class:`quantlib.inputs.InputSpec` values the dataset is bound to.

A program declares each input's name, dtype and shape (its batch axis left free); an
nn.Module declares only the names of its ``forward`` parameters. The API reads the same
facts torch-free from a ``.pt2``'s JSON (:func:`quantlib.pt2archive.program_inputs`).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from quantlib.inputs import InputSpec

ModelLike = nn.Module | torch.export.ExportedProgram
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def model_inputs(model: ModelLike) -> list[InputSpec]:
    """The tensor inputs ``model`` takes by position, in order."""
    if isinstance(model, torch.export.ExportedProgram):
        placeholders = {node.name: node for node in model.graph.nodes if node.op == "placeholder"}
        values = [placeholders[name].meta.get("val") for name in model.graph_signature.user_inputs]
        return [
            _tensor_spec(name, value)
            for name, value in zip(model.graph_signature.user_inputs, values, strict=True)
            if isinstance(value, torch.Tensor)
        ]
    parameters = list(inspect.signature(model.forward).parameters.values())
    specs = [InputSpec(p.name, optional=p.default is not p.empty) for p in parameters if p.kind in _POSITIONAL]
    if not specs and any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return [InputSpec("input")]
    return specs


def _tensor_spec(name: str, value: torch.Tensor) -> InputSpec:
    shape = tuple(dim if isinstance(dim, int) else None for dim in value.shape)
    return InputSpec(name, str(value.dtype).removeprefix("torch."), shape)
