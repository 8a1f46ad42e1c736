"""The job store's database: typed models, engines and transactions."""

from service.db.engine import SessionFactory, make_engine, reading, session_factory, writing
from service.db.models import (
    ApiToken,
    Artifact,
    Base,
    Dataset,
    IdempotencyKey,
    Job,
    JobState,
    Team,
    utcnow,
)

__all__ = [
    "ApiToken",
    "Artifact",
    "Base",
    "Dataset",
    "IdempotencyKey",
    "Job",
    "JobState",
    "SessionFactory",
    "Team",
    "make_engine",
    "reading",
    "session_factory",
    "utcnow",
    "writing",
]
