"""The job store's tables as typed SQLAlchemy 2 models, portable between PostgreSQL and SQLite.

The schema itself is owned by Alembic (``migrations/``); these classes must describe
exactly what the migrations create, which a test checks with Alembic's autogenerate
comparison. Timestamps are timezone-aware UTC on both databases (:class:`UTCDateTime`),
ids of things users see are UUIDs, and JSON columns are JSONB on PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.contract import JobState

SHA256_HEX = 64
STORAGE_KEY = 1024


def utcnow() -> datetime:
    """The application clock: every host writes UTC, so leases compare across machines."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL keeps the zone (``timestamptz``); SQLite drops it, so values are stored as
    naive UTC and come back with ``UTC`` attached. Naive input is refused rather than
    guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    """Declarative base with explicit constraint names, so migrations can alter them on SQLite too."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Team(Base):
    """A group of users sharing quotas; every job, dataset and token belongs to one."""

    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    max_running: Mapped[int] = mapped_column(Integer)
    max_queued: Mapped[int] = mapped_column(Integer)
    # share of the GPU pool relative to other teams when the dispatcher picks the next job
    weight: Mapped[int] = mapped_column(Integer)
    # bytes of live job inputs, job artifacts and datasets together; and datasets kept
    max_storage_bytes: Mapped[int] = mapped_column(BigInteger)
    max_datasets: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    """A bearer token, stored only as its sha256; ``prefix`` identifies it to people."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(SHA256_HEX), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Dataset(Base):
    """Training data uploaded once and reused by many jobs; one row per content per team."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("team_id", "sha256"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(SHA256_HEX))
    size: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(STORAGE_KEY))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # set when the team deleted it: its file is gone, the row stays for the jobs that used it
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Job(Base):
    """One quantization request: its inputs, where it is, who runs it, and how it ended.

    ``attempt`` counts starts (1 for the first); with ``lease_owner`` it fences a worker's
    writes, so a worker whose lease was reaped cannot overwrite a later attempt.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("(data_key IS NULL) <> (dataset_id IS NULL)", name="one_data_source"),
        Index(None, "team_id", "created_at", "id"),
        Index(None, "state", "lease_expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    state: Mapped[JobState] = mapped_column(
        Enum(JobState, name="job_state", native_enum=False, create_constraint=True, length=16),
        default=JobState.QUEUED,
    )
    phase: Mapped[str | None] = mapped_column(String(32))
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    max_attempts: Mapped[int] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    model_key: Mapped[str] = mapped_column(String(STORAGE_KEY))
    model_sha256: Mapped[str] = mapped_column(String(SHA256_HEX))
    data_key: Mapped[str | None] = mapped_column(String(STORAGE_KEY))
    data_sha256: Mapped[str | None] = mapped_column(String(SHA256_HEX))
    dataset_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"))
    config_key: Mapped[str | None] = mapped_column(String(STORAGE_KEY))
    # bytes its stored inputs take, counted against the team's storage; 0 once they are deleted
    inputs_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(Text)
    user_error: Mapped[bool | None] = mapped_column(Boolean)


class Artifact(Base):
    """A result file of a job (ONNX model, record, report) and where the bytes live."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(SHA256_HEX))
    storage_key: Mapped[str] = mapped_column(String(STORAGE_KEY))
    # the attempt that wrote it, so files left by a reaped attempt can be told apart
    attempt: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyKey(Base):
    """Remembers which job a team's ``Idempotency-Key`` created and what the request was."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("team_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(SHA256_HEX))
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
