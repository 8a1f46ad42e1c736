"""The training settings of one QAT run, checked before any work starts.

Torch-free: the API server validates the settings a job is submitted with using the
same model the worker runs with, so a bad value fails at submission, not on a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quantlib.errors import SpecError, first_error
from quantlib.images import Preprocess
from quantlib.tasks import TaskName, TaskSetting

# beyond these a run can only fail or never end: refused at submission
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_LR = 10.0
Optimizer = Literal["sgd", "adam"]
Loss = Literal["auto", "ce", "mse", "kl"]
Metric = Literal["top1", "sqnr"]


class AccuracyTarget(BaseModel):
    """What the tuner must reach: the seed's manual tuning loop, run for the user.

    The drop is measured against the FP32 model on the eval data. ``top1``: top-1
    accuracy points as a fraction (agreement with FP32 without labels), 0.01 = one point.
    ``sqnr``: the output's quantization noise power relative to its signal,
    10^(-SQNR/10), so 0.01 allows an output SQNR down to 20 dB and 0.001 to 30 dB.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    max_drop: float = Field(default=0.01, ge=0, le=1, description="the largest acceptable drop of the metric")
    metric: Metric = "top1"
    max_trials: int = Field(default=6, ge=1, le=50, description="QAT runs at most, the first (untuned) one included")
    weight_bits_budget: float | None = Field(
        default=None,
        ge=4,
        le=8,
        description="average weight bits over the config's layers, weighted by parameter count (a layer left "
        "in float counts 32): the tuner sets INT4 weights on the least sensitive layers until it fits",
    )


# the runtimes an export can be shaped for
Target = Literal["onnxruntime-cpu", "tensorrt", "generic-qdq"]
# which tensors between layers a target quantizes (quantlib.graph.quant_points)
Between = Literal["none", "integer-ops", "residual-adds"]


@dataclass(frozen=True)
class TargetForm:
    """What a target's integer kernels compute, so QAT simulates that and export writes it."""

    # the bias added in int32 on the accumulator's grid (input scale x weight scale), inside the layer
    int32_bias: bool
    # integer-ops: the inputs and outputs of residual adds, pooling and concat (onnxruntime's QLinear ops);
    # residual-adds: the input of a residual add that no layer produces (TensorRT fuses the rest into the conv)
    between: Between
    # weights stored as int8 (zero point 0) rather than uint8 shifted by 128
    signed_weights: bool
    # activations on a symmetric int8 grid, zero point 0
    symmetric_activations: bool
    # has kernels for INT4 weights; without, the seed's INT4 is refused
    int4: bool = False
    # gathers int8 rows (Gather on an int8 table, then one scale per row): embedding tables deploy as int8
    int8_gather: bool = True
    # INT8 weights of the layers it runs on a uint8 x int8 GEMM take a 7-bit grid, [-64, 63]: x86 kernels without
    # VNNI (AVX2, AVX-512) add pairs of products in saturating 16-bit lanes (255 x 127 x 2 overflows them), so
    # the full grid computes something else on those CPUs than QAT simulated (quantlib.layers.runs_on_gemm)
    gemm_weight_headroom: bool = False
    # onnxruntime's CPU integer kernels are its runtime, so a run scores the deploy model with them; a target for
    # another runtime (TensorRT on a GPU) is scored by its Q/DQ arithmetic, onnxruntime with no Q/DQ fusion
    # (its CPU kernels would add their own 16-bit saturation to int8 x int8 products on hosts without VNNI)
    cpu_integer_kernels: bool = True


TARGET_FORMS: dict[str, TargetForm] = {
    "onnxruntime-cpu": TargetForm(
        int32_bias=True,
        between="integer-ops",
        signed_weights=True,
        symmetric_activations=False,
        gemm_weight_headroom=True,
    ),
    "tensorrt": TargetForm(
        int32_bias=False,
        between="residual-adds",
        signed_weights=True,
        symmetric_activations=True,
        int8_gather=False,
        cpu_integer_kernels=False,
    ),
    "generic-qdq": TargetForm(
        int32_bias=False, between="none", signed_weights=False, symmetric_activations=False, int4=True
    ),
}


# a kernel a target may lack, and what a user does about a layer that needs it
Kernel = Literal["int4", "int8_gather"]
_WITHOUT: dict[str, str] = {
    "int4": "has no kernels for INT4 weights (its integer convolutions and matmuls take int8); use INT8 for this "
    "layer, or target generic-qdq, whose INT4 weights are dequantized at run time",
    "int8_gather": "has no kernel that gathers int8 rows (its Gather would dequantize the whole table); leave the "
    'table in float ("retrain_enable": false), or target onnxruntime-cpu or generic-qdq',
}


def refusal(target: str, kernel: Kernel) -> str | None:
    """Why ``target`` cannot deploy a layer that needs ``kernel``, or None when it can."""
    if getattr(TARGET_FORMS[target], kernel):
        return None
    return f"target {target} {_WITHOUT[kernel]}"


# the loss of each task's labels; distillation trains toward the FP32 model's outputs
LossKind = Literal["ce", "bce", "mse_labels", "mse", "kl"]
TASK_LOSSES: dict[str, LossKind] = {
    "classification": "ce",
    "segmentation": "ce",
    "multilabel": "bce",
    "regression": "mse_labels",
    "distillation": "mse",
}
DISTILLATION_LOSSES = ("mse", "kl")


class QATSpec(BaseModel):
    """How to fine-tune: ``loss='auto'`` is the labels' own loss (:data:`TASK_LOSSES`), MSE distillation
    without labels.

    The defaults are gentle on purpose: the model arrives trained, and Adam moves every
    weight by about ``lr`` per step however small its gradient, so a larger rate trades
    the FP32 model's decisions for noise. Raise ``lr``/``epochs`` for INT4.
    """

    # strict: JSON's true is not 1 and "2" is not 2; no NaN or infinity anywhere
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    epochs: int = Field(default=2, ge=0, le=MAX_EPOCHS, description="0 calibrates and exports without training")
    batch_size: int = Field(default=32, ge=1, le=MAX_BATCH_SIZE, description="training and calibration batch size")
    lr: float = Field(default=1e-5, gt=0, le=MAX_LR, description="decays to 0 on a cosine schedule")
    optimizer: Optimizer = "adam"
    loss: Loss = "auto"
    seed: int = 0
    freeze_bn: bool = Field(
        default=True,
        description="keep BatchNorm running statistics from the FP32 model: a short fine-tune "
        "should not replace them with noisy small-batch estimates",
    )
    device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="auto: the machine's GPU when torch sees one (on a GPU worker, its own), else the CPU; "
        "cuda or cuda:N asks for a GPU",
    )
    target: Target = Field(
        default="onnxruntime-cpu",
        description="the runtime the INT8 model is for; it decides the Q/DQ form and QAT simulates exactly "
        "that arithmetic. onnxruntime-cpu: int32 biases inside Conv/Gemm and quantized residual adds, pooling "
        "and concat, so onnxruntime runs integer kernels end to end; tensorrt: symmetric int8 (zero point 0), "
        "Q/DQ on layer inputs and residual adds as TensorRT's explicit quantization wants them; generic-qdq: "
        "Q/DQ on layer inputs and weights, float bias (the only target that takes INT4 weights)",
    )
    accuracy: AccuracyTarget | None = Field(
        default=None, description="tune the config until the INT8 model is this close to FP32"
    )
    task: TaskSetting = Field(
        default="auto",
        description="what the labels are: auto reads it from y_train (int64 (N,): classification; int64 "
        "(N, H, W) or (N, L): segmentation; bool/uint8 (N, C): multilabel; float32: regression; no labels: "
        "distillation). The loss and the metric (top-1, mIoU, PSNR, F1) follow",
    )
    preprocess: Preprocess = Field(
        default_factory=Preprocess,
        description="image datasets (.zip/.tar of JPEG/PNG): resize, center_crop, channels, mean, std",
    )
    ignore_index: int = Field(
        default=255, ge=0, description="segmentation: the label of pixels that count for neither loss nor mIoU"
    )

    def resolved_loss(self, task: TaskName) -> LossKind:
        """The loss to train with for ``task``: the labels' own loss with ``auto`` (cross-entropy for
        classes, binary cross-entropy for multi-hot rows, MSE to float targets), ``mse``/``kl``
        distillation from the FP32 model's outputs; cross-entropy needs class labels."""
        if self.loss in ("mse", "kl"):
            return self.loss
        if self.loss == "ce" and task not in ("classification", "segmentation"):
            why = " (the data has no y_train, or spec.task says so)" if task == "distillation" else ""
            raise SpecError(
                f"loss 'ce' needs class labels, but the run's task is {task}{why}; leave loss auto, or use mse or "
                "kl (distillation from the FP32 model)",
                field="loss",
            )
        return TASK_LOSSES[task]


def parse_spec(values: Mapping[str, Any]) -> QATSpec:
    """A :class:`QATSpec` from user input; the first bad value raises a :class:`SpecError` naming it."""
    try:
        spec = QATSpec.model_validate(dict(values))
    except ValidationError as exc:
        err = first_error(exc)
        key = err.key or "spec"
        if err.kind == "extra_forbidden":
            fields = AccuracyTarget.model_fields if key.startswith("accuracy.") else QATSpec.model_fields
            message = f"unknown setting '{key}'; allowed: {', '.join(fields)}"
        elif key == "device":
            message = f"invalid device {err.value!r}; use auto, cpu, cuda or cuda:N"
        else:
            message = f"invalid {key} {err.value!r}: {err.message}"
        raise SpecError(message, field=key) from None
    check_budget(spec)
    return spec


def check_budget(spec: QATSpec) -> None:
    """A weight-bits budget is met with INT4 weights, which not every target can deploy."""
    reason = refusal(spec.target, "int4")
    if spec.accuracy is not None and spec.accuracy.weight_bits_budget is not None and reason is not None:
        raise SpecError(
            f"accuracy.weight_bits_budget needs INT4 weights: {reason}", field="accuracy.weight_bits_budget"
        )
