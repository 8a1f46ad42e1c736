"""The API's request shapes as pydantic models, and rows turned into the wire's (:mod:`service.contract`).

The same classes validate requests (query strings, the job ``spec``), serialize
responses and, through ``model_json_schema``, become the components of
``/v1/openapi.json``, so the document cannot drift from what the code accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quantlib.errors import SpecError, first_error
from quantlib.spec import QATSpec, parse_spec
from service import contract
from service.contract import JobState, Phase
from service.db import Artifact, Dataset, Job
from service.errors import InvalidArgument
from service.jobs import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

M = TypeVar("M", bound=BaseModel)
# keys of a submitted spec that steer the service rather than the training run
JOB_OPTION_KEYS = ("priority", "max_runtime_s")
MAX_RUNTIME_S = 30 * 24 * 3600


class JobSpec(QATSpec):
    """The ``spec`` part of ``POST /v1/jobs``: the training settings plus how to schedule the job."""

    # torch takes seeds up to 64 bits; a larger one would fail the job on the GPU instead of here
    seed: int = Field(default=0, ge=0, lt=2**63, description="seeds shuffling and initialisation")
    priority: int = Field(default=0, ge=0, le=9, description="higher runs first within a team")
    # a CPU-time limit of max_runtime_s x CPUs must fit the kernel's rlimit: 30 days is far inside
    max_runtime_s: int | None = Field(
        default=None, gt=0, le=MAX_RUNTIME_S, description="fail the job if it runs longer (at most 30 days)"
    )


class ListJobsQuery(BaseModel):
    """Query string of ``GET /v1/jobs``."""

    model_config = ConfigDict(extra="forbid")

    state: JobState | None = None
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    page_token: str | None = None


class ErrorBody(BaseModel):
    code: str = Field(description="stable, for programs: NOT_FOUND, BAD_CONFIG, TOO_LARGE, ...")
    message: str = Field(description="for people: what is wrong and how to fix it")
    field: str | None = Field(description="the request part or key at fault, if any")


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer of the API."""

    error: ErrorBody


def job_out(job: Job) -> contract.Job:
    """A job row as the API shows it."""
    failure = (
        contract.Failure(code=job.failure_code, message=job.failure_message or "", user_error=job.user_error)
        if job.failure_code
        else None
    )
    return contract.Job(
        id=job.id,
        state=JobState(job.state),
        phase=Phase(job.phase) if job.phase else None,
        progress=contract.Progress.model_validate(job.progress) if job.progress else None,
        priority=job.priority,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        cancel_requested=job.cancel_requested,
        spec=job.spec,
        metrics=contract.Metrics.model_validate(job.metrics) if job.metrics is not None else None,
        failure=failure,
        model_sha256=job.model_sha256,
        data_sha256=job.data_sha256,
        dataset_id=job.dataset_id,
        has_config=job.config_key is not None,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        updated_at=job.updated_at,
    )


def artifact_out(artifact: Artifact, url: str) -> contract.Artifact:
    return contract.Artifact(
        name=artifact.name, size=artifact.size, sha256=artifact.sha256, url=url, created_at=artifact.created_at
    )


def dataset_out(dataset: Dataset) -> contract.Dataset:
    return contract.Dataset(id=dataset.id, sha256=dataset.sha256, size=dataset.size, created_at=dataset.created_at)


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict, description="component -> 'ok' or what is wrong")


class UploadTokenQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upload_token: str = Field(min_length=1, max_length=1024, description="the upload_token the upload was given")


def parse_query(model: type[M], args: Mapping[str, str]) -> M:
    """Validate a query string; the first bad parameter is an ``InvalidArgument`` naming it."""
    return _parsed(model, args, "query")


def parse_body(model: type[M], data: Any) -> M:
    """Validate a decoded JSON body; the first bad field is an ``InvalidArgument`` naming it."""
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"the body must be a JSON object, got {type(data).__name__}", field="body")
    return _parsed(model, data, "body")


def _parsed(model: type[M], values: Mapping[str, Any], where: str) -> M:
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        raise _invalid(exc, where) from None


def parse_job_spec(values: Mapping[str, Any]) -> JobSpec:
    """A :class:`JobSpec` from user JSON; training keys get quantlib's own ``BAD_SPEC`` messages."""
    training = parse_spec({k: v for k, v in values.items() if k not in JOB_OPTION_KEYS})
    options = {k: values[k] for k in JOB_OPTION_KEYS if k in values}
    try:
        return JobSpec.model_validate({**training.model_dump(), **options})
    except ValidationError as exc:
        error = _invalid(exc, "spec")
        raise SpecError(error.message, field=error.field) from None


def _invalid(exc: ValidationError, default_field: str) -> InvalidArgument:
    err = first_error(exc)
    key = err.key or default_field
    if err.kind == "extra_forbidden":
        return InvalidArgument(f"unknown parameter {key!r}", field=key)
    return InvalidArgument(f"invalid {key} {err.value!r}: {err.message}", field=key)
