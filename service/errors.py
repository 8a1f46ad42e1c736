"""Errors the service raises on purpose: each carries a stable code, a message, a field and its HTTP status.

They share quantlib's base (:class:`quantlib.errors.QatError`), so the API answers both the
same way: ``{"error": {"code", "message", "field"}}`` with the class's ``status``; the CLI
prints them as ``error [CODE] field: message``. Because the code is a class attribute,
callers can catch by type and programs can branch on the string.
"""

from __future__ import annotations

from quantlib.errors import QatError


class ServiceError(QatError):
    """Base of the service's own errors; a subclass without a status is the service's fault (500)."""

    def __str__(self) -> str:
        return self.line()


class InvalidArgument(ServiceError):
    """A request value is malformed or out of range (a page size, a state name, a key)."""

    code = "INVALID_ARGUMENT"
    status = 400


class Unauthenticated(ServiceError):
    """No bearer token, or one that is unknown or revoked."""

    code = "UNAUTHENTICATED"
    status = 401


class PayloadTooLarge(ServiceError):
    """An upload is over its size limit; ``field`` names the part, the message the limit."""

    code = "TOO_LARGE"
    status = 413


class NotFound(ServiceError):
    """No such thing, or it belongs to another team: the two are indistinguishable on purpose."""

    code = "NOT_FOUND"
    status = 404


class NoReport(ServiceError):
    """The job exists but has no report.html: it has not succeeded (yet), or predates reports."""

    code = "NO_REPORT"
    status = 404


class WrongState(ServiceError):
    """The thing exists but its state does not allow the operation (cancel a finished job)."""

    code = "WRONG_STATE"
    status = 409


class Conflict(ServiceError):
    """The operation would duplicate something unique (a team name)."""

    code = "CONFLICT"
    status = 409


class QuotaExceeded(ServiceError):
    """A team limit (queued jobs) is reached; retrying later can succeed."""

    code = "QUOTA"
    status = 429


class StorageQuotaExceeded(ServiceError):
    """The team's stored bytes would go over its storage quota; nothing was kept."""

    code = "STORAGE_QUOTA"
    status = 507


class IdempotencyMismatch(ServiceError):
    """An Idempotency-Key was reused for a request that differs from the first one."""

    code = "IDEMPOTENCY_MISMATCH"
    status = 422


class LeaseLost(ServiceError):
    """A worker wrote to a job it no longer holds (reaped, re-claimed or cancelled).

    The worker must stop and discard its results: another attempt owns the job now.
    """

    code = "LEASE_LOST"
    status = 500


class SchemaOutOfDate(ServiceError):
    """The database schema does not match the code's migrations."""

    code = "SCHEMA_OUT_OF_DATE"
    status = 503


class BadSetting(ServiceError):
    """An environment variable has a value the service cannot use; ``field`` names it."""

    code = "BAD_SETTING"
    status = 500


class SandboxUnavailable(ServiceError):
    """The job sandbox a worker is configured for cannot be built on its host; it takes no jobs."""

    code = "SANDBOX_UNAVAILABLE"
    status = 500


class TooManyStreams(ServiceError):
    """No event stream slot is free (per team or in all): the caller retries later or polls."""

    code = "TOO_MANY_STREAMS"
    status = 503


class StorageUnavailable(ServiceError):
    """The artifact store could not be reached or refused the operation."""

    code = "STORAGE_UNAVAILABLE"
    status = 503
    public_message = "the artifact store is unreachable right now; retry in a few seconds"


class StorageFull(ServiceError):
    """The artifact store has no room left (disk full, quota): nothing was stored; an operator must free space."""

    code = "STORAGE_FULL"
    status = 507
    public_message = "the artifact store is full, so nothing was stored; retry later (an operator must free space)"


class DatabaseUnavailable(ServiceError):
    """The job store's database could not be reached or refused the connection."""

    code = "DATABASE_UNAVAILABLE"
    status = 503
