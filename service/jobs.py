"""The job state machine: every change to a job goes through one of these functions.

The API side creates, reads, lists and cancels jobs, always scoped to the caller's team
(another team's job is indistinguishable from a missing one). The worker side claims a
queued job with one conditional UPDATE, so of many racing workers exactly one wins, then
holds a lease: every later write is fenced by ``(worker_id, attempt)`` and fails with
:class:`LeaseLost` once the reaper has given the job to another attempt. Each function
is one transaction; returned rows are detached snapshots that stay readable.

    QUEUED --claim--> RUNNING --finish--> SUCCEEDED
       |                 |  \\--fail----> FAILED
       |               cancel            (lease expired: reaper re-queues with
       |                 v                attempt + 1, or FAILED WORKER_LOST after
       |             CANCELLING --ack-->  max_attempts; CANCELLING -> CANCELLED)
       +----cancel-------------------->  CANCELLED
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import quota
from service.contract import FailureCode, Metrics, Phase, Progress
from service.db import Artifact, Dataset, IdempotencyKey, Job, JobState, SessionFactory, Team, reading, utcnow, writing
from service.errors import (
    IdempotencyMismatch,
    InvalidArgument,
    LeaseLost,
    NotFound,
    QuotaExceeded,
    WrongState,
)

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
_ACTIVE = (JobState.RUNNING, JobState.CANCELLING)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
IDEMPOTENCY_FIELD = "Idempotency-Key"


class LeaseStatus(enum.Enum):
    """What a worker learns from a heartbeat or progress write."""

    HELD = "held"
    CANCEL_REQUESTED = "cancel_requested"  # still held: stop soon, then acknowledge_cancel
    LOST = "lost"  # reaped or finished elsewhere: stop now, write nothing more


@dataclass(frozen=True)
class JobInputs:
    """What a job is made of, already stored in the artifact store by the API.

    Data comes either as an uploaded file (``data_key`` + ``data_sha256``) or as a
    previously uploaded dataset (``dataset_id``), never both. ``job_id`` can be chosen
    by the caller so input keys can name the job before its row exists.
    """

    model_key: str
    model_sha256: str
    spec: dict[str, Any]
    data_key: str | None = None
    data_sha256: str | None = None
    dataset_id: uuid.UUID | None = None
    config_key: str | None = None
    priority: int = 0
    job_id: uuid.UUID = field(default_factory=uuid.uuid4)
    # what the stored model, data file and config take, counted against the team's storage
    inputs_bytes: int = 0


@dataclass(frozen=True)
class NewArtifact:
    """A result file a worker has stored and wants recorded with its job."""

    name: str
    size: int
    sha256: str
    storage_key: str


@dataclass(frozen=True)
class JobPage:
    """One page of a listing; ``next_page_token`` is ``None`` on the last page."""

    jobs: list[Job]
    next_page_token: str | None


@dataclass(frozen=True)
class ReapResult:
    """What one reaper pass did; ``requeued`` jobs must be sent to the broker again."""

    requeued: list[uuid.UUID]
    failed: list[uuid.UUID]
    cancelled: list[uuid.UUID]


# ---------------------------------------------------------------------------- API side


def request_fingerprint(request: Mapping[str, Any]) -> str:
    """sha256 of a request's canonical JSON: what an Idempotency-Key is bound to."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def create_job(db: SessionFactory, team_id: int, inputs: JobInputs, *, max_attempts: int) -> Job:
    """Queue a new job for the team; ``QuotaExceeded`` when the team's queue is full."""
    _check_inputs(inputs)
    with writing(db) as session:
        return _insert_job(session, team_id, inputs, max_attempts)


def find_or_create_job(
    db: SessionFactory, team_id: int, key: str, fingerprint: str, inputs: JobInputs, *, max_attempts: int
) -> tuple[Job, bool]:
    """Create a job once per ``(team, Idempotency-Key)``; return ``(job, created)``.

    A retry with the same key and the same request ``fingerprint`` gets the first job
    back; the same key with another request is an ``IdempotencyMismatch``.
    """
    if not _IDEMPOTENCY_KEY.match(key):
        raise InvalidArgument("an Idempotency-Key is 1-255 printable ASCII characters", field=IDEMPOTENCY_FIELD)
    _check_inputs(inputs)
    try:
        with writing(db) as session:
            existing = _idempotent_job(session, team_id, key, fingerprint)
            if existing is not None:
                return existing, False
            job = _insert_job(session, team_id, inputs, max_attempts)
            session.add(IdempotencyKey(team_id=team_id, key=key, fingerprint=fingerprint, job_id=job.id))
            return job, True
    except IntegrityError:
        # a concurrent request with the same key committed first: answer as a retry would
        with reading(db) as session:
            existing = _idempotent_job(session, team_id, key, fingerprint)
        if existing is None:
            raise
        return existing, False


def get_job(db: SessionFactory, team_id: int, job_id: uuid.UUID) -> Job:
    """The team's job ``job_id``; ``NotFound`` if it does not exist or is another team's."""
    with reading(db) as session:
        return _job(session, job_id, team_id)


def list_jobs(
    db: SessionFactory,
    team_id: int,
    *,
    state: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    page_token: str | None = None,
) -> JobPage:
    """The team's jobs, newest first, optionally in one ``state``, a page at a time.

    The page token is an opaque cursor (the last row's ``(created_at, id)``), so pages
    neither skip nor repeat jobs when new ones arrive between requests.
    """
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be 1-{MAX_PAGE_SIZE}, got {page_size}", field="page_size")
    query = select(Job).where(Job.team_id == team_id)
    if state is not None:
        query = query.where(Job.state == _parse_state(state))
    if page_token is not None:
        created_at, last_id = _decode_cursor(page_token)
        query = query.where(or_(Job.created_at < created_at, and_(Job.created_at == created_at, Job.id < last_id)))
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(page_size + 1)
    with reading(db) as session:
        jobs = list(session.scalars(query))
    if len(jobs) <= page_size:
        return JobPage(jobs, None)
    return JobPage(jobs[:page_size], _encode_cursor(jobs[page_size - 1]))


def request_cancel(db: SessionFactory, team_id: int, job_id: uuid.UUID) -> Job:
    """Cancel a job: a queued one at once, a running one by asking its worker (``CANCELLING``).

    Asking again while it is cancelling is harmless; a finished job is ``WrongState``.
    """
    with writing(db) as session:
        job = _job(session, job_id, team_id, lock=True)
        if job.state.terminal:
            raise WrongState(
                f"job {job.id} is already {job.state.value}; only queued or running jobs can be cancelled",
                field="state",
            )
        job.cancel_requested = True
        if job.state == JobState.QUEUED:
            job.state = JobState.CANCELLED
            job.finished_at = utcnow()
        elif job.state == JobState.RUNNING:
            job.state = JobState.CANCELLING
        return job


def list_artifacts(db: SessionFactory, team_id: int, job_id: uuid.UUID) -> list[Artifact]:
    """The team's job's result files by name; ``NotFound`` for a job the team cannot see."""
    with reading(db) as session:
        _job(session, job_id, team_id)
        return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)))


def get_artifact(db: SessionFactory, team_id: int, job_id: uuid.UUID, name: str) -> Artifact:
    """One result file of the team's job; ``NotFound`` names the missing part."""
    with reading(db) as session:
        _job(session, job_id, team_id)
        artifact = session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))
    if artifact is None:
        raise NotFound(f"job {job_id} has no artifact {name!r}", field="name")
    return artifact


# ------------------------------------------------------------------------- worker side


def load_job(db: SessionFactory, job_id: uuid.UUID) -> Job:
    """A job by id for any team: for workers and the dispatcher, which act for the service."""
    with reading(db) as session:
        return _job(session, job_id, None)


def claim_job(db: SessionFactory, job_id: uuid.UUID, worker_id: str, lease_s: int) -> bool:
    """Take a queued job for ``worker_id`` with a lease of ``lease_s``; ``False`` if someone else has it.

    A single ``UPDATE ... WHERE state = 'QUEUED'``: the database lets exactly one of
    any number of concurrent claimers match the row. ``started_at`` is the start of
    the current attempt.
    """
    now = utcnow()
    with writing(db) as session:
        claimed = session.scalar(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.QUEUED)
            .values(
                state=JobState.RUNNING,
                lease_owner=worker_id,
                lease_expires_at=now + timedelta(seconds=lease_s),
                started_at=now,
            )
            .returning(Job.id)
        )
    return claimed is not None


def renew_lease(db: SessionFactory, job_id: uuid.UUID, worker_id: str, attempt: int, lease_s: int) -> LeaseStatus:
    """Heartbeat: extend the lease by ``lease_s`` from now, and learn whether to stop."""
    return _fenced_update(db, job_id, worker_id, attempt, lease_expires_at=utcnow() + timedelta(seconds=lease_s))


def update_progress(
    db: SessionFactory, job_id: uuid.UUID, worker_id: str, attempt: int, phase: Phase, progress: Progress | None
) -> LeaseStatus:
    """Record where the job is; a worker that lost its lease learns it here too."""
    return _fenced_update(
        db, job_id, worker_id, attempt, phase=Phase(phase).value, progress=progress.model_dump() if progress else None
    )


def finish_job(
    db: SessionFactory,
    job_id: uuid.UUID,
    worker_id: str,
    attempt: int,
    metrics: Metrics,
    artifacts: Sequence[NewArtifact],
) -> None:
    """Mark the job SUCCEEDED with its metrics and artifact rows, all or nothing.

    Raises ``LeaseLost`` (and records nothing) unless the caller still holds the lease
    for ``attempt``. A job being cancelled that finishes anyway counts as succeeded:
    the results exist and the user may as well have them.
    """
    recorded = metrics.model_dump(mode="json")  # a JSON column holds the wire form: an infinite SQNR as "inf"
    with writing(db) as session:
        _end(session, job_id, worker_id, attempt, _ACTIVE, state=JobState.SUCCEEDED, metrics=recorded)
        session.add_all(Artifact(job_id=job_id, attempt=attempt, **asdict(artifact)) for artifact in artifacts)


def fail_job(
    db: SessionFactory,
    job_id: uuid.UUID,
    worker_id: str,
    attempt: int,
    code: str,
    message: str,
    *,
    user_error: bool,
    artifacts: Sequence[NewArtifact] = (),
) -> None:
    """Mark the job FAILED; ``user_error`` says whether the user's input or the system was at fault.

    ``artifacts`` (the attempt's ``log.txt``) are recorded in the same transaction, so a
    user can read why the job failed, and a worker that lost the lease records nothing.
    """
    with writing(db) as session:
        _end(
            session,
            job_id,
            worker_id,
            attempt,
            _ACTIVE,
            state=JobState.FAILED,
            failure_code=code,
            failure_message=message,
            user_error=user_error,
        )
        session.add_all(Artifact(job_id=job_id, attempt=attempt, **asdict(artifact)) for artifact in artifacts)


def acknowledge_cancel(db: SessionFactory, job_id: uuid.UUID, worker_id: str, attempt: int) -> None:
    """The worker has stopped a CANCELLING job: it becomes CANCELLED."""
    with writing(db) as session:
        _end(session, job_id, worker_id, attempt, (JobState.CANCELLING,), state=JobState.CANCELLED)


def reap_expired_leases(db: SessionFactory, now: datetime | None = None) -> ReapResult:
    """Recover jobs whose worker stopped heartbeating before ``now`` (default: the clock).

    A running job goes back to QUEUED as attempt + 1, or FAILED ``WORKER_LOST`` once it
    has used ``max_attempts``; a job that was being cancelled simply becomes CANCELLED.
    Rows another reaper is handling are skipped (``SKIP LOCKED`` on PostgreSQL).
    """
    now = now or utcnow()
    result = ReapResult([], [], [])
    query = (
        select(Job)
        .where(Job.state.in_(_ACTIVE), Job.lease_expires_at < now)
        .order_by(Job.lease_expires_at)
        .with_for_update(skip_locked=True)
    )
    with writing(db) as session:
        for job in session.scalars(query):
            message = (
                f"the worker running this job stopped responding on each of {job.attempt} attempts; "
                "the job may need more memory or time than a worker has, or the pool is unhealthy"
            )
            state = _requeue_or_fail(job, now, FailureCode.WORKER_LOST, message)
            ended = {JobState.CANCELLED: result.cancelled, JobState.FAILED: result.failed}
            ended.get(state, result.requeued).append(job.id)
    return result


def retry_job(db: SessionFactory, job_id: uuid.UUID, worker_id: str, attempt: int, code: str, message: str) -> JobState:
    """After a system fault in ``attempt`` (its sandbox killed from outside): run the job again.

    The job goes back to QUEUED as attempt + 1, or FAILED with ``code`` and ``message``
    (a system fault) once it has used ``max_attempts``; one being cancelled becomes
    CANCELLED. Returns the new state; ``LeaseLost`` if the attempt is no longer the caller's.
    """
    with writing(db) as session:
        job = session.scalars(select(Job).where(_fence(job_id, worker_id, attempt, _ACTIVE)).with_for_update()).first()
        if job is None:
            raise LeaseLost(f"worker {worker_id!r} no longer holds job {job_id} (attempt {attempt})")
        return _requeue_or_fail(job, utcnow(), code, f"{message} (on each of {job.attempt} attempts)")


# ------------------------------------------------------------------------------ helpers


def _requeue_or_fail(job: Job, now: datetime, code: str, message: str) -> JobState:
    """End ``job``'s current attempt without a result: cancelled, failed for good, or queued again."""
    job.lease_expires_at = None
    if job.state == JobState.CANCELLING:
        job.state, job.finished_at = JobState.CANCELLED, now
    elif job.attempt >= job.max_attempts:
        job.state, job.finished_at = JobState.FAILED, now
        job.failure_code, job.failure_message, job.user_error = code, message, False
    else:
        job.state, job.attempt, job.lease_owner = JobState.QUEUED, job.attempt + 1, None
        job.phase, job.progress = None, None
    return job.state


def _check_inputs(inputs: JobInputs) -> None:
    if (inputs.data_key is None) == (inputs.dataset_id is None):
        raise InvalidArgument("give either an uploaded data file or a dataset_id, not both or neither", field="data")
    for name, digest in (("model", inputs.model_sha256), ("data", inputs.data_sha256)):
        if digest is not None and not _SHA256.match(digest):
            raise InvalidArgument(f"{name} sha256 must be 64 lowercase hex digits", field=name)
    if inputs.data_key is not None and inputs.data_sha256 is None:
        raise InvalidArgument("an uploaded data file needs its sha256", field="data")


def _insert_job(session: Session, team_id: int, inputs: JobInputs, max_attempts: int) -> Job:
    # Locking the team row serializes job creation per team on PostgreSQL, so two
    # concurrent submissions cannot both slip under max_queued.
    team = session.scalar(select(Team).where(Team.id == team_id).with_for_update())
    if team is None:
        raise NotFound(f"no team with id {team_id}", field="team")
    if inputs.dataset_id is not None:
        live = Dataset.id == inputs.dataset_id, Dataset.deleted_at.is_(None)
        if session.scalar(select(Dataset.team_id).where(*live)) != team_id:
            raise NotFound(f"no dataset {inputs.dataset_id}", field="dataset_id")
    queued = session.scalar(
        select(func.count()).select_from(Job).where(Job.team_id == team_id, Job.state == JobState.QUEUED)
    )
    if queued is not None and queued >= team.max_queued:
        raise QuotaExceeded(
            f"team {team.name!r} already has {queued} queued jobs, its limit; "
            "wait for some to start or cancel some, then submit again"
        )
    what = f"this job's inputs ({quota.human_size(inputs.inputs_bytes)})"
    quota.check_room(session, team, inputs.inputs_bytes, what=what)
    job = Job(
        id=inputs.job_id,
        team_id=team_id,
        priority=inputs.priority,
        max_attempts=max_attempts,
        model_key=inputs.model_key,
        model_sha256=inputs.model_sha256,
        data_key=inputs.data_key,
        data_sha256=inputs.data_sha256,
        dataset_id=inputs.dataset_id,
        config_key=inputs.config_key,
        inputs_bytes=inputs.inputs_bytes,
        spec=inputs.spec,
    )
    session.add(job)
    session.flush()
    return job


def _idempotent_job(session: Session, team_id: int, key: str, fingerprint: str) -> Job | None:
    record = session.scalar(select(IdempotencyKey).where(IdempotencyKey.team_id == team_id, IdempotencyKey.key == key))
    if record is None:
        return None
    if record.fingerprint != fingerprint:
        raise IdempotencyMismatch(
            f"Idempotency-Key {key!r} was already used for a different request (job {record.job_id}); "
            "send the identical request to retry it, or use a new key",
            field=IDEMPOTENCY_FIELD,
        )
    return _job(session, record.job_id, team_id)


def _job(session: Session, job_id: uuid.UUID, team_id: int | None, *, lock: bool = False) -> Job:
    query = select(Job).where(Job.id == job_id)
    if team_id is not None:
        query = query.where(Job.team_id == team_id)
    job = session.scalar(query.with_for_update() if lock else query)
    if job is None:
        raise NotFound(f"no job {job_id}", field="job_id")
    return job


def _fence(job_id: uuid.UUID, worker_id: str, attempt: int, states: Sequence[JobState]) -> ColumnElement[bool]:
    """Rows the caller still owns: its worker id, its attempt, an active state."""
    return and_(Job.id == job_id, Job.lease_owner == worker_id, Job.attempt == attempt, Job.state.in_(states))


def _fenced_update(db: SessionFactory, job_id: uuid.UUID, worker_id: str, attempt: int, **values: Any) -> LeaseStatus:
    with writing(db) as session:
        cancel = session.scalar(
            update(Job)
            .where(_fence(job_id, worker_id, attempt, _ACTIVE))
            .values(**values)
            .returning(Job.cancel_requested)
        )
    if cancel is None:
        return LeaseStatus.LOST
    return LeaseStatus.CANCEL_REQUESTED if cancel else LeaseStatus.HELD


def _end(
    session: Session,
    job_id: uuid.UUID,
    worker_id: str,
    attempt: int,
    states: Sequence[JobState],
    **values: Any,
) -> None:
    ended = session.scalar(
        update(Job)
        .where(_fence(job_id, worker_id, attempt, states))
        .values(finished_at=utcnow(), lease_expires_at=None, **values)
        .returning(Job.id)
    )
    if ended is None:
        raise LeaseLost(
            f"worker {worker_id!r} no longer holds job {job_id} (attempt {attempt}); "
            "it was re-queued, finished or cancelled elsewhere: discard this attempt's results",
            field="job_id",
        )


def _parse_state(state: str) -> JobState:
    try:
        return JobState(state.upper())
    except ValueError:
        choices = ", ".join(s.value for s in JobState)
        raise InvalidArgument(f"unknown state {state!r}; use one of {choices}", field="state") from None


def _encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id.hex]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(token: str) -> tuple[datetime, uuid.UUID]:
    try:
        created_at, job_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        cursor = datetime.fromisoformat(created_at), uuid.UUID(hex=job_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidArgument("page_token is not one this service issued", field="page_token") from None
    if cursor[0].tzinfo is None:
        raise InvalidArgument("page_token is not one this service issued", field="page_token")
    return cursor
