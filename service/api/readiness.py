"""What ``/readyz`` checks: can this process reach its database, broker and artifact store?

Each check is cheap (one ``SELECT 1``, one TCP connect or folder stat, one tiny listing)
and reports instead of raising, so one answer shows everything that is down; the log says why.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from sqlalchemy import text

from service.api.services import Services

log = logging.getLogger(__name__)
BROKER_CONNECT_TIMEOUT_S = 1.0
_DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671}
PROBE_PREFIX = "readyz/"


def readiness(svc: Services) -> dict[str, str]:
    """Component name -> ``"ok"`` or ``"unavailable"``; the reason goes to the log only.

    The probe is unauthenticated: its answer names no host, bucket or folder.
    """
    checks: dict[str, Callable[[Services], None]] = {
        "database": _database,
        "broker": _broker,
        "storage": _storage,
    }
    results = {}
    for name, check in checks.items():
        try:
            check(svc)
            results[name] = "ok"
        except Exception as exc:  # a readiness probe reports every failure, whatever its type
            log.warning("readiness: %s unavailable: %s: %s", name, type(exc).__name__, exc)
            results[name] = "unavailable"
    return results


def _database(svc: Services) -> None:
    with svc.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _broker(svc: Services) -> None:
    folder = svc.settings.broker_folder
    if folder is not None:
        if not os.access(folder if folder.exists() else folder.parent, os.W_OK):
            raise OSError(f"broker folder {folder} is not writable")
        return
    url = urlsplit(svc.settings.broker_url)
    port = url.port or _DEFAULT_PORTS.get(url.scheme)
    if url.hostname is None or port is None:
        return  # a transport we cannot probe cheaply; Celery reports it when used
    socket.create_connection((url.hostname, port), timeout=BROKER_CONNECT_TIMEOUT_S).close()


def _storage(svc: Services) -> None:
    list(svc.artifacts.list(PROBE_PREFIX))
