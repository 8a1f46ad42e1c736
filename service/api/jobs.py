"""``/v1/jobs``: submit, list, inspect and cancel jobs, download their artifacts, view their reports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from flask import Blueprint, Response, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse  # what redirect() returns, and Flask's Response

from quantlib.report import REPORT_HTML
from service import contract, store
from service.auth import current_team_id, current_token, require_team
from service.db import Artifact, Job, JobState
from service.errors import InvalidArgument, NoReport, NotFound
from service.job_events import job_events
from service.offload import off_loop
from service.quota import refuse_upload_over_quota
from service.retention import delete_job_files
from service.schemas import ListJobsQuery, artifact_out, job_out, parse_query
from service.services import services
from service.stream_slots import StreamSlots
from service.submission import Submission, submit_job
from service.teams import authenticate
from service.uploads import file_part, job_body_limit, limit_body, required_file_part, text_part
from service.validation import check_data, check_model, parse_config_text, parse_spec_text

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
bp.before_request(require_team)

# The report is rendered in the sandboxed child, which runs the user's code: the browser
# gets it with scripts, plugins, forms and every network fetch forbidden (inline CSS and
# SVG are all it needs), and in a sandbox with an opaque origin, so even a tampered
# report cannot act on this API's origin.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


@bp.post("")
def create_job() -> tuple[dict[str, object], int, dict[str, str]]:
    """Validate everything that can be checked without torch, store the inputs, queue the job."""
    svc = services()
    settings = svc.settings
    limit_body(job_body_limit(settings))
    refuse_upload_over_quota(svc.db, current_team_id(), request.content_length)
    model = required_file_part("model", settings.max_model_bytes)
    off_loop(check_model, model, settings.max_model_bytes)
    data = file_part("data", settings.max_data_bytes)
    dataset_id = _dataset_id(request.form.get("dataset_id"))
    if (data is None) == (dataset_id is None):
        raise InvalidArgument("give exactly one of a 'data' file (.npz) and a 'dataset_id'", field="data")
    if data is not None:
        off_loop(check_data, data, settings.max_data_bytes)
    spec = parse_spec_text(text_part("spec", settings.max_config_bytes))
    config = parse_config_text(text_part("config", settings.max_config_bytes), spec)
    submission = Submission(model=model, spec=spec, config=config, data=data, dataset_id=dataset_id)
    job, created = submit_job(svc, current_team_id(), submission, request.headers.get("Idempotency-Key"))
    location = url_for("jobs.get_job", job_id=job.id)
    return job_out(job).model_dump(mode="json"), 201 if created else 200, {"Location": location}


@bp.get("")
def list_jobs() -> dict[str, object]:
    """The team's jobs, newest first, a page at a time."""
    query = parse_query(ListJobsQuery, request.args)
    page = store.list_jobs(
        services().db, current_team_id(), state=query.state, page_size=query.page_size, page_token=query.page_token
    )
    out = contract.JobPage(jobs=[job_out(job) for job in page.jobs], next_page_token=page.next_page_token)
    return out.model_dump(mode="json")


@bp.get("/<uuid:job_id>")
def get_job(job_id: uuid.UUID) -> dict[str, object]:
    return job_out(store.get_job(services().db, current_team_id(), job_id)).model_dump(mode="json")


@bp.get("/<uuid:job_id>/events")
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
    store.get_job(svc.db, team_id, job_id)  # a missing job answers 404 here, not inside a started stream
    svc.streams.acquire(team_id)  # 503 TOO_MANY_STREAMS when none is free
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(_holding_slot(events, svc.streams, team_id), mimetype="text/event-stream", headers=headers)


@bp.delete("/<uuid:job_id>")
def delete_job(job_id: uuid.UUID) -> dict[str, object]:
    """Delete a finished job's inputs and results now (they stop counting against the team's storage)."""
    svc = services()
    return job_out(delete_job_files(svc.db, svc.store, current_team_id(), job_id)).model_dump(mode="json")


@bp.post("/<uuid:job_id>/cancel")
def cancel_job(job_id: uuid.UUID) -> dict[str, object]:
    """Queued jobs are cancelled at once; running ones become CANCELLING until the worker stops."""
    job = store.request_cancel(services().db, current_team_id(), job_id)
    return job_out(job).model_dump(mode="json")


@bp.get("/<uuid:job_id>/artifacts")
def list_artifacts(job_id: uuid.UUID) -> dict[str, object]:
    rows = store.list_artifacts(services().db, current_team_id(), job_id)
    items = [
        artifact_out(row, url_for("jobs.download_artifact", job_id=job_id, name=row.name, _external=True))
        for row in rows
    ]
    return contract.ArtifactList(artifacts=items).model_dump(mode="json")


@bp.get("/<uuid:job_id>/artifacts/<path:name>")
def download_artifact(job_id: uuid.UUID, name: str) -> BaseResponse:
    """Stream the bytes, or redirect to a presigned URL where configured and the store has one."""
    svc = services()
    artifact = store.get_artifact(svc.db, current_team_id(), job_id, name)
    if svc.settings.download_redirect:
        url = svc.store.presigned_url(artifact.storage_key, svc.settings.download_url_expiry_s)
        if url is not None:
            return redirect(url, code=302)
    filename = name.rsplit("/", 1)[-1]
    disposition = {"Content-Disposition": f'attachment; filename="{filename}"'}
    return _stream_artifact(artifact, "application/octet-stream", disposition)


@bp.get("/<uuid:job_id>/report")
def get_report(job_id: uuid.UUID) -> Response:
    """The job's report.html, to view in a browser: always streamed by the API (a presigned
    URL would hand the browser a download, not a page), under a strict CSP."""
    svc, team_id = services(), current_team_id()
    job = store.get_job(svc.db, team_id, job_id)
    try:
        artifact = store.get_artifact(svc.db, team_id, job_id, REPORT_HTML)
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
    chunks = services().store.open_stream(artifact.storage_key)
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
