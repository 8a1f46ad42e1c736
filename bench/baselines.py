"""The tools teams use today, set up the way their documentation recommends for x86 CPUs.

torch.ao FX: ``prepare_qat_fx`` with the x86 default QAT qconfig mapping (per-channel
symmetric INT8 weights, affine UINT8 activations), converted with ``convert_fx`` to
fbgemm kernels. torchao PT2E: ``prepare_qat_pt2e`` with the X86InductorQuantizer's QAT
config (per-channel weights as well), converted with ``convert_pt2e`` to a
quantize/dequantize graph. Both prepare a copy: the FP32 model stays the reference.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

BATCH = torch.export.Dim("batch", min=2, max=4096)


@dataclass(frozen=True)
class Baseline:
    """How to make a trainable QAT copy of a model and how to turn it into the deployed one."""

    name: str
    prepare: Callable[[nn.Module, tuple[torch.Tensor, ...]], nn.Module]
    convert: Callable[[nn.Module], nn.Module]
    train: Callable[[nn.Module], None]  # fine-tuning mode, BatchNorm statistics frozen
    eval: Callable[[nn.Module], None]


def prepare_fx(model: nn.Module, example: tuple[torch.Tensor, ...]) -> nn.Module:
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    return prepare_qat_fx(copy.deepcopy(model).train(), get_default_qat_qconfig_mapping("x86"), example)


def convert_fx(prepared: nn.Module) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx as convert

    return convert(copy.deepcopy(prepared).eval())


def train_frozen_bn(model: nn.Module) -> None:
    """Training mode with BatchNorm statistics frozen, as our pipeline fine-tunes (freeze_bn):
    every tool then trains the same thing, not its own small-batch statistics."""
    from torch.ao.nn.intrinsic.qat import freeze_bn_stats

    model.train()
    model.apply(freeze_bn_stats)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _pattern_key(
    pattern: Callable[..., Any], example: tuple[Any, ...], is_cuda: bool, kwargs: dict[str, Any]
) -> Hashable:
    """What a conv-bn pattern graph depends on: its code, the flags it closes over, the input shapes."""

    def describe(value: Any) -> Hashable:
        return (tuple(value.shape), value.dtype) if isinstance(value, torch.Tensor) else value

    pattern = getattr(pattern, "fn", pattern)  # torchao wraps some patterns in a WrapperModule
    cells = tuple(cell.cell_contents for cell in pattern.__closure__ or ())
    inputs = tuple(describe(v) for v in example)
    return (pattern.__code__, cells, inputs, is_cuda, tuple(sorted((k, describe(v)) for k, v in kwargs.items())))


def _memoize_pt2e_patterns() -> None:
    """torchao re-exports the same ~100 model-independent conv-bn pattern graphs at every
    prepare and convert (about a second each here, over a minute per model). Caching
    them per process changes no graph, only the setup time, and keeps 21 PT2E runs
    inside the bench's budget; the bench reports that this was done."""
    from torchao.quantization.pt2e import qat_utils, utils

    original = utils._get_aten_graph_module_for_pattern
    if getattr(original, "memoized", False):
        return
    cache: dict[Hashable, Any] = {}

    def memoized(
        pattern: Callable[..., Any], example_inputs: tuple[Any, ...], is_cuda: bool = False, **kwargs: Any
    ) -> Any:
        try:
            key = _pattern_key(pattern, example_inputs, is_cuda, kwargs)
            hash(key)
        except (AttributeError, TypeError):
            return original(pattern, example_inputs, is_cuda, **kwargs)
        if key not in cache:
            cache[key] = original(pattern, example_inputs, is_cuda, **kwargs)
        return copy.deepcopy(cache[key])

    memoized.memoized = True  # type: ignore[attr-defined]
    utils._get_aten_graph_module_for_pattern = memoized
    qat_utils._get_aten_graph_module_for_pattern = memoized


def prepare_pt2e(model: nn.Module, example: tuple[torch.Tensor, ...]) -> nn.Module:
    logging.getLogger("torchao").setLevel(logging.ERROR)
    _memoize_pt2e_patterns()
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True))
    dynamic = tuple({0: BATCH} for _ in example)
    graph = torch.export.export(copy.deepcopy(model).train(), example, dynamic_shapes=dynamic).module()
    return prepare_qat_pt2e(graph, quantizer)


def convert_pt2e(prepared: nn.Module) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e as convert

    converted = convert(copy.deepcopy(prepared))
    _eval_pt2e(converted)
    return converted


def _eval_pt2e(model: nn.Module) -> None:
    from torchao.quantization.pt2e import move_exported_model_to_eval

    move_exported_model_to_eval(model)


BASELINES: tuple[Baseline, ...] = (
    Baseline("torch.ao FX QAT", prepare_fx, convert_fx, train_frozen_bn, lambda m: m.eval()),
    # an exported graph's BatchNorm follows the graph's mode; its eval graph still trains
    # (gradients flow, fake-quant observers stay on), with running statistics, i.e. frozen
    Baseline("torchao PT2E QAT", prepare_pt2e, convert_pt2e, _eval_pt2e, _eval_pt2e),
)
