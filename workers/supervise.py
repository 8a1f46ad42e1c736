"""Watching the pipeline child: heartbeats, progress, cancellation and the time limit.

The parent is the only process with database access, so it relays what the child
reports and acts on what the job row says. Any write fenced by the lease tells it
whether to go on (``HELD``), stop because the user cancelled (``CANCEL_REQUESTED``) or
stop silently because the job is no longer ours (``LOST``). The lease itself is renewed
by a :class:`Heartbeat` on a thread of its own for the whole job, transfers included.
"""

from __future__ import annotations

import enum
import logging
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from sqlalchemy.exc import OperationalError

from service.contract import FailureCode, Phase, Progress
from service.db import SessionFactory
from service.jobs import LeaseStatus, renew_lease, update_progress
from workers.progress import ProgressTail
from workers.protocol import EXIT_REPORTED_ERROR, PROGRESS_FILE, PipelineError
from workers.sandbox import ChildLimits, kill_pipeline, killed_by

log = logging.getLogger(__name__)
POLL_S = 0.2
PROGRESS_INTERVAL_S = 1.0
# a job whose sandbox was killed by a signal the worker did not send; it runs again
# the signals that end a process from outside: the OOM killer, an operator, a host shutting down
FROM_OUTSIDE = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# when two writes in one loop answer differently, the later state in this list wins
_SEVERITY = [LeaseStatus.HELD, LeaseStatus.CANCEL_REQUESTED, LeaseStatus.LOST]


@dataclass(frozen=True)
class JobLease:
    """One attempt's hold on a job: the fence every write of the worker goes through."""

    db: SessionFactory
    job_id: uuid.UUID
    worker_id: str
    attempt: int
    lease_s: int

    def renew(self) -> LeaseStatus:
        return renew_lease(self.db, self.job_id, self.worker_id, self.attempt, self.lease_s)

    def progress(self, phase: Phase, progress: Progress | None) -> LeaseStatus:
        return update_progress(self.db, self.job_id, self.worker_id, self.attempt, phase, progress)

    @property
    def heartbeat_s(self) -> float:
        """Renew well before expiry, so one slow database write does not lose the job."""
        return min(5.0, self.lease_s / 3)


class Heartbeat:
    """A job's lease renewed on a thread of its own, from the claim to the job's end.

    Downloading inputs, uploading results and retrying either can take longer than a
    lease: renewing only between steps would hand a healthy worker's job to the reaper.
    Every answer is kept, the most severe winning, for the job's steps to act on.
    """

    def __init__(self, lease: JobLease) -> None:
        self.lease = lease
        self._status = LeaseStatus.HELD
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{lease.job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def status(self) -> LeaseStatus:
        return self._status

    def note(self, status: LeaseStatus) -> LeaseStatus:
        """Keep ``status`` (the answer of another fenced write) if it is more severe; the status now."""
        self._status = max(self._status, status, key=_SEVERITY.index)
        return self._status

    def _beat(self) -> None:
        while not self._stop.wait(self.lease.heartbeat_s):
            try:
                self.note(self.lease.renew())
            except Exception as exc:  # noqa: BLE001 - the database is down: try again; the lease may expire
                log.warning("job %s: could not renew the lease: %s", self.lease.job_id, type(exc).__name__)


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"
    TIMED_OUT = "timed_out"
    KILLED = "killed"  # by a signal the worker did not send: a system fault, retried


@dataclass(frozen=True)
class ChildResult:
    outcome: Outcome
    error: PipelineError | None = None


def supervise(
    child: subprocess.Popen[bytes],
    workdir: Path,
    heartbeat: Heartbeat,
    deadline: float | None,
    limits: ChildLimits,
    *,
    jailed: bool,
    on_tick: Callable[[], None] | None = None,
) -> ChildResult:
    """Wait for ``child``, relaying its progress; kill it on cancel, lease loss or ``deadline`` (monotonic).

    ``limits`` are the ones ``child`` was started with, to name the one that ended it;
    ``jailed``: it is bubblewrap, which reports a signal that ended the pipeline as 128 + n.
    ``on_tick`` runs every poll while the child runs (storing its checkpoints).
    """
    tail = ProgressTail(workdir / PROGRESS_FILE)
    last_write = time.monotonic()
    unsent = False
    while True:
        returncode = child.poll()
        now = time.monotonic()
        unsent = tail.poll() or unsent
        latest = tail.latest()
        if unsent and latest is not None and now - last_write >= PROGRESS_INTERVAL_S:
            try:
                heartbeat.note(heartbeat.lease.progress(*latest))
                unsent = False
            except OperationalError:  # the database is restarting: the job goes on, progress waits
                log.warning("job %s: progress not recorded (database unavailable)", heartbeat.lease.job_id)
            last_write = now
        status = heartbeat.status
        if returncode is not None:
            return _exited(returncode, workdir, limits, jailed)
        if status is not LeaseStatus.HELD or (deadline is not None and now > deadline):
            kill_pipeline(child)
            if status is LeaseStatus.CANCEL_REQUESTED:
                return ChildResult(Outcome.CANCELLED)
            if status is LeaseStatus.LOST:
                return ChildResult(Outcome.LOST)
            return ChildResult(Outcome.TIMED_OUT)
        if on_tick is not None:
            on_tick()
        time.sleep(POLL_S)


def _exited(returncode: int, workdir: Path, limits: ChildLimits, jailed: bool) -> ChildResult:
    if returncode == 0:
        return ChildResult(Outcome.SUCCEEDED)
    signal_number = killed_by(returncode, jailed)
    reported = PipelineError.read(workdir) if returncode == EXIT_REPORTED_ERROR else limits.exit_error(signal_number)
    if reported is not None:
        return ChildResult(Outcome.FAILED, reported)
    if signal_number in FROM_OUTSIDE:
        # from outside the job (the OOM killer, an operator, a node shutting down): a refused
        # allocation or the memory limit is reported by the child itself as OUT_OF_MEMORY
        name = signal.Signals(signal_number).name
        message = f"the job's sandboxed process was killed from outside the job ({name}); it was not the job's input"
        return ChildResult(Outcome.KILLED, PipelineError(FailureCode.SANDBOX_KILLED, message, user_error=False))
    how = f"signal {signal_number}" if signal_number is not None else f"exit status {returncode}"
    error = PipelineError(
        FailureCode.INTERNAL, f"the quantization process crashed ({how}); see log.txt", user_error=False
    )
    return ChildResult(Outcome.FAILED, error)
