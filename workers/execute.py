"""One job, start to finish, in the worker process: claim, fetch, run sandboxed, publish.

The job row decides everything: a lost claim means another worker has the job, a
cancelled or lost lease ends the attempt, and results become visible only through
:func:`service.jobs.finish_job`, which records the metrics and every artifact of this
attempt in one transaction (a failed job keeps its ``log.txt`` the same way, through
:func:`service.jobs.fail_job`). Files go under ``jobs/<id>/attempt-<n>/`` so a retried
job never mixes two attempts' outputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from quantlib.inputs import DataError
from service.api.schemas import JOB_OPTION_KEYS
from service.artifacts import ArtifactStore
from service.artifacts.retry import store_file
from service.contract import FailureCode, Metrics, Phase
from service.datasets import get_dataset
from service.db import Job, SessionFactory
from service.errors import LeaseLost, StorageFull, StorageUnavailable
from service.jobs import (
    LeaseStatus,
    NewArtifact,
    acknowledge_cancel,
    claim_job,
    fail_job,
    finish_job,
    load_job,
    retry_job,
)
from workers.checkpoints import CheckpointUploads, newest_checkpoint, remove_checkpoints
from workers.childlog import BoundedLog
from workers.children import CHILD_FOLDER, JobChild, JobChildren
from workers.protocol import (
    ARTIFACTS,
    LOG_FILE,
    MAX_REPORT_BYTES,
    OUT_DIR,
    RESUME_FILE,
    PipelineError,
    PipelineJob,
    child_file,
    read_child_file,
)
from workers.sandbox import kill_pipeline
from workers.scratch import remove_stale_workdirs
from workers.supervise import ChildResult, Heartbeat, JobLease, Outcome, supervise

log = logging.getLogger(__name__)
LOG_TAIL_LINES = 30


def execute_job(
    db: SessionFactory,
    artifacts: ArtifactStore,
    job_id: uuid.UUID,
    worker_id: str,
    lease_s: int,
    children: JobChildren,
    checkpoint_interval_s: float = 0.0,
) -> None:
    """Run ``job_id`` if this worker wins the claim; every ending is written to the job row.

    ``children`` gives the job its sandboxed process (the worker's ceilings and sandbox,
    started ahead when it can be); its training checkpoints are stored at most every
    ``checkpoint_interval_s``. First, the work folders of killed workers on this host
    are removed: nothing else will.
    """
    for path in remove_stale_workdirs():
        log.warning("removed %s, left by a worker that is no longer running", path)
    if not claim_job(db, job_id, worker_id, lease_s):
        log.info("job %s is not queued (taken, cancelled or finished); skipping", job_id)
        return
    job = load_job(db, job_id)
    lease = JobLease(db, job_id, worker_id, job.attempt, lease_s)
    try:
        with Heartbeat(lease) as heartbeat, children.take() as child:
            log.info("job %s attempt %d runs in %s", job_id, job.attempt, child.workdir)
            _run(job, heartbeat, artifacts, child, children, checkpoint_interval_s)
    except LeaseLost:
        log.warning("job %s attempt %d: lease lost; results discarded", job_id, job.attempt)
    except (StorageUnavailable, StorageFull) as exc:  # boto3 has retried already; the store is down or full
        log.error("job %s attempt %d: artifact store failed: %s", job_id, job.attempt, exc)
        message = f"{exc.public_message}; no results were published; resubmit the job once the store is back"
        _fail_if_held(lease, PipelineError(exc.code, message, user_error=False))
    except Exception as exc:  # noqa: BLE001 - the job must end FAILED, not stay RUNNING until reaped
        log.exception("job %s attempt %d failed in the worker", job_id, job.attempt)
        # the exception's text may hold SQL, hosts or paths: it is in the worker's log, not the message
        message = f"the worker failed while handling the job ({type(exc).__name__}); it is safe to resubmit"
        _fail_if_held(lease, PipelineError(FailureCode.INTERNAL, message, user_error=False))
    finally:
        children.prepare_next()  # if the job ended before its child started, it never asked for one


def _run(
    job: Job,
    heartbeat: Heartbeat,
    artifacts: ArtifactStore,
    child: JobChild,
    children: JobChildren,
    checkpoint_interval_s: float,
) -> None:
    lease = heartbeat.lease
    limits = children.limits.for_job(job.spec.get("max_runtime_s"))
    timings: dict[str, float] = {"queue_wait": _seconds(job.created_at, job.started_at)}
    started = time.monotonic()
    if heartbeat.note(lease.progress(Phase.LOADING, None)) is not LeaseStatus.HELD:
        _stop_early(lease)
        return
    deadline = started + job.spec["max_runtime_s"] if job.spec.get("max_runtime_s") else None
    folder = child.folder
    try:
        _fetch_inputs(job, lease, artifacts, folder, limits.cpu_seconds)
    except DataError as exc:
        _fail_if_held(lease, PipelineError(exc.code, f"{exc.message} ({exc.field})", user_error=True))
        remove_checkpoints(artifacts, job.id)
        return
    timings["download"] = round(time.monotonic() - started, 3)
    if heartbeat.status is not LeaseStatus.HELD:  # cancelled, or taken, while the inputs came in
        _stop_early(lease)
        return
    # a checkpoint holds the weights, the optimizer's two moments and the calibrated state;
    # measured before the child runs, while the model file is still the one downloaded
    bound = 8 * (folder / "model.pt2").stat().st_size + (64 << 20)
    checkpoints = CheckpointUploads(artifacts, job.id, job.attempt, folder, checkpoint_interval_s, bound)
    child_started = time.monotonic()
    child.go()
    children.prepare_next()  # the next job's child imports torch while this one runs
    try:
        result = supervise(
            child.process,
            folder,
            heartbeat,
            deadline,
            limits,
            jailed=children.jail is not None,
            on_tick=checkpoints.poll,
        )
    finally:  # the worker itself failed (database down): leave no orphan training
        if child.process.poll() is None:
            kill_pipeline(child.process)
        child.log.finish()
    # from the job's start to the child's end: its phases, reading the model and data, and
    # whatever of the interpreter's start-up a child started ahead had not finished yet
    timings["pipeline"] = round(time.monotonic() - child_started, 3)
    if result.outcome is Outcome.SUCCEEDED:
        _publish(job, lease, artifacts, child.workdir, timings)
    else:
        _end_unsuccessful(lease, artifacts, result, child.log, job.spec.get("max_runtime_s"))
    if result.outcome not in (Outcome.KILLED, Outcome.LOST):  # ended: no attempt will resume
        remove_checkpoints(artifacts, job.id)


def _fetch_inputs(job: Job, lease: JobLease, artifacts: ArtifactStore, folder: Path, cpu_seconds: int | None) -> None:
    """Copy the model, data and config into the child's ``folder`` and describe them in ``job.json``."""
    data_key, data_sha256 = job.data_key, job.data_sha256
    if data_key is None:  # the API guarantees exactly one of data_key and dataset_id
        assert job.dataset_id is not None
        dataset = get_dataset(lease.db, job.team_id, job.dataset_id)
        data_key, data_sha256 = dataset.storage_key, dataset.sha256
    _download(artifacts, job.model_key, folder / "model.pt2")
    data_bytes_sha256 = _download(artifacts, data_key, folder / "data.npz")
    if data_sha256 is not None and data_bytes_sha256 != data_sha256:
        # a dataset sent in parts declared its sha256 (the API never saw its bytes); one it stored, it hashed
        raise DataError(
            f"the data's bytes do not have the sha256 declared when it was uploaded ({data_sha256}); upload it again",
            field="dataset_id" if job.dataset_id else "data",
        )
    if job.config_key:
        _download(artifacts, job.config_key, folder / "config.json")
    checkpoint = newest_checkpoint(artifacts, job.id) if job.attempt > 1 else None
    if checkpoint is not None:
        _download(artifacts, checkpoint, folder / RESUME_FILE)
        log.info("job %s attempt %d resumes from %s", job.id, job.attempt, checkpoint)
    spec = {key: value for key, value in job.spec.items() if key not in JOB_OPTION_KEYS}
    config = "config.json" if job.config_key else None
    resume = RESUME_FILE if checkpoint else None
    PipelineJob("model.pt2", "data.npz", config, spec, cpu_seconds, resume).write(folder)


def _download(artifacts: ArtifactStore, key: str, path: Path) -> str:
    """Copy ``key`` to ``path``; its sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as file:
        for chunk in artifacts.open_stream(key):
            file.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def _publish(job: Job, lease: JobLease, artifacts: ArtifactStore, workdir: Path, timings: dict[str, float]) -> None:
    """Upload this attempt's files and mark the job SUCCEEDED in the same step.

    The child has ended, so its files can no longer change: each must be a regular file
    (not a link to the worker's own files, not a FIFO) to be read at all.
    """
    if lease.progress(Phase.UPLOADING, None) is LeaseStatus.LOST:
        return
    started = time.monotonic()
    folder = workdir / CHILD_FOLDER
    outputs = {name: child_file(folder, f"{OUT_DIR}/{name}") for name in ARTIFACTS if name != LOG_FILE}
    report = read_child_file(folder, f"{OUT_DIR}/report.json", MAX_REPORT_BYTES)
    if report is None or None in outputs.values():
        missing = sorted(name for name, path in outputs.items() if path is None) or ["report.json"]
        message = (
            f"the quantization process ended without its results ({', '.join(missing)} missing or not regular files)"
        )
        _fail_with_log(
            lease, artifacts, workdir / LOG_FILE, PipelineError(FailureCode.INTERNAL, message, user_error=False)
        )
        return

    def succeed(uploaded: list[NewArtifact]) -> None:
        timings["upload"] = round(time.monotonic() - started, 3)
        metrics = _metrics(json.loads(report), timings)
        finish_job(lease.db, job.id, lease.worker_id, lease.attempt, metrics, uploaded)

    files = [path for path in outputs.values() if path is not None]
    _upload_and_end(lease, artifacts, [*files, workdir / LOG_FILE], succeed)


def _upload_and_end(
    lease: JobLease, artifacts: ArtifactStore, files: list[Path], end: Callable[[list[NewArtifact]], None]
) -> None:
    """Store ``files`` under the attempt's own prefix, then ``end`` the job recording them.

    Only ``end`` (one fenced transaction) makes the files visible; if it fails, the lease
    was lost for instance, the uploads are deleted so no attempt leaves files behind.
    """
    prefix = f"jobs/{lease.job_id}/attempt-{lease.attempt}"
    uploaded: list[NewArtifact] = []
    try:
        for path in files:
            key = f"{prefix}/{path.name}"
            size, sha256 = store_file(artifacts, key, path, pause=_pausing_with_lease(lease))
            uploaded.append(NewArtifact(name=path.name, size=size, sha256=sha256, storage_key=key))
        end(uploaded)
    except BaseException:
        _discard(artifacts, uploaded)
        raise


def _pausing_with_lease(lease: JobLease) -> Callable[[float], None]:
    """A wait between upload retries that stops as soon as the job is no longer this attempt's."""

    def pause(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if lease.renew() is LeaseStatus.LOST:
                raise LeaseLost(f"job {lease.job_id} was taken from this worker while it retried an upload")
            time.sleep(min(left, lease.heartbeat_s))

    return pause


def _discard(artifacts: ArtifactStore, uploaded: Sequence[NewArtifact]) -> None:
    """Delete an unpublished attempt's files, as far as the store allows: it may be what just failed.

    Files it cannot delete belong to no artifact row, so no job ever shows them.
    """
    for artifact in uploaded:
        try:
            artifacts.delete(artifact.storage_key)
        except StorageUnavailable as exc:
            log.warning("could not delete unpublished %s: %s", artifact.storage_key, exc)


def _metrics(report: dict[str, Any], timings: dict[str, float]) -> Metrics:
    """The job row's metrics: report.json's accuracy table and loss (its other keys are
    left out), and the wall time of every phase, queue to upload."""
    return Metrics.model_validate({**report, "timings_s": {**timings, **report["timings_s"]}})


def _end_unsuccessful(
    lease: JobLease, artifacts: ArtifactStore, result: ChildResult, output: BoundedLog, max_runtime_s: int | None
) -> None:
    if result.outcome is Outcome.CANCELLED:
        acknowledge_cancel(lease.db, lease.job_id, lease.worker_id, lease.attempt)
    elif result.outcome is Outcome.TIMED_OUT:
        message = f"the job ran longer than its spec.max_runtime_s of {max_runtime_s} s; raise it or train fewer epochs"
        _fail_with_log(lease, artifacts, output.path, PipelineError(FailureCode.TIMEOUT, message, user_error=True))
    elif result.outcome is Outcome.KILLED and result.error is not None:
        state = retry_job(
            lease.db, lease.job_id, lease.worker_id, lease.attempt, result.error.code, result.error.message
        )
        log.warning("job %s attempt %d: %s; now %s", lease.job_id, lease.attempt, result.error.message, state)
    elif result.outcome is Outcome.FAILED and result.error is not None:
        if not result.error.user_error:  # the traceback is the operator's: in the worker's log, and log.txt
            log.error(
                "job %s attempt %d: %s; last lines of its log:\n%s",
                lease.job_id,
                lease.attempt,
                result.error.message,
                "\n".join(output.last_lines(LOG_TAIL_LINES)),
            )
        _fail_with_log(lease, artifacts, output.path, result.error)
    # Outcome.LOST: the job belongs to someone else now; write nothing


def _stop_early(lease: JobLease) -> None:
    """Cancelled (or lost) between the claim and the start: end it without running anything."""
    try:
        acknowledge_cancel(lease.db, lease.job_id, lease.worker_id, lease.attempt)
    except LeaseLost:
        pass


def _fail(lease: JobLease, error: PipelineError, log: Sequence[NewArtifact] = ()) -> None:
    fail_job(
        lease.db,
        lease.job_id,
        lease.worker_id,
        lease.attempt,
        error.code,
        error.message,
        user_error=error.user_error,
        artifacts=log,
    )


def _fail_if_held(lease: JobLease, error: PipelineError) -> None:
    """Record the failure, unless the job already belongs to another attempt (then it is not ours to end)."""
    try:
        _fail(lease, error)
    except LeaseLost:
        pass


def _fail_with_log(lease: JobLease, artifacts: ArtifactStore, log_path: Path, error: PipelineError) -> None:
    """Fail the job with the child's ``log.txt`` as its artifact: the user's way to see what went wrong."""
    files = [log_path] if log_path.is_file() else []
    _upload_and_end(lease, artifacts, files, lambda uploaded: _fail(lease, error, uploaded))


def _seconds(start: datetime | None, end: datetime | None) -> float:
    return round((end - start).total_seconds(), 3) if start and end else 0.0
