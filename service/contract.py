"""The job's wire format, once: what the API sends, what the client reads, what workers write.

The API serialises these models, the client parses them, workers and the pipeline use
the enums, and ``/v1/openapi.json`` describes them, so none of them can drift from the
others (the client once read ``progress["eta"]`` where the server wrote ``eta_s``).
It needs only pydantic (no torch, Flask or SQLAlchemy), so the client imports it without
the server stack (``tests/service/test_imports.py``).
"""

from __future__ import annotations

import enum
import math
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from quantlib.outputs import OUTPUT_FILES  # the files a succeeded job publishes, by report.json's keys
from quantlib.phases import Phase

__all__ = [
    "Accuracy",
    "Artifact",
    "ArtifactList",
    "Dataset",
    "Failure",
    "FailureCode",
    "Job",
    "JobPage",
    "JobState",
    "LOG_FILE",
    "DeploySpeed",
    "Loss",
    "Metrics",
    "OUTPUT_FILES",
    "Phase",
    "Progress",
]

# every attempt's log, published whether it succeeded or not
LOG_FILE = "log.txt"


class JobState(enum.StrEnum):
    """Where a job is in its life: ``QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED``.

    ``CANCELLING`` is a running job whose owner was asked to stop.
    """

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class FailureCode(enum.StrEnum):
    """Why a job failed. The first group is the user's to fix; the second is the service's."""

    BAD_INPUT = "BAD_INPUT"
    BAD_CONFIG = "BAD_CONFIG"
    BAD_SPEC = "BAD_SPEC"
    BAD_MODEL = "BAD_MODEL"
    BAD_DATA = "BAD_DATA"
    NO_QUANTIZABLE_LAYERS = "NO_QUANTIZABLE_LAYERS"
    DIVERGED = "DIVERGED"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    TIMEOUT = "TIMEOUT"

    INTERNAL = "INTERNAL"
    SANDBOX_KILLED = "SANDBOX_KILLED"
    WORKER_LOST = "WORKER_LOST"
    STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"
    STORAGE_FULL = "STORAGE_FULL"


class Progress(BaseModel):
    """How far the current phase is."""

    step: int
    total: int
    epoch: int | None = None
    loss: float | None = None
    eta_s: float | None = Field(default=None, description="seconds left in this phase, from its step rate so far")


class Failure(BaseModel):
    code: str = Field(description=f"one of {', '.join(FailureCode)}")
    message: str
    user_error: bool | None = Field(description="true: the inputs were at fault; false: the service")


def _number_or_text(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


# JSON has no infinity: an SQNR of identical outputs travels as "inf" (report.json writes it so too)
Decibels = Annotated[
    float,
    PlainSerializer(_number_or_text, return_type=float | str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number"}, {"type": "string", "enum": ["inf", "-inf", "nan"]}],
            "description": "dB; the strings stand for the float values JSON lacks (inf: identical outputs)",
        }
    ),
]


class Accuracy(BaseModel):
    """One row of the accuracy table: a model's outputs on the eval data against a reference's."""

    top1: float | None = Field(description="top-1 accuracy, a fraction; null without class labels")
    agreement: float | None = Field(
        description="fraction of decisions both make alike (classes per sample or pixel, labels of a multi-hot "
        "row); null for regression"
    )
    sqnr_db: Decibels
    metric: Decibels | None = Field(
        default=None, description="the task's metric (named by metrics.task), null without labels"
    )


class Task(BaseModel):
    """What the labels were and how they were scored."""

    name: Literal["classification", "segmentation", "regression", "multilabel", "distillation"]
    metric: Literal["top1", "miou", "psnr_db", "f1", "sqnr_db"] = Field(
        description="top1, miou, f1: fractions; psnr_db against the targets; sqnr_db against FP32 (no labels)"
    )
    label: str = Field(description="the metric as people read it: top-1, mIoU, PSNR dB, F1, SQNR dB")


class Loss(BaseModel):
    kind: str = Field(
        description="the fine-tuning loss: ce (classes, dense classes), bce (multi-hot), mse_labels (float "
        "targets), or mse / kl distillation from the FP32 outputs"
    )
    epoch_means: list[float]


class DeploySpeed(BaseModel):
    """The deploy model against the same network in FP32: onnxruntime on the worker's CPU."""

    batch_sizes: list[int]
    fp32_ms: list[float] = Field(description="median latency of the FP32 network per batch size, ms")
    int8_ms: list[float] = Field(description="median latency of the deploy model per batch size, ms")
    latency_ratio: list[float] = Field(description="int8_ms / fp32_ms per batch size: below 1 is faster")
    fp32_bytes: int
    int8_bytes: int
    size_ratio: float = Field(description="int8_bytes / fp32_bytes")
    threads: int = Field(description="onnxruntime intra-op threads of the measurement")


class Metrics(BaseModel):
    """A succeeded job's numbers, as its ``report.json`` gives them, plus the worker's timings."""

    accuracy: dict[str, Accuracy] = Field(
        description="fp32, int8_simulated (PyTorch) and int8_onnxruntime (the deploy model), each against FP32"
    )
    deploy_vs_simulated: Accuracy = Field(description="the deploy model against the PyTorch QAT model; top1 null")
    loss: Loss
    timings_s: dict[str, float] = Field(description="wall seconds of every phase, queue wait to upload")
    speed: DeploySpeed | None = Field(default=None, description="null for jobs run before it was measured")
    fine_tune: FineTune | None = Field(default=None, description="null without fine-tuning (epochs 0)")
    caveats: list[str] = Field(
        default_factory=list, description="what the scores cannot be trusted for (FP32 outputs that are ~0)"
    )
    task: Task | None = Field(default=None, description="null for jobs run before tasks were reported")


class FineTune(BaseModel):
    """Whether the fine-tuned QAT model or the calibrated one shipped: whichever scored better on the eval data."""

    kept: Literal["fine-tuned", "calibrated"]
    metric: Literal["top1", "miou", "psnr_db", "f1", "sqnr_db"] = Field(
        description="the task's metric with labels, else SQNR against FP32"
    )
    calibrated: Decibels = Field(description="the calibrated model's score in that metric")
    fine_tuned: Decibels = Field(description="the fine-tuned model's score in that metric")


class Job(BaseModel):
    """A job as the API shows it."""

    id: uuid.UUID
    state: JobState
    phase: Phase | None
    progress: Progress | None
    priority: int
    attempt: int
    max_attempts: int
    cancel_requested: bool
    spec: dict[str, Any]
    metrics: Metrics | None
    failure: Failure | None
    model_sha256: str
    data_sha256: str | None
    dataset_id: uuid.UUID | None
    has_config: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @property
    def done(self) -> bool:
        return self.state.terminal

    @property
    def succeeded(self) -> bool:
        return self.state == JobState.SUCCEEDED


class JobPage(BaseModel):
    jobs: list[Job]
    next_page_token: str | None = Field(description="pass as page_token for the next page; null on the last")


class Artifact(BaseModel):
    name: str
    size: int
    sha256: str
    url: str = Field(description="GET it with the same bearer token")
    created_at: datetime


class ArtifactList(BaseModel):
    artifacts: list[Artifact]


class Dataset(BaseModel):
    id: uuid.UUID
    sha256: str
    size: int
    created_at: datetime


# S3's bounds on a multipart upload: every part but the last at least 5 MiB, at most 10 000 parts of 5 GiB
MIN_PART_BYTES = 5 << 20
MAX_PART_BYTES = 5 << 30
MAX_PARTS = 10_000


class DatasetUploadRequest(BaseModel):
    """A dataset file to send straight to the object store in parts: the API never carries its bytes."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(gt=0, description="bytes of the file (an .npz, or a .zip/.tar of images)")
    sha256: str = Field(
        pattern="^[0-9a-f]{64}$", description="sha256 of the whole file, lower-case hex; the worker checks it"
    )
    part_size: int | None = Field(
        None,
        ge=MIN_PART_BYTES,
        le=MAX_PART_BYTES,
        description="bytes per part (the last may be smaller); default 64 MiB, more where 10 000 parts need it",
    )


class UploadPart(BaseModel):
    part_number: int = Field(description="1-based")
    url: str = Field(description="PUT this part's bytes here, no token; keep the ETag header of the answer")


class DatasetUpload(BaseModel):
    id: uuid.UUID = Field(description="the upload, in the URLs that complete or abort it")
    upload_token: str = Field(description="the object store's id of the upload; send it back to complete or abort")
    part_size: int
    parts: list[UploadPart]
    expires_at: datetime = Field(description="when the part URLs stop working")


class CompletedPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    part_number: int = Field(ge=1, le=MAX_PARTS)
    etag: str = Field(min_length=1, max_length=256, description="the ETag header the part's PUT answered")


class DatasetUploadCompletion(BaseModel):
    """Every part sent: the upload becomes a dataset."""

    model_config = ConfigDict(extra="forbid")

    upload_token: str = Field(min_length=1, max_length=1024)
    parts: list[CompletedPart] = Field(min_length=1, max_length=MAX_PARTS)
