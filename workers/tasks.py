"""The Celery task a worker runs for each job id the dispatcher sends.

Database and store connections are made once per worker process and reused for every
job, and so is the :class:`workers.children.JobChildren` that starts each job's child
ahead of its job (the first one as soon as the worker is ready). The task never raises:
every ending is recorded on the job row by :func:`workers.execute.execute_job`, and a
duplicate delivery simply loses the claim.
"""

from __future__ import annotations

import atexit
import functools
import os
import socket
import uuid

from celery.signals import worker_ready

from service.artifacts import ArtifactStore, store_from_settings
from service.db import SessionFactory, make_engine, session_factory
from service.settings import Settings
from workers.celery_app import RUN_JOB, app
from workers.children import JobChildren
from workers.execute import execute_job
from workers.jail import jail_for
from workers.sandbox import ChildLimits


@functools.cache
def _resources() -> tuple[Settings, SessionFactory, ArtifactStore, JobChildren]:
    settings = Settings.from_env()
    limits = ChildLimits(
        settings.child_memory_bytes,
        settings.child_cpu_seconds,
        settings.child_max_processes,
        settings.child_log_bytes,
        settings.child_threads,
    )
    children = JobChildren(limits, jail_for(settings.sandbox, settings.sandbox_uid), warm=settings.child_start_ahead)
    atexit.register(children.close)
    return settings, session_factory(make_engine(settings.database_url)), store_from_settings(settings), children


@worker_ready.connect
def _start_first_child(**_: object) -> None:
    """The first job's child starts with the worker (the solo pool runs jobs on this same thread)."""
    _resources()[3].prepare_next()


def worker_id() -> str:
    """Who holds a lease: host and process, so an operator can find the worker of a job."""
    return f"{socket.gethostname()}:{os.getpid()}"


@app.task(name=RUN_JOB, ignore_result=True)
def run_job(job_id: str) -> None:
    """Claim and run job ``job_id`` (a UUID string: the only thing the broker carries)."""
    settings, db, artifacts, children = _resources()
    execute_job(
        db, artifacts, uuid.UUID(job_id), worker_id(), settings.lease_seconds, children, settings.checkpoint_interval_s
    )
