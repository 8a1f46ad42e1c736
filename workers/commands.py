"""``qat worker`` and ``qat dispatcher``: the processes of the worker pool.

Celery and the job modules are imported inside the commands, after
``CUDA_VISIBLE_DEVICES`` is set, and the worker process itself never imports torch:
only the per-job pipeline child touches a GPU.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import uuid
from pathlib import Path

import click


@click.command()
@click.option("--gpu", type=click.IntRange(min=0), default=None, help="GPU index this worker owns; CPU when omitted.")
@click.option("--name", default=None, help="Celery node name (default qat-<host>-<gpu|cpu>-<pid>).")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(gpu: int | None, name: str | None, loglevel: str) -> None:
    """Run one job at a time from the queue: one process per GPU (--gpu N), or on the CPU."""
    # set before anything could initialise CUDA, and inherited by every job's child process
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if gpu is None else str(gpu)
    _check_sandbox()
    from workers.celery_app import app

    node = name or f"qat-{socket.gethostname()}-{'cpu' if gpu is None else f'gpu{gpu}'}-{os.getpid()}"
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--prefetch-multiplier=1",
            "--without-gossip",
            "--without-mingle",
            f"--hostname={node}@%h",
            f"--loglevel={loglevel}",
        ]
    )


def _check_sandbox() -> None:
    """Refuse to take jobs when the sandbox asked for cannot be built: one error line, exit 2."""
    from service.errors import ServiceError
    from service.settings import Settings
    from workers.jail import jail_for

    try:
        settings = Settings.from_env()
        jail = jail_for(settings.sandbox, settings.sandbox_uid)
        if jail is None:
            click.echo("warning: QAT_SANDBOX=none: jobs run unconfined, with this worker's user and network", err=True)
            return
        with tempfile.TemporaryDirectory(prefix="qat-sandbox-check-") as scratch:
            jail.check(Path(scratch))
    except ServiceError as exc:
        click.echo(f"error {exc}", err=True)
        sys.exit(2)


@click.command()
@click.option(
    "--slots",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    envvar="QAT_WORKER_SLOTS",
    help="Jobs the pool runs at once (its number of workers); env QAT_WORKER_SLOTS.",
)
def dispatcher(slots: int) -> None:
    """Reap expired leases and send queued jobs to workers, fairly across teams, until interrupted."""
    from service.artifacts import store_from_settings
    from service.db import make_engine, session_factory
    from service.ops.retention import release_inputs
    from service.settings import Settings
    from workers.celery_app import QUEUE, RUN_JOB, app
    from workers.dispatcher import Dispatcher, run_forever

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    db = session_factory(make_engine(settings.database_url))
    store = store_from_settings(settings)

    def send(job_id: uuid.UUID) -> None:
        app.send_task(RUN_JOB, args=[str(job_id)], queue=QUEUE)

    click.echo(f"dispatching to {slots} worker slot(s)")
    run_forever(Dispatcher(db, send, slots), release_inputs=lambda: release_inputs(db, store))
