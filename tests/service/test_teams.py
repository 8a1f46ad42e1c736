"""Teams and tokens: tokens are random, stored only hashed, and stop working once revoked."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from service.db import Base, SessionFactory
from service.errors import Conflict, InvalidArgument, NotFound
from service.teams import (
    TOKEN_SCHEME,
    authenticate,
    create_team,
    create_token,
    hash_token,
    list_teams,
    revoke_token,
    update_team,
)


def test_token_is_stored_only_as_its_hash(db: SessionFactory, engine: Engine) -> None:
    issued = create_team(db, "vision", max_running=3, max_queued=7)
    assert issued.token.startswith(issued.prefix + "_") and issued.prefix.startswith(TOKEN_SCHEME)
    with engine.connect() as connection:  # every value of every row of every table
        stored = [
            str(value)
            for table in Base.metadata.sorted_tables
            for row in connection.execute(select(table))
            for value in row
            if value is not None
        ]
    assert hash_token(issued.token) in stored
    assert issued.prefix in stored
    assert not any(issued.token in value or issued.token[len(issued.prefix) + 1 :] in value for value in stored)


def test_authenticate(db: SessionFactory) -> None:
    issued = create_team(db, "speech", max_running=1, max_queued=5, weight=2)
    team = authenticate(db, issued.token)
    assert team is not None and (team.name, team.max_running, team.max_queued, team.weight) == ("speech", 1, 5, 2)
    assert authenticate(db, issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")) is None
    assert authenticate(db, issued.prefix) is None
    assert authenticate(db, "Bearer " + issued.token) is None
    assert authenticate(db, "") is None


def test_rotation_and_revocation(db: SessionFactory) -> None:
    first = create_team(db, "nlp")
    second = create_token(db, "nlp")
    assert second.token != first.token and second.team == "nlp"
    revoked = revoke_token(db, first.prefix)
    assert revoked.revoked_at is not None
    assert revoke_token(db, first.prefix).revoked_at == revoked.revoked_at  # idempotent
    assert authenticate(db, first.token) is None
    assert authenticate(db, second.token) is not None
    [summary] = list_teams(db)
    assert (summary.name, summary.active_tokens) == ("nlp", 1)


def test_team_errors(db: SessionFactory) -> None:
    create_team(db, "audio")
    with pytest.raises(Conflict) as conflict:
        create_team(db, "audio")
    assert (conflict.value.code, conflict.value.field) == ("CONFLICT", "name")
    with pytest.raises(InvalidArgument) as bad_name:
        create_team(db, "no spaces")
    assert bad_name.value.field == "name"
    with pytest.raises(InvalidArgument) as bad_limit:
        create_team(db, "zero", max_queued=0)
    assert bad_limit.value.field == "max_queued"
    with pytest.raises(NotFound) as no_team:
        create_token(db, "ghost")
    assert (no_team.value.code, no_team.value.field) == ("NOT_FOUND", "team")
    with pytest.raises(NotFound) as no_token:
        revoke_token(db, "qat_000000000000")
    assert no_token.value.field == "prefix"


def test_list_teams_by_name(db: SessionFactory) -> None:
    for name in ("b-team", "a-team"):
        create_team(db, name)
    assert [t.name for t in list_teams(db)] == ["a-team", "b-team"]


def test_update_team_changes_only_what_is_given(db: SessionFactory) -> None:
    create_team(db, "vision", max_running=3, max_queued=7)
    updated = update_team(db, "vision", weight=4)
    assert (updated.max_running, updated.max_queued, updated.weight) == (3, 7, 4)
    assert update_team(db, "vision", max_running=1).weight == 4
    with pytest.raises(InvalidArgument) as bad_weight:
        update_team(db, "vision", weight=0)
    assert bad_weight.value.field == "weight"
    with pytest.raises(NotFound) as no_team:
        update_team(db, "ghost", weight=2)
    assert no_team.value.field == "name"
    [summary] = list_teams(db)
    assert (summary.max_running, summary.weight) == (1, 4)
