"""Admission order of the dispatcher on a real (SQLite) job store."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from service.db import SessionFactory, make_engine, migrate, session_factory
from service.jobs import JobInputs, claim_job, create_job, fail_job
from service.teams import authenticate, create_team
from workers.dispatcher import Dispatcher

SHA = "0" * 64


@pytest.fixture
def db(tmp_path: Path) -> SessionFactory:
    url = f"sqlite:///{tmp_path / 'qat.db'}"
    migrate.upgrade(url)
    return session_factory(make_engine(url))


def team(db: SessionFactory, max_running: int = 2, weight: int = 1) -> int:
    issued = create_team(db, f"team-{uuid.uuid4().hex[:8]}", max_running=max_running, max_queued=100, weight=weight)
    found = authenticate(db, issued.token)
    assert found is not None
    return found.id


def queue(db: SessionFactory, team_id: int, count: int) -> list[uuid.UUID]:
    inputs = [JobInputs(model_key="m", model_sha256=SHA, data_key="d", data_sha256=SHA, spec={}) for _ in range(count)]
    return [create_job(db, team_id, item, max_attempts=3).id for item in inputs]


def run_to_end(db: SessionFactory, job_ids: list[uuid.UUID]) -> None:
    """What a worker does to each sent job, quickly: claim it and end it, freeing its slot."""
    for job_id in job_ids:
        assert claim_job(db, job_id, "w", 60)
        fail_job(db, job_id, "w", 1, "INTERNAL", "x", user_error=False)


def test_teams_take_turns_and_room_is_the_number_of_slots(db: SessionFactory) -> None:
    busy, small = team(db, max_running=5), team(db)
    busy_jobs = queue(db, busy, 4)
    small_job = queue(db, small, 1)
    sent: list[uuid.UUID] = []
    dispatcher = Dispatcher(db, sent.append, slots=2)
    assert dispatcher.tick() == [busy_jobs[0], small_job[0]]
    assert dispatcher.tick() == [], "sent but unclaimed jobs hold their slots"
    assert claim_job(db, busy_jobs[0], "w1", 60)
    assert claim_job(db, small_job[0], "w2", 60)
    assert dispatcher.tick() == []
    fail_job(db, small_job[0], "w2", 1, "INTERNAL", "x", user_error=False)
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


def test_a_team_of_weight_two_gets_two_admissions_for_each_of_a_weight_one_team(db: SessionFactory) -> None:
    heavy, light = team(db, max_running=100, weight=2), team(db, max_running=100)
    owner = {job: heavy for job in queue(db, heavy, 30)} | {job: light for job in queue(db, light, 30)}
    dispatcher = Dispatcher(db, lambda _: None, slots=3)
    for _ in range(6):  # every round of three slots, as the previous round's jobs end
        sent = dispatcher.tick()
        assert sorted(owner[job] == heavy for job in sent) == [False, True, True]
        run_to_end(db, sent)


def test_weights_never_lift_a_teams_max_running(db: SessionFactory) -> None:
    heavy, light = team(db, max_running=2, weight=5), team(db, max_running=10)
    heavy_jobs, light_jobs = queue(db, heavy, 5), queue(db, light, 5)
    sent = Dispatcher(db, lambda _: None, slots=6).tick()
    assert len(set(sent) & set(heavy_jobs)) == 2, "the heavy team stops at its max_running"
    assert set(sent) - set(heavy_jobs) == set(light_jobs[:4]), "the rest of the room goes to the other team"


def test_a_newcomers_single_job_is_admitted_within_one_round(db: SessionFactory) -> None:
    """A weight-3 team's backlog admits at most 3 of its jobs before a weight-1 team's first job."""
    busy = team(db, max_running=10, weight=3)
    backlog = queue(db, busy, 20)
    dispatcher = Dispatcher(db, lambda _: None, slots=1)
    for _ in range(4):  # the busy team alone, a job at a time
        run_to_end(db, dispatcher.tick())
    [single] = queue(db, team(db), 1)
    admitted: list[uuid.UUID] = []
    while single not in admitted:
        sent = dispatcher.tick()
        admitted += sent
        run_to_end(db, sent)
        assert len(admitted) <= 4, "one round of weights 3 + 1"
    assert set(admitted) - {single} <= set(backlog)
