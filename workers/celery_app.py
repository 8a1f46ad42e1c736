"""The Celery app: the broker carries job ids to workers, nothing else.

The job table, not the broker, is the source of truth: a worker claims the job row
before working and a lease reaper recovers jobs of dead workers, so the broker needs
neither late acks nor redelivery (Redis would re-run a long unacked task after its
visibility timeout). ``QAT_BROKER_URL`` is ``redis://...`` in production; the default
``filesystem://`` broker needs no server and works across processes on one machine
(with atomic message files, :mod:`workers.filesystem_broker`).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from service.settings import Settings
from workers import filesystem_broker

QUEUE = "qat.jobs"
RUN_JOB = "qat.run_job"
FILESYSTEM_POLL_S = 0.1


def broker_options(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The broker URL and transport options; the filesystem broker's folders are created here."""
    folder = settings.broker_folder
    if folder is None:
        return settings.broker_url, {}
    folders = {name: folder / name for name in ("queue", "processed", "control")}
    for path in folders.values():
        path.mkdir(parents=True, exist_ok=True)
    return "filesystem://", {
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        "processed_folder": str(folders["processed"]),
        "control_folder": str(folders["control"]),
        "store_processed": False,
        "polling_interval": FILESYSTEM_POLL_S,
    }


def create_celery_app(settings: Settings) -> Celery:
    """A Celery app on the configured broker: one queue, one job per worker at a time, no results."""
    broker, transport_options = broker_options(settings)
    app = Celery("qat", broker=broker, include=["workers.tasks"])
    if settings.broker_folder is not None:
        app.conf.broker_transport = filesystem_broker.TRANSPORT
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
    )
    return app


app = create_celery_app(Settings.from_env())
