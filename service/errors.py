"""Errors the service raises on purpose: each carries a stable code, a message and a field.

The API turns them into ``{"error": {"code", "message", "field"}}`` with a status chosen
by ``code``; the CLI prints them as ``error [CODE] field: message``. Because the code is
a class attribute, callers can catch by type and programs can branch on the string.
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    """Base of every error meant for a user or a calling program, never a bare crash."""

    code: ClassVar[str] = "INTERNAL"
    # what a caller is told when the fault is the service's own: the message itself may name
    # hosts, buckets, keys or paths, which go to the log only (None: the message is public)
    public_message: ClassVar[str | None] = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": self.field}

    def __str__(self) -> str:
        where = f" {self.field}:" if self.field else ""
        return f"[{self.code}]{where} {self.message}"


class InvalidArgument(ServiceError):
    """A request value is malformed or out of range (a page size, a state name, a key)."""

    code = "INVALID_ARGUMENT"


class Unauthenticated(ServiceError):
    """No bearer token, or one that is unknown or revoked."""

    code = "UNAUTHENTICATED"


class PayloadTooLarge(ServiceError):
    """An upload is over its size limit; ``field`` names the part, the message the limit."""

    code = "TOO_LARGE"


class NotFound(ServiceError):
    """No such thing, or it belongs to another team: the two are indistinguishable on purpose."""

    code = "NOT_FOUND"


class NoReport(ServiceError):
    """The job exists but has no report.html: it has not succeeded (yet), or predates reports."""

    code = "NO_REPORT"


class WrongState(ServiceError):
    """The thing exists but its state does not allow the operation (cancel a finished job)."""

    code = "WRONG_STATE"


class Conflict(ServiceError):
    """The operation would duplicate something unique (a team name)."""

    code = "CONFLICT"


class QuotaExceeded(ServiceError):
    """A team limit (queued jobs) is reached; retrying later can succeed."""

    code = "QUOTA"


class StorageQuotaExceeded(ServiceError):
    """The team's stored bytes would go over its storage quota; nothing was kept."""

    code = "STORAGE_QUOTA"


class IdempotencyMismatch(ServiceError):
    """An Idempotency-Key was reused for a request that differs from the first one."""

    code = "IDEMPOTENCY_MISMATCH"


class LeaseLost(ServiceError):
    """A worker wrote to a job it no longer holds (reaped, re-claimed or cancelled).

    The worker must stop and discard its results: another attempt owns the job now.
    """

    code = "LEASE_LOST"


class SchemaOutOfDate(ServiceError):
    """The database schema does not match the code's migrations."""

    code = "SCHEMA_OUT_OF_DATE"


class BadSetting(ServiceError):
    """An environment variable has a value the service cannot use; ``field`` names it."""

    code = "BAD_SETTING"


class SandboxUnavailable(ServiceError):
    """The job sandbox a worker is configured for cannot be built on its host; it takes no jobs."""

    code = "SANDBOX_UNAVAILABLE"


class TooManyStreams(ServiceError):
    """No event stream slot is free (per team or in all): the caller retries later or polls."""

    code = "TOO_MANY_STREAMS"


class StorageUnavailable(ServiceError):
    """The artifact store could not be reached or refused the operation."""

    code = "STORAGE_UNAVAILABLE"
    public_message = "the artifact store is unreachable right now; retry in a few seconds"


class StorageFull(ServiceError):
    """The artifact store has no room left (disk full, quota): nothing was stored; an operator must free space."""

    code = "STORAGE_FULL"
    public_message = "the artifact store is full, so nothing was stored; retry later (an operator must free space)"


class DatabaseUnavailable(ServiceError):
    """The job store's database could not be reached or refused the connection."""

    code = "DATABASE_UNAVAILABLE"
