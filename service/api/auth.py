"""Bearer-token authentication: every ``/v1`` data request is made on behalf of one team.

The team id lands on ``flask.g`` and every store call is scoped by it, so a handler
cannot accidentally read another team's rows.
"""

from __future__ import annotations

from flask import g, request

from service.api.services import services
from service.errors import Unauthenticated
from service.teams import authenticate

HOW_TO_GET_A_TOKEN = "an administrator prints one with `qat admin create-token TEAM`"


def require_team() -> None:
    """A ``before_request`` hook: resolve ``Authorization: Bearer <token>`` or answer 401."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated(
            f"send the header 'Authorization: Bearer <token>'; {HOW_TO_GET_A_TOKEN}", field="Authorization"
        )
    team = authenticate(services().db, token)
    if team is None:
        raise Unauthenticated(f"the token is unknown or revoked; {HOW_TO_GET_A_TOKEN}", field="Authorization")
    g.team_id, g.token = team.id, token


def current_token() -> str:
    """The caller's bearer token, for a long response that must end when it is revoked."""
    token: str = g.token
    return token


def current_team_id() -> int:
    """The caller's team, set by :func:`require_team`."""
    team_id: int = g.team_id
    return team_id
