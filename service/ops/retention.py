"""Retention: delete what finished jobs no longer need, and what no job ever owned.

The artifact store grows with every job; ``qat admin gc --older-than 30d`` keeps it to
what someone can still ask for. Two kinds of objects go:

- **expired**: everything under ``jobs/<id>/`` of a job that ended (succeeded, failed
  or cancelled) before the cutoff; its artifact rows go too, the job row stays as
  history, so ``GET /v1/jobs/<id>`` still answers and lists no artifacts.
- **released inputs**: a failed or cancelled job's inputs go within seconds
  (:func:`release_inputs`, run by the dispatcher), since nothing will read them again;
  and a team may delete a finished job's files at once (:func:`delete_job_files`).
- **orphans** older than the cutoff: inputs of a submission whose job row was never
  written (the API died mid-upload), files of an attempt that is over but never
  published them (a reaped or crashed attempt), and dataset files with no dataset row.

Never touched: anything of a job still queued or running (including the running
attempt's half-uploaded files), the published files and inputs of jobs within the
retention period, registered datasets, and any object younger than the cutoff, which
may belong to an upload in flight whose row is not committed yet.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from service.artifacts import ArtifactStore
from service.db import Artifact, Dataset, Job, JobState, SessionFactory, reading, utcnow, writing
from service.errors import InvalidArgument, NotFound, WrongState

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_TERMINAL = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
_ATTEMPT = re.compile(r"^attempt-(\d+)$")


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600s`` or ``2w`` as a timedelta."""
    match = _DURATION.match(text)
    if match is None:
        raise InvalidArgument(
            f"expected a duration such as 30d, 12h, 90m, 3600s or 2w, got {text!r}", field="--older-than"
        )
    return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])


@dataclass
class GcReport:
    """What a collection removed (or, on a dry run, would remove)."""

    expired_jobs: list[uuid.UUID] = field(default_factory=list)
    expired_keys: list[str] = field(default_factory=list)
    orphan_keys: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "expired_jobs": [str(job_id) for job_id in self.expired_jobs],
            "expired_objects": len(self.expired_keys),
            "orphan_objects": len(self.orphan_keys),
            "orphan_keys": self.orphan_keys,
        }


@dataclass(frozen=True)
class _JobFiles:
    state: JobState
    attempt: int
    finished_at: datetime
    referenced: frozenset[str]


def collect_garbage(
    db: SessionFactory,
    store: ArtifactStore,
    older_than: timedelta,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
) -> GcReport:
    """Delete expired jobs' files and orphaned objects older than ``now - older_than``."""
    cutoff = (now or utcnow()) - older_than
    report = GcReport()
    jobs = _jobs_with_files(db)
    by_job: dict[uuid.UUID | None, list[str]] = {}
    for key in store.list("jobs/"):
        by_job.setdefault(_job_id(key), []).append(key)
    for job_id, keys in by_job.items():
        job = jobs.get(job_id) if job_id else None
        if job is not None and _expired(job, cutoff):
            report.expired_jobs.append(job_id)  # type: ignore[arg-type]
            report.expired_keys += keys
            continue
        report.orphan_keys += [key for key in keys if _unowned(key, job) and store.modified(key) < cutoff]
    datasets = _dataset_keys(db)
    report.orphan_keys += [k for k in store.list("datasets/") if k not in datasets and store.modified(k) < cutoff]
    if not dry_run:
        _forget_files(db, report.expired_jobs)
        for key in [*report.expired_keys, *report.orphan_keys]:
            store.delete(key)
    return report


def _jobs_with_files(db: SessionFactory) -> dict[uuid.UUID, _JobFiles]:
    """Every job with the keys its row and its artifact rows point at."""
    with reading(db) as session:
        artifacts: dict[uuid.UUID, set[str]] = {}
        for job_id, key in session.execute(select(Artifact.job_id, Artifact.storage_key)):
            artifacts.setdefault(job_id, set()).add(key)
        rows = session.scalars(select(Job))
        return {
            job.id: _JobFiles(
                JobState(job.state),
                job.attempt,
                job.finished_at or job.updated_at,
                frozenset(k for k in (job.model_key, job.data_key, job.config_key) if k)
                | frozenset(artifacts.get(job.id, ())),
            )
            for job in rows
        }


def _job_id(key: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(key.split("/")[1])
    except (IndexError, ValueError):
        return None


def _expired(job: _JobFiles, cutoff: datetime) -> bool:
    return job.state in _TERMINAL and job.finished_at < cutoff


def _unowned(key: str, job: _JobFiles | None) -> bool:
    """No job row, or a file the row does not reference that no running attempt may still publish."""
    if job is None:
        return True
    if key in job.referenced:
        return False
    attempt = _ATTEMPT.match(key.split("/")[2]) if key.count("/") >= 3 else None
    if attempt is None:
        return True  # an input the job does not use: a leftover of a failed store
    return job.state in _TERMINAL or int(attempt[1]) < job.attempt


def _dataset_keys(db: SessionFactory) -> set[str]:
    with reading(db) as session:
        return set(session.scalars(select(Dataset.storage_key).where(Dataset.deleted_at.is_(None))))


def _forget_files(db: SessionFactory, job_ids: Iterable[uuid.UUID]) -> None:
    """The rows say the jobs' files are gone: no artifacts, no input bytes counted."""
    ids = list(job_ids)
    if ids:
        with writing(db) as session:
            session.execute(delete(Artifact).where(Artifact.job_id.in_(ids)))
            session.execute(update(Job).where(Job.id.in_(ids)).values(inputs_bytes=0))


def delete_job_files(db: SessionFactory, store: ArtifactStore, team_id: int, job_id: uuid.UUID) -> Job:
    """Delete a finished job's inputs and results now; the row stays, listing no artifacts.

    ``WrongState`` for a job still queued or running (cancel it first). The rows go
    first, then the files, so a crash in between leaves only what gc removes as expired.
    """
    with writing(db) as session:
        job = session.scalar(select(Job).where(Job.id == job_id, Job.team_id == team_id).with_for_update())
        if job is None:
            raise NotFound(f"no job {job_id}", field="job_id")
        if job.state not in _TERMINAL:
            raise WrongState(
                f"job {job_id} is {job.state.value}; cancel it first (POST /v1/jobs/{job_id}/cancel), "
                "then delete its files once it has stopped",
                field="state",
            )
    _forget_files(db, [job_id])
    for key in list(store.list(f"jobs/{job_id}/")):
        store.delete(key)
    with reading(db) as session:
        return session.get_one(Job, job_id)


def release_inputs(db: SessionFactory, store: ArtifactStore, *, batch: int = 100) -> list[uuid.UUID]:
    """Delete the inputs of failed and cancelled jobs that still have them; the jobs released.

    Files first, then the count: a crash in between only means the next call deletes
    absent keys again. Results (``log.txt`` of a failed job) stay until gc or a delete.
    """
    query = select(Job).where(Job.state.in_((JobState.FAILED, JobState.CANCELLED)), Job.inputs_bytes > 0).limit(batch)
    with reading(db) as session:
        jobs = list(session.scalars(query))
    for job in jobs:
        for key in (job.model_key, job.data_key, job.config_key):
            if key:
                store.delete(key)
    released = [job.id for job in jobs]
    if released:
        with writing(db) as session:
            session.execute(update(Job).where(Job.id.in_(released)).values(inputs_bytes=0))
    return released
