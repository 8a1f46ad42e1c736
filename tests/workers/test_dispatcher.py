"""Admission order of the dispatcher on a real (SQLite) job store."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from service import migrate, store
from service.db import SessionFactory, make_engine, session_factory
from service.teams import authenticate, create_team
from workers.dispatcher import Dispatcher

SHA = "0" * 64


@pytest.fixture
def db(tmp_path: Path) -> SessionFactory:
    url = f"sqlite:///{tmp_path / 'qat.db'}"
    migrate.upgrade(url)
    return session_factory(make_engine(url))


def team(db: SessionFactory, max_running: int = 2) -> int:
    issued = create_team(db, f"team-{uuid.uuid4().hex[:8]}", max_running=max_running, max_queued=100)
    found = authenticate(db, issued.token)
    assert found is not None
    return found.id


def queue(db: SessionFactory, team_id: int, count: int) -> list[uuid.UUID]:
    inputs = [store.JobInputs(model_key="m", model_sha256=SHA, data_key="d", data_sha256=SHA, spec={}) for _ in range(count)]
    return [store.create_job(db, team_id, item, max_attempts=3).id for item in inputs]


def test_teams_take_turns_and_room_is_the_number_of_slots(db: SessionFactory) -> None:
    busy, small = team(db, max_running=5), team(db)
    busy_jobs = queue(db, busy, 4)
    small_job = queue(db, small, 1)
    sent: list[uuid.UUID] = []
    dispatcher = Dispatcher(db, sent.append, slots=2)
    assert dispatcher.tick() == [busy_jobs[0], small_job[0]]
    assert dispatcher.tick() == [], "sent but unclaimed jobs hold their slots"
    assert store.claim_job(db, busy_jobs[0], "w1", 60)
    assert store.claim_job(db, small_job[0], "w2", 60)
    assert dispatcher.tick() == []
    store.fail_job(db, small_job[0], "w2", 1, "INTERNAL", "x", user_error=False)
    assert dispatcher.tick() == [busy_jobs[1]]
    assert sent == [busy_jobs[0], small_job[0], busy_jobs[1]]


def test_a_team_never_exceeds_its_max_running(db: SessionFactory) -> None:
    limited = team(db, max_running=1)
    jobs = queue(db, limited, 3)
    dispatcher = Dispatcher(db, lambda _: None, slots=4)
    assert dispatcher.tick() == [jobs[0]]
    assert dispatcher.tick() == []


def test_an_unclaimed_job_is_sent_again_after_the_resend_delay(db: SessionFactory) -> None:
    job = queue(db, team(db), 1)[0]
    dispatcher = Dispatcher(db, lambda _: None, slots=1, resend_after_s=0)
    assert dispatcher.tick() == [job]
    assert dispatcher.tick() == [job]
