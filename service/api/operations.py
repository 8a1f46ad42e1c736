"""What each route answers, declared on the route itself: the OpenAPI document is read off these.

A route is decorated with :func:`documented` next to its ``@bp.get``; :mod:`service.api.openapi`
walks ``app.url_map`` and finds the :class:`Operation` on each view function, so a route
without one, or a declaration without a route, cannot reach the document unnoticed. Error
answers are declared as the error classes a route raises: their ``status`` and ``code`` are
what the document lists, from the same classes that make the answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from quantlib.errors import QatError
from service.errors import DatabaseUnavailable, Unauthenticated

View = TypeVar("View", bound=Callable[..., Any])

ATTRIBUTE = "openapi_operation"
# every /v1 route authenticates its caller against the database first
AUTHENTICATION_ERRORS: tuple[type[QatError], ...] = (Unauthenticated, DatabaseUnavailable)


@dataclass(frozen=True)
class Answer:
    """One success answer: a pydantic model as JSON, or another media type's bytes."""

    description: str
    model: type[BaseModel] | None = None
    media: str | None = "application/json"


@dataclass(frozen=True)
class Operation:
    """One route's contract: its answers, the errors it raises, what it reads besides the path.

    ``public`` routes take no token (probes); every other one adds the authentication errors.
    ``path`` narrows a path variable's schema beyond what its URL converter says.
    """

    summary: str
    answers: Mapping[int, Answer]
    errors: tuple[type[QatError], ...] = ()
    description: str = ""
    query: type[BaseModel] | None = None
    headers: tuple[Mapping[str, Any], ...] = ()
    form: Mapping[str, Any] | None = None
    # a JSON request body, parsed with service.api.schemas.parse_body
    body: type[BaseModel] | None = None
    path: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    public: bool = False

    @property
    def all_errors(self) -> tuple[type[QatError], ...]:
        return self.errors if self.public else (*self.errors, *AUTHENTICATION_ERRORS)

    def statuses(self) -> set[int]:
        """Every status this route can answer: its successes and its errors' statuses."""
        return set(self.answers) | {error.status for error in self.all_errors}


def documented(operation: Operation) -> Callable[[View], View]:
    """Attach ``operation`` to a view function (put it under the blueprint's route decorator)."""

    def attach(view: View) -> View:
        setattr(view, ATTRIBUTE, operation)
        return view

    return attach


def operation_of(view: Callable[..., Any]) -> Operation | None:
    found: Operation | None = getattr(view, ATTRIBUTE, None)
    return found
