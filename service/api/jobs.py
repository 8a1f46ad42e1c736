"""``/v1/jobs``: submit, list, inspect and cancel jobs, download their artifacts, view their reports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse  # what redirect() returns, and Flask's Response

from quantlib.config import ConfigError
from quantlib.data import DataError, check_inputs
from quantlib.errors import SpecError
from quantlib.pt2archive import ModelError
from quantlib.report import REPORT_HTML
from service import contract, jobs
from service.api.auth import current_team_id, current_token, require_team
from service.api.events import job_events
from service.api.openapi import ref
from service.api.operations import Answer, Operation, documented
from service.api.schemas import JobSpec, ListJobsQuery, artifact_out, job_out, parse_query
from service.api.services import services
from service.api.stream_slots import StreamSlots
from service.api.submission import Submission, submit_job
from service.api.uploads import file_part, job_body_limit, limit_body, required_file_part, text_part
from service.api.validation import check_data, check_model, parse_config_text, parse_spec_text
from service.db import Artifact, Job, JobState
from service.errors import (
    IdempotencyMismatch,
    InvalidArgument,
    NoReport,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    StorageFull,
    StorageQuotaExceeded,
    StorageUnavailable,
    TooManyStreams,
    WrongState,
)
from service.ops.retention import delete_job_files
from service.quota import refuse_upload_over_quota
from service.server.offload import off_loop
from service.teams import authenticate

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
bp.before_request(require_team)

# The report is rendered in the sandboxed child, which runs the user's code: the browser
# gets it with scripts, plugins, forms and every network fetch forbidden (inline CSS and
# SVG are all it needs), and in a sandbox with an opaque origin, so even a tampered
# report cannot act on this API's origin.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"

SUBMIT_FORM: dict[str, Any] = {
    "type": "object",
    "required": ["model"],
    "properties": {
        "model": {"type": "string", "contentMediaType": "application/octet-stream", "description": "a .pt2 file"},
        "data": {
            "type": "string",
            "contentMediaType": "application/octet-stream",
            "description": "an .npz with x_train (the model's input; x_train.<name> per input of a model that "
            "takes several, in the dtypes the program declares), optional y_train (int64), x_eval, y_eval",
        },
        "dataset_id": {"type": "string", "format": "uuid", "description": "instead of data: an uploaded dataset"},
        "config": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "AMCT-style config.json; absent = every quantizable layer at INT8",
        },
        "spec": {"type": "string", "contentMediaType": "application/json", "contentSchema": ref(JobSpec)},
    },
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "retry-safe submission: the same key and request return the first job",
    "schema": {"type": "string", "maxLength": 255},
}
# what a stored upload can meet: a full disk, an unreachable store
_STORING = (StorageFull, StorageUnavailable)


@bp.post("")
@documented(
    Operation(
        "Submit a quantization job",
        {
            201: Answer("the queued job", contract.Job),
            200: Answer("the job an earlier request with this Idempotency-Key created", contract.Job),
        },
        (
            InvalidArgument,
            ConfigError,
            SpecError,
            DataError,
            ModelError,
            NotFound,
            PayloadTooLarge,
            IdempotencyMismatch,
            QuotaExceeded,
            StorageQuotaExceeded,
            *_STORING,
        ),
        headers=(IDEMPOTENCY_KEY,),
        form=SUBMIT_FORM,
    )
)
def create_job() -> tuple[dict[str, object], int, dict[str, str]]:
    """Validate everything that can be checked without torch, store the inputs, queue the job."""
    svc = services()
    settings = svc.settings
    limit_body(job_body_limit(settings))
    refuse_upload_over_quota(svc.db, current_team_id(), request.content_length)
    model = required_file_part("model", settings.max_model_bytes)
    inputs = off_loop(check_model, model, settings.max_model_bytes)
    data = file_part("data", settings.max_data_bytes)
    dataset_id = _dataset_id(request.form.get("dataset_id"))
    if (data is None) == (dataset_id is None):
        raise InvalidArgument("give exactly one of a 'data' file (.npz) and a 'dataset_id'", field="data")
    if data is not None:
        arrays = off_loop(check_data, data, settings.max_data_bytes)
        if inputs is not None and arrays is not None:
            check_inputs(arrays, inputs)
    spec = parse_spec_text(text_part("spec", settings.max_config_bytes))
    config = parse_config_text(text_part("config", settings.max_config_bytes), spec)
    submission = Submission(model=model, spec=spec, config=config, data=data, dataset_id=dataset_id)
    job, created = submit_job(svc, current_team_id(), submission, request.headers.get("Idempotency-Key"))
    location = url_for("jobs.get_job", job_id=job.id)
    return job_out(job).model_dump(mode="json"), 201 if created else 200, {"Location": location}


@bp.get("")
@documented(
    Operation(
        "List the team's jobs, newest first",
        {200: Answer("one page", contract.JobPage)},
        (InvalidArgument,),
        query=ListJobsQuery,
    )
)
def list_jobs() -> dict[str, object]:
    """The team's jobs, newest first, a page at a time."""
    query = parse_query(ListJobsQuery, request.args)
    page = jobs.list_jobs(
        services().db, current_team_id(), state=query.state, page_size=query.page_size, page_token=query.page_token
    )
    out = contract.JobPage(jobs=[job_out(job) for job in page.jobs], next_page_token=page.next_page_token)
    return out.model_dump(mode="json")


@bp.get("/<uuid:job_id>")
@documented(Operation("One job", {200: Answer("the job", contract.Job)}, (NotFound,)))
def get_job(job_id: uuid.UUID) -> dict[str, object]:
    return job_out(jobs.get_job(services().db, current_team_id(), job_id)).model_dump(mode="json")


@bp.get("/<uuid:job_id>/events")
@documented(
    Operation(
        "Follow a job: server-sent events until it ends",
        {200: Answer("the event stream", media="text/event-stream")},
        (NotFound, TooManyStreams),
        description=(
            "`event: progress` with JSON `{state, phase, progress}` whenever one of them changes "
            "(the first is the job as it is), then `event: end` with `{state}` at a terminal state. "
            "The row is polled every second; a stream also ends after 10 minutes (reconnect to go on)."
        ),
    )
)
def stream_events(job_id: uuid.UUID) -> Response:
    """Server-sent events: the job's state, phase and progress as they change, until it ends."""
    svc, team_id, token = services(), current_team_id(), current_token()
    events = job_events(
        svc.db,
        team_id,
        job_id,
        still_allowed=lambda: authenticate(svc.db, token) is not None,
        last_event_id=request.headers.get("Last-Event-ID"),
    )
    jobs.get_job(svc.db, team_id, job_id)  # a missing job answers 404 here, not inside a started stream
    svc.streams.acquire(team_id)  # 503 TOO_MANY_STREAMS when none is free
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(_holding_slot(events, svc.streams, team_id), mimetype="text/event-stream", headers=headers)


@bp.delete("/<uuid:job_id>")
@documented(
    Operation(
        "Delete a finished job's inputs and results (the job stays, listing no artifacts)",
        {200: Answer("the job", contract.Job)},
        (NotFound, WrongState, StorageUnavailable),
    )
)
def delete_job(job_id: uuid.UUID) -> dict[str, object]:
    """Delete a finished job's inputs and results now (they stop counting against the team's storage)."""
    svc = services()
    return job_out(delete_job_files(svc.db, svc.artifacts, current_team_id(), job_id)).model_dump(mode="json")


@bp.post("/<uuid:job_id>/cancel")
@documented(
    Operation(
        "Cancel a queued or running job",
        {200: Answer("the job, CANCELLED or CANCELLING", contract.Job)},
        (NotFound, WrongState),
    )
)
def cancel_job(job_id: uuid.UUID) -> dict[str, object]:
    """Queued jobs are cancelled at once; running ones become CANCELLING until the worker stops."""
    job = jobs.request_cancel(services().db, current_team_id(), job_id)
    return job_out(job).model_dump(mode="json")


@bp.get("/<uuid:job_id>/artifacts")
@documented(
    Operation(
        "The job's result files", {200: Answer("name, size, sha256, download URL", contract.ArtifactList)}, (NotFound,)
    )
)
def list_artifacts(job_id: uuid.UUID) -> dict[str, object]:
    rows = jobs.list_artifacts(services().db, current_team_id(), job_id)
    items = [
        artifact_out(row, url_for("jobs.download_artifact", job_id=job_id, name=row.name, _external=True))
        for row in rows
    ]
    return contract.ArtifactList(artifacts=items).model_dump(mode="json")


@bp.get("/<uuid:job_id>/artifacts/<path:name>")
@documented(
    Operation(
        "Download one result file",
        {
            200: Answer("the bytes", media="application/octet-stream"),
            302: Answer("redirect to a presigned URL (QAT_DOWNLOAD_REDIRECT)", media=None),
        },
        (NotFound, StorageUnavailable),
    )
)
def download_artifact(job_id: uuid.UUID, name: str) -> BaseResponse:
    """Stream the bytes, or redirect to a presigned URL where configured and the store has one."""
    svc = services()
    artifact = jobs.get_artifact(svc.db, current_team_id(), job_id, name)
    if svc.settings.download_redirect:
        url = svc.artifacts.presigned_url(artifact.storage_key, svc.settings.download_url_expiry_s)
        if url is not None:
            return redirect(url, code=302)
    filename = name.rsplit("/", 1)[-1]
    disposition = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return _stream_artifact(artifact, "application/octet-stream", disposition)


@bp.get("/<uuid:job_id>/report")
@documented(
    Operation(
        "The job's report as one self-contained HTML page",
        {200: Answer("the page", media="text/html")},
        (NotFound, NoReport, StorageUnavailable),
        description=(
            "The accuracy table (FP32, INT8 simulated, INT8 onnxruntime), per-layer charts (activation "
            "ranges and clips, weight error, sensitivity), the tuning trials and the final config. Inline "
            "CSS and SVG only, served under a Content-Security-Policy that forbids scripts and fetches. "
            "404 NO_REPORT while the job has not succeeded."
        ),
    )
)
def get_report(job_id: uuid.UUID) -> Response:
    """The job's report.html, to view in a browser: always streamed by the API (a presigned
    URL would hand the browser a download, not a page), under a strict CSP."""
    svc, team_id = services(), current_team_id()
    job = jobs.get_job(svc.db, team_id, job_id)
    try:
        artifact = jobs.get_artifact(svc.db, team_id, job_id, REPORT_HTML)
    except NotFound:
        raise NoReport(_no_report_reason(job), field="job_id") from None
    headers = {"Content-Security-Policy": REPORT_CSP, "X-Content-Type-Options": "nosniff"}
    return _stream_artifact(artifact, "text/html", headers)


def _no_report_reason(job: Job) -> str:
    if not job.state.terminal:
        return f"job {job.id} is {job.state.value}; its report appears when it succeeds (`qat wait {job.id}`)"
    if job.state == JobState.SUCCEEDED:
        return f"job {job.id} finished before jobs had an HTML report; its report.json artifact has the numbers"
    return f"job {job.id} is {job.state.value}: only succeeded jobs have a report (`qat logs {job.id}` says why)"


def _stream_artifact(artifact: Artifact, mimetype: str, headers: dict[str, str]) -> Response:
    """An artifact's bytes from the store, with its size and sha256 for the caller to check."""
    integrity = {
        "Content-Length": str(artifact.size),
        "ETag": f'"{artifact.sha256}"',
        "X-Content-SHA256": artifact.sha256,
    }
    chunks = services().artifacts.open_stream(artifact.storage_key)
    return Response(chunks, mimetype=mimetype, headers={**integrity, **headers}, direct_passthrough=True)


def _holding_slot(events: Iterator[str], slots: StreamSlots, team_id: int) -> Iterator[str]:
    """The stream's events; its slot is given back when it ends or the client goes away."""
    try:
        yield from events
    finally:
        slots.release(team_id)


def _dataset_id(raw: str | None) -> uuid.UUID | None:
    if raw is None or not raw.strip():
        return None
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise InvalidArgument(f"dataset_id {raw!r} is not a dataset id (a UUID)", field="dataset_id") from None
