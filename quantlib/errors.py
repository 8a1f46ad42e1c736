"""The base of quantlib's input errors. Imports nothing heavy: the API process uses it."""

from __future__ import annotations


class QuantlibError(ValueError):
    """Bad user input: a stable ``code`` for programs, a ``message`` for people that says
    what is wrong and what is allowed, and the ``field`` it is about, so an API can point
    at it. Subclasses set the default code."""

    default_code = "BAD_INPUT"
    default_field: str | None = None

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code or self.default_code
        self.message = message
        self.field = field if field is not None else self.default_field

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": self.field}


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` means an allocation was refused: Python's ``MemoryError``, torch's
    ``OutOfMemoryError`` (CUDA) or torch's CPU allocator failing, which raises a plain
    ``RuntimeError`` (under a worker's ``RLIMIT_DATA``, for instance). Such a failure is
    about the job's size, never about the data's shape or the model's validity."""
    return (
        isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(exc)
    )
