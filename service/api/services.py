"""What every request handler needs, built once per app: settings, database, artifact store, stream slots.

Kept on ``app.extensions`` rather than in module globals so several apps (tests, a
benchmark) can live in one process against different databases and stores.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Engine

from service.api.stream_slots import StreamSlots
from service.artifacts import ArtifactStore
from service.db import SessionFactory
from service.settings import Settings

EXTENSION = "qat"


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: Engine
    db: SessionFactory
    artifacts: ArtifactStore
    streams: StreamSlots


def services() -> Services:
    """The current app's services (inside a request or app context)."""
    found: Services = current_app.extensions[EXTENSION]
    return found
