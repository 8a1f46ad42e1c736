"""The one error base of the project, and quantlib's input errors. Imports nothing heavy: the API uses it.

Every error meant for a user or a calling program is a :class:`QatError`: a stable
``code`` for programs, a ``message`` for people that says what is wrong and what is
allowed, the ``field`` it is about, and the HTTP ``status`` the API answers it with.
quantlib's errors are the user's input (422); the service's own (``service.errors``)
subclass the same base with their statuses.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import ValidationError


class QatError(Exception):
    """Base of every error meant for a user or a calling program, never a bare crash."""

    code: ClassVar[str] = "INTERNAL"
    status: ClassVar[int] = 500
    default_field: ClassVar[str | None] = None
    # what a caller is told when the fault is the service's own: the message itself may name
    # hosts, buckets, keys or paths, which go to the log only (None: the message is public)
    public_message: ClassVar[str | None] = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field if field is not None else self.default_field

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": self.field}

    def line(self) -> str:
        """``[CODE] field: message``: how the command-line tools print it."""
        where = f" {self.field}:" if self.field else ""
        return f"[{self.code}]{where} {self.message}"


class QuantlibError(QatError, ValueError):
    """Bad user input to the library (a config, a spec, data, a model): always the user's to fix."""

    code = "BAD_INPUT"
    status = 422


class NoQuantizableLayers(QuantlibError):
    """Nothing would be quantized (a model without a supported layer, or a config enabling none):
    fine-tuning it would pass the FP32 model off as INT8."""

    code = "NO_QUANTIZABLE_LAYERS"


class SpecError(QuantlibError):
    """Training settings that cannot be used (epochs, lr, loss, device, ...); ``field`` names the key."""

    code = "BAD_SPEC"
    default_field = "spec"


@dataclass(frozen=True)
class FirstError:
    """pydantic's first complaint about a value, in the parts every message here is made of."""

    key: str  # the dotted location ("" when the whole value is at fault)
    kind: str  # pydantic's error type: extra_forbidden, literal_error, greater_than, ...
    message: str  # pydantic's own words
    value: Any  # the input at fault
    context: dict[str, Any]


def first_error(exc: ValidationError) -> FirstError:
    """The first of ``exc``'s errors: users get one clear message at a time, not a list."""
    err = exc.errors()[0]
    # a union's member appears in the location as a tag (``constrained-int``, ``list[int]``): no field of ours
    key = ".".join(str(part) for part in err["loc"] if not (isinstance(part, str) and ("-" in part or "[" in part)))
    return FirstError(key, err["type"], err["msg"], err.get("input"), dict(err.get("ctx") or {}))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` means an allocation was refused: Python's ``MemoryError``, torch's
    ``OutOfMemoryError`` (CUDA) or torch's CPU allocator failing, which raises a plain
    ``RuntimeError`` (under a worker's ``RLIMIT_DATA``, for instance). Such a failure is
    about the job's size, never about the data's shape or the model's validity. An
    ``OSError`` of ENOMEM (a mapping or a library load refused) is the same failure."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
        return True
    # torch: "can't allocate memory"; the C library's strerror(ENOMEM): "Cannot allocate memory"
    return "allocate memory" in str(exc).lower()


# torch's messages run long (a whole guard or shape report); this keeps what a user reads
MAX_REASON = 2000


def one_line(exc: BaseException) -> str:
    """Torch's whole message on one line, bounded: its first line rarely says what the program expected."""
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
