"""Teams and their API tokens: creation, revocation and bearer-token authentication.

A token is shown exactly once, when it is made; the database keeps only its sha256 and
a short random prefix (``qat_1a2b3c4d5e6f``) by which people can name it, e.g. to revoke
it. Authentication finds the row by that prefix and compares hashes in constant time,
so response timing says nothing about how much of a guessed token was right.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import quota
from service.db import ApiToken, SessionFactory, Team, reading, utcnow, writing
from service.errors import Conflict, InvalidArgument, NotFound

TOKEN_SCHEME = "qat_"
PREFIX_LENGTH = len(TOKEN_SCHEME) + 12
# fullmatch: '$' alone would also accept a name ending in a newline
_TEAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# the largest value of each team limit: far beyond any pool, well inside their columns
LIMIT_MAX = {
    "max_running": 10_000,
    "max_queued": 1_000_000,
    "weight": 1_000,
    "max_storage_bytes": 1 << 50,
    "max_datasets": 100_000,
}
DEFAULT_STORAGE_BYTES = 100 << 30
DEFAULT_DATASETS = 100


@dataclass(frozen=True)
class IssuedToken:
    """A freshly made token: ``token`` is the secret, printed once and never stored."""

    team: str
    prefix: str
    token: str


@dataclass(frozen=True)
class TeamSummary:
    """A team's limits, its storage in use and its unrevoked tokens, for ``qat admin list-teams``."""

    name: str
    max_running: int
    max_queued: int
    weight: int
    storage_bytes: int
    max_storage_bytes: int
    datasets: int
    max_datasets: int
    active_tokens: int
    created_at: datetime


def hash_token(token: str) -> str:
    """The stored form of a token: hex sha256 (tokens are 256-bit random, so no salt is needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_team(
    db: SessionFactory,
    name: str,
    *,
    max_running: int = 2,
    max_queued: int = 100,
    weight: int = 1,
    max_storage_bytes: int = DEFAULT_STORAGE_BYTES,
    max_datasets: int = DEFAULT_DATASETS,
) -> IssuedToken:
    """Create team ``name`` with its first token; ``Conflict`` if the name is taken."""
    if not _TEAM_NAME.fullmatch(name):
        raise InvalidArgument(
            f"bad team name {name!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            field="name",
        )
    limits = {
        "max_running": max_running,
        "max_queued": max_queued,
        "weight": weight,
        "max_storage_bytes": max_storage_bytes,
        "max_datasets": max_datasets,
    }
    _check_limits(**limits)
    try:
        with writing(db) as session:
            if session.scalar(select(Team.id).where(Team.name == name)) is not None:
                raise Conflict(f"team {name!r} already exists", field="name")
            team = Team(name=name, **limits)
            session.add(team)
            session.flush()
            return _issue(session, team)
    except IntegrityError:
        raise Conflict(f"team {name!r} already exists", field="name") from None


def update_team(
    db: SessionFactory,
    name: str,
    *,
    max_running: int | None = None,
    max_queued: int | None = None,
    weight: int | None = None,
    max_storage_bytes: int | None = None,
    max_datasets: int | None = None,
) -> TeamSummary:
    """Change a team's limits or weight (``None`` keeps a value); returns the team as it now is.

    Running and queued jobs are never touched: the dispatcher reads the new values on its
    next tick, so a lowered ``max_running`` only stops further admissions.
    """
    given = {
        "max_running": max_running,
        "max_queued": max_queued,
        "weight": weight,
        "max_storage_bytes": max_storage_bytes,
        "max_datasets": max_datasets,
    }
    changes = {key: value for key, value in given.items() if value is not None}
    _check_limits(**changes)
    with writing(db) as session:
        team = session.scalar(select(Team).where(Team.name == name))
        if team is None:
            raise NotFound(f"no team named {name!r}", field="name")
        for key, value in changes.items():
            setattr(team, key, value)
    [summary] = [row for row in list_teams(db) if row.name == name]
    return summary


def create_token(db: SessionFactory, team_name: str) -> IssuedToken:
    """Another token for an existing team (rotation: create the new one, then revoke the old)."""
    with writing(db) as session:
        team = session.scalar(select(Team).where(Team.name == team_name))
        if team is None:
            raise NotFound(f"no team named {team_name!r}", field="team")
        return _issue(session, team)


def revoke_token(db: SessionFactory, prefix: str) -> ApiToken:
    """Revoke the token shown as ``prefix``; revoking twice keeps the first revocation time."""
    with writing(db) as session:
        token = session.scalar(select(ApiToken).where(ApiToken.prefix == prefix))
        if token is None:
            raise NotFound(f"no token with prefix {prefix!r}", field="prefix")
        if token.revoked_at is None:
            token.revoked_at = utcnow()
        return token


def list_teams(db: SessionFactory) -> list[TeamSummary]:
    """Every team by name, with its storage in use and its count of unrevoked tokens."""
    active = and_(ApiToken.team_id == Team.id, ApiToken.revoked_at.is_(None))
    query = select(Team, func.count(ApiToken.id)).outerjoin(ApiToken, active).group_by(Team.id).order_by(Team.name)
    with reading(db) as session:
        return [
            TeamSummary(
                name=t.name,
                max_running=t.max_running,
                max_queued=t.max_queued,
                weight=t.weight,
                storage_bytes=quota.storage_used(session, t.id),
                max_storage_bytes=t.max_storage_bytes,
                datasets=quota.datasets_kept(session, t.id),
                max_datasets=t.max_datasets,
                active_tokens=count,
                created_at=t.created_at,
            )
            for t, count in session.execute(query).tuples()
        ]


def authenticate(db: SessionFactory, token: str) -> Team | None:
    """The team a bearer token belongs to, or ``None`` for an unknown, malformed or revoked token."""
    if not token.startswith(TOKEN_SCHEME) or len(token) <= PREFIX_LENGTH:
        return None
    query = select(ApiToken, Team).join(Team).where(ApiToken.prefix == token[:PREFIX_LENGTH])
    with reading(db) as session:
        row = session.execute(query).tuples().one_or_none()
    if row is None:
        return None
    stored, team = row
    if not hmac.compare_digest(stored.token_sha256, hash_token(token)) or stored.revoked_at is not None:
        return None
    return team


def _check_limits(**limits: int) -> None:
    for field, value in limits.items():
        if not 1 <= value <= LIMIT_MAX[field]:
            raise InvalidArgument(f"{field} must be 1 to {LIMIT_MAX[field]}, got {value}", field=field)


def _issue(session: Session, team: Team) -> IssuedToken:
    prefix = TOKEN_SCHEME + secrets.token_hex(6)
    token = f"{prefix}_{secrets.token_urlsafe(32)}"
    session.add(ApiToken(team_id=team.id, prefix=prefix, token_sha256=hash_token(token)))
    return IssuedToken(team=team.name, prefix=prefix, token=token)
