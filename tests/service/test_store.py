"""The job state machine on PostgreSQL and SQLite: every transition, fencing, races, paging."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, timedelta
from functools import partial
from typing import Any, TypeVar

import pytest
from sqlalchemy.exc import IntegrityError

from service.contract import Phase, Progress
from service.datasets import get_dataset, register_dataset
from service.db import JobState, SessionFactory, Team, utcnow
from service.errors import (
    IdempotencyMismatch,
    InvalidArgument,
    LeaseLost,
    NotFound,
    QuotaExceeded,
    ServiceError,
    WrongState,
)
from service.jobs import (
    JobInputs,
    LeaseStatus,
    NewArtifact,
    acknowledge_cancel,
    claim_job,
    create_job,
    fail_job,
    find_or_create_job,
    finish_job,
    get_artifact,
    get_job,
    list_artifacts,
    list_jobs,
    load_job,
    reap_expired_leases,
    renew_lease,
    request_cancel,
    request_fingerprint,
    update_progress,
)
from support.metrics import METRICS

MakeTeam = Callable[..., Team]
T = TypeVar("T")
LEASE_S = 60
MAX_ATTEMPTS = 3


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def inputs(**overrides: Any) -> JobInputs:
    fields: dict[str, Any] = {
        "model_key": "uploads/model.pt2",
        "model_sha256": sha("model"),
        "data_key": "uploads/data.npz",
        "data_sha256": sha("data"),
        "spec": {"epochs": 1, "batch_size": 8},
    }
    return JobInputs(**{**fields, **overrides})


def new_job(db: SessionFactory, team: Team, **overrides: Any) -> uuid.UUID:
    return create_job(db, team.id, inputs(**overrides), max_attempts=MAX_ATTEMPTS).id


def running_job(db: SessionFactory, team: Team, worker: str = "w1") -> uuid.UUID:
    job_id = new_job(db, team)
    assert claim_job(db, job_id, worker, LEASE_S)
    return job_id


@contextmanager
def expect(error: type[ServiceError], code: str, field: str | None = None) -> Iterator[None]:
    """``pytest.raises`` that also checks the error's code and field."""
    with pytest.raises(error) as info:
        yield
    assert info.value.code == code
    if field is not None:
        assert info.value.field == field


def race(contenders: int, attempt: Callable[[int], T]) -> list[T]:
    """Run ``attempt(i)`` in ``contenders`` threads released at the same instant."""
    barrier = threading.Barrier(contenders)

    def run(i: int) -> T:
        barrier.wait()
        return attempt(i)

    with ThreadPoolExecutor(contenders) as pool:
        return list(pool.map(run, range(contenders)))


# --------------------------------------------------------------------- create and read


def test_create_and_get_job(db: SessionFactory, make_team: MakeTeam) -> None:
    team = make_team()
    job_id = new_job(db, team, config_key="uploads/config.json", priority=5)
    job = get_job(db, team.id, job_id)
    assert job.state == JobState.QUEUED
    assert (job.attempt, job.max_attempts, job.priority) == (1, MAX_ATTEMPTS, 5)
    assert job.spec == {"epochs": 1, "batch_size": 8}
    assert job.config_key == "uploads/config.json"
    assert job.cancel_requested is False
    assert job.created_at.tzinfo == UTC and abs(utcnow() - job.created_at) < timedelta(seconds=30)


def test_job_id_chosen_by_caller(db: SessionFactory, make_team: MakeTeam) -> None:
    team = make_team()
    chosen = uuid.uuid4()
    assert new_job(db, team, job_id=chosen) == chosen


def test_teams_cannot_see_each_others_jobs(db: SessionFactory, make_team: MakeTeam) -> None:
    owner, other = make_team(), make_team()
    job_id = new_job(db, owner)
    with expect(NotFound, "NOT_FOUND", "job_id"):
        get_job(db, other.id, job_id)
    with expect(NotFound, "NOT_FOUND", "job_id"):
        request_cancel(db, other.id, job_id)
    with expect(NotFound, "NOT_FOUND", "job_id"):
        list_artifacts(db, other.id, job_id)
    assert list_jobs(db, other.id).jobs == []
    assert get_job(db, owner.id, job_id).state == JobState.QUEUED


def test_missing_job_is_not_found(db: SessionFactory, make_team: MakeTeam) -> None:
    with expect(NotFound, "NOT_FOUND", "job_id"):
        get_job(db, make_team().id, uuid.uuid4())
    with expect(NotFound, "NOT_FOUND", "job_id"):
        load_job(db, uuid.uuid4())


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"data_key": None, "data_sha256": None}, "data"),  # no data at all
        ({"dataset_id": uuid.uuid4()}, "data"),  # file and dataset both
        ({"model_sha256": "xyz"}, "model"),
        ({"data_sha256": None}, "data"),
    ],
)
def test_bad_inputs_are_rejected(
    db: SessionFactory, make_team: MakeTeam, overrides: dict[str, Any], field: str
) -> None:
    with expect(InvalidArgument, "INVALID_ARGUMENT", field):
        new_job(db, make_team(), **overrides)


def test_queue_quota(db: SessionFactory, make_team: MakeTeam) -> None:
    team = make_team(max_queued=2)
    first = new_job(db, team)
    new_job(db, team)
    with expect(QuotaExceeded, "QUOTA"):
        new_job(db, team)
    assert claim_job(db, first, "w1", LEASE_S)  # running jobs do not count as queued
    new_job(db, team)
    assert make_team(max_queued=2)  # other teams are unaffected
    new_job(db, make_team(max_queued=1))


# ---------------------------------------------------------------------------- datasets


def test_dataset_dedup_isolation_and_use(db: SessionFactory, make_team: MakeTeam) -> None:
    team, other = make_team(), make_team()
    dataset, created = register_dataset(db, team.id, sha("npz"), 123, "datasets/a.npz")
    again, created_again = register_dataset(db, team.id, sha("npz"), 123, "datasets/b.npz")
    assert created and not created_again
    assert again.id == dataset.id and again.storage_key == "datasets/a.npz"
    theirs, created_theirs = register_dataset(db, other.id, sha("npz"), 123, "datasets/c.npz")
    assert created_theirs and theirs.id != dataset.id
    assert get_dataset(db, team.id, dataset.id).size == 123
    with expect(NotFound, "NOT_FOUND", "dataset_id"):
        get_dataset(db, other.id, dataset.id)

    job_id = new_job(db, team, data_key=None, data_sha256=None, dataset_id=dataset.id)
    assert get_job(db, team.id, job_id).dataset_id == dataset.id
    with expect(NotFound, "NOT_FOUND", "dataset_id"):
        new_job(db, other, data_key=None, data_sha256=None, dataset_id=dataset.id)


# -------------------------------------------------------------------------- pagination


def test_pagination_newest_first(db: SessionFactory, make_team: MakeTeam) -> None:
    team = make_team()
    created = [new_job(db, team) for _ in range(25)]
    new_job(db, make_team())  # another team's job never shows up

    seen: list[uuid.UUID] = []
    sizes = []
    token: str | None = None
    while True:
        page = list_jobs(db, team.id, page_size=10, page_token=token)
        sizes.append(len(page.jobs))
        seen += [job.id for job in page.jobs]
        token = page.next_page_token
        if token is None:
            break
    assert sizes == [10, 10, 5]
    assert seen == created[::-1]


def test_pagination_filters_by_state(db: SessionFactory, make_team: MakeTeam) -> None:
    team = make_team()
    jobs = [new_job(db, team) for _ in range(5)]
    for job_id in jobs[:3]:
        request_cancel(db, team.id, job_id)
    page = list_jobs(db, team.id, state="CANCELLED", page_size=2)
    rest = list_jobs(db, team.id, state="cancelled", page_size=2, page_token=page.next_page_token)
    assert [j.id for j in page.jobs + rest.jobs] == jobs[:3][::-1]
    assert rest.next_page_token is None
    assert [j.id for j in list_jobs(db, team.id, state="QUEUED").jobs] == jobs[3:][::-1]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"page_size": 0}, "page_size"),
        ({"page_size": 101}, "page_size"),
        ({"state": "DONE"}, "state"),
        ({"page_token": "not-a-token"}, "page_token"),
        ({"page_token": "WyJ4Il0"}, "page_token"),  # valid base64 of the wrong JSON
    ],
)
def test_bad_listing_arguments(db: SessionFactory, make_team: MakeTeam, kwargs: dict[str, Any], field: str) -> None:
    with expect(InvalidArgument, "INVALID_ARGUMENT", field):
        list_jobs(db, make_team().id, **kwargs)


# ------------------------------------------------------------------------ cancellation


def test_cancel_queued_job_is_immediate(db: SessionFactory, make_team: MakeTeam) -> None:
    team = make_team()
    job_id = new_job(db, team)
    job = request_cancel(db, team.id, job_id)
    assert job.state == JobState.CANCELLED and job.finished_at is not None
    assert not claim_job(db, job_id, "w1", LEASE_S)
    with expect(WrongState, "WRONG_STATE", "state"):
        request_cancel(db, team.id, job_id)


def test_cancel_running_job_waits_for_the_worker(db: SessionFactory, make_team: MakeTeam) -> None:
    team = make_team()
    job_id = running_job(db, team)
    assert request_cancel(db, team.id, job_id).state == JobState.CANCELLING
    assert request_cancel(db, team.id, job_id).state == JobState.CANCELLING  # asking twice is fine
    assert renew_lease(db, job_id, "w1", 1, LEASE_S) == LeaseStatus.CANCEL_REQUESTED
    acknowledge_cancel(db, job_id, "w1", 1)
    job = get_job(db, team.id, job_id)
    assert job.state == JobState.CANCELLED and job.finished_at is not None
    with expect(WrongState, "WRONG_STATE"):
        request_cancel(db, team.id, job_id)


def test_acknowledge_cancel_needs_a_cancel_request(db: SessionFactory, make_team: MakeTeam) -> None:
    job_id = running_job(db, make_team())
    with expect(LeaseLost, "LEASE_LOST"):
        acknowledge_cancel(db, job_id, "w1", 1)


# ----------------------------------------------------------------- claiming and leases


def claim_as(db: SessionFactory, job_id: uuid.UUID, worker: int) -> bool:
    return claim_job(db, job_id, f"w{worker}", LEASE_S)


def test_claim_race_has_exactly_one_winner(db: SessionFactory, make_team: MakeTeam) -> None:
    team = make_team()
    for _ in range(5):
        job_id = new_job(db, team)
        claimed = race(8, partial(claim_as, db, job_id))
        assert claimed.count(True) == 1
        job = load_job(db, job_id)
        assert job.state == JobState.RUNNING and job.lease_owner == f"w{claimed.index(True)}"


def test_lease_renewal_and_progress(db: SessionFactory, make_team: MakeTeam) -> None:
    team = make_team()
    job_id = running_job(db, team)
    claimed = load_job(db, job_id)
    assert claimed.started_at is not None and claimed.lease_expires_at is not None
    assert renew_lease(db, job_id, "w1", 1, LEASE_S * 10) == LeaseStatus.HELD
    assert load_job(db, job_id).lease_expires_at > claimed.lease_expires_at  # type: ignore[operator]

    status = update_progress(
        db, job_id, "w1", 1, Phase.TRAINING, Progress(step=3, total=10, epoch=1, loss=0.5, eta_s=7)
    )
    assert status == LeaseStatus.HELD
    job = get_job(db, team.id, job_id)
    assert job.phase == "training"
    assert job.progress == {"step": 3, "total": 10, "epoch": 1, "loss": 0.5, "eta_s": 7}

    assert renew_lease(db, job_id, "intruder", 1, LEASE_S) == LeaseStatus.LOST
    assert update_progress(db, job_id, "w1", 2, Phase.EXPORTING, None) == LeaseStatus.LOST


def test_reaper_requeues_then_fails_with_worker_lost(db: SessionFactory, make_team: MakeTeam) -> None:
    team = make_team()
    job_id = running_job(db, team)
    assert update_progress(db, job_id, "w1", 1, Phase.TRAINING, Progress(step=1, total=2)) == LeaseStatus.HELD
    assert reap_expired_leases(db).requeued == []  # the lease is still valid

    later = utcnow() + timedelta(seconds=LEASE_S + 1)
    result = reap_expired_leases(db, later)
    assert result.requeued == [job_id] and result.failed == []
    job = get_job(db, team.id, job_id)
    assert (job.state, job.attempt, job.lease_owner, job.phase, job.progress) == (JobState.QUEUED, 2, None, None, None)

    # the lost worker comes back: every write of attempt 1 is fenced off
    assert renew_lease(db, job_id, "w1", 1, LEASE_S) == LeaseStatus.LOST
    with expect(LeaseLost, "LEASE_LOST", "job_id"):
        finish_job(db, job_id, "w1", 1, METRICS, [])
    # even when the same worker id claims the next attempt
    assert claim_job(db, job_id, "w1", LEASE_S)
    with expect(LeaseLost, "LEASE_LOST"):
        fail_job(db, job_id, "w1", 1, "X", "stale", user_error=False)
    assert renew_lease(db, job_id, "w1", 2, LEASE_S) == LeaseStatus.HELD

    later = utcnow() + timedelta(seconds=LEASE_S + 1)
    assert reap_expired_leases(db, later).requeued == [job_id]
    assert claim_job(db, job_id, "w2", LEASE_S)
    result = reap_expired_leases(db, utcnow() + timedelta(seconds=LEASE_S + 1))
    assert result.failed == [job_id] and result.requeued == []
    job = get_job(db, team.id, job_id)
    assert (job.state, job.attempt, job.failure_code, job.user_error) == (JobState.FAILED, 3, "WORKER_LOST", False)
    assert job.failure_message and job.finished_at is not None


def test_reaper_finishes_cancellation_of_a_lost_worker(db: SessionFactory, make_team: MakeTeam) -> None:
    team = make_team()
    job_id = running_job(db, team)
    request_cancel(db, team.id, job_id)
    result = reap_expired_leases(db, utcnow() + timedelta(seconds=LEASE_S + 1))
    assert result.cancelled == [job_id]
    assert get_job(db, team.id, job_id).state == JobState.CANCELLED


# ------------------------------------------------------------------------ finishing


def test_finish_job_records_metrics_and_artifacts(db: SessionFactory, make_team: MakeTeam) -> None:
    team = make_team()
    job_id = running_job(db, team)
    artifacts = [
        NewArtifact("model.int8.onnx", 1000, sha("onnx"), f"jobs/{job_id}/model.int8.onnx"),
        NewArtifact("report.json", 20, sha("report"), f"jobs/{job_id}/report.json"),
    ]
    finish_job(db, job_id, "w1", 1, METRICS, artifacts)

    job = get_job(db, team.id, job_id)
    assert job.state == JobState.SUCCEEDED and job.finished_at is not None and job.lease_expires_at is None
    assert job.metrics == METRICS.model_dump(mode="json")
    listed = list_artifacts(db, team.id, job_id)
    assert [(a.name, a.size, a.attempt) for a in listed] == [("model.int8.onnx", 1000, 1), ("report.json", 20, 1)]
    assert get_artifact(db, team.id, job_id, "report.json").sha256 == sha("report")
    with expect(NotFound, "NOT_FOUND", "name"):
        get_artifact(db, team.id, job_id, "missing.bin")
    with expect(LeaseLost, "LEASE_LOST"):  # finishing twice
        finish_job(db, job_id, "w1", 1, METRICS, [])
    with expect(WrongState, "WRONG_STATE"):
        request_cancel(db, team.id, job_id)


def test_finish_is_all_or_nothing(db: SessionFactory, make_team: MakeTeam) -> None:
    team = make_team()
    job_id = running_job(db, team)
    twins = [NewArtifact("a.bin", 1, sha("a"), "k/a"), NewArtifact("a.bin", 1, sha("a"), "k/a2")]
    with pytest.raises(IntegrityError):  # the duplicate name violates a unique constraint
        finish_job(db, job_id, "w1", 1, METRICS, twins)
    job = get_job(db, team.id, job_id)
    assert job.state == JobState.RUNNING and job.metrics is None
    assert list_artifacts(db, team.id, job_id) == []


def test_fail_job(db: SessionFactory, make_team: MakeTeam) -> None:
    team = make_team()
    job_id = running_job(db, team)
    fail_job(db, job_id, "w1", 1, "BAD_MODEL", "the model has no forward()", user_error=True)
    job = get_job(db, team.id, job_id)
    assert (job.state, job.failure_code, job.failure_message, job.user_error) == (
        JobState.FAILED,
        "BAD_MODEL",
        "the model has no forward()",
        True,
    )


def test_failed_job_keeps_its_log_and_a_stale_worker_records_none(db: SessionFactory, make_team: MakeTeam) -> None:
    team = make_team()
    job_id = running_job(db, team)
    log = NewArtifact("log.txt", 5, sha("log"), f"jobs/{job_id}/attempt-1/log.txt")
    with pytest.raises(LeaseLost):
        fail_job(db, job_id, "w2", 1, "BAD_DATA", "no", user_error=True, artifacts=[log])
    assert list_artifacts(db, team.id, job_id) == []
    fail_job(db, job_id, "w1", 1, "BAD_DATA", "x_train is empty", user_error=True, artifacts=[log])
    [row] = list_artifacts(db, team.id, job_id)
    assert (row.name, row.attempt, row.storage_key) == ("log.txt", 1, log.storage_key)
    assert get_job(db, team.id, job_id).state == JobState.FAILED


# --------------------------------------------------------------------------- idempotency


def test_idempotency_key(db: SessionFactory, make_team: MakeTeam) -> None:
    team, other = make_team(), make_team()
    fingerprint = request_fingerprint({"model": sha("model"), "spec": {"epochs": 1}})
    assert fingerprint == request_fingerprint({"spec": {"epochs": 1}, "model": sha("model")})

    first, created = find_or_create_job(db, team.id, "key-1", fingerprint, inputs(), max_attempts=3)
    again, created_again = find_or_create_job(db, team.id, "key-1", fingerprint, inputs(), max_attempts=3)
    assert created and not created_again and again.id == first.id
    assert len(list_jobs(db, team.id).jobs) == 1

    with expect(IdempotencyMismatch, "IDEMPOTENCY_MISMATCH", "Idempotency-Key"):
        find_or_create_job(db, team.id, "key-1", sha("other request"), inputs(), max_attempts=3)

    theirs, created_theirs = find_or_create_job(db, other.id, "key-1", fingerprint, inputs(), max_attempts=3)
    assert created_theirs and theirs.id != first.id

    with expect(InvalidArgument, "INVALID_ARGUMENT", "Idempotency-Key"):
        find_or_create_job(db, team.id, "has space", fingerprint, inputs(), max_attempts=3)


def test_concurrent_retries_with_one_key_make_one_job(db: SessionFactory, make_team: MakeTeam) -> None:
    team = make_team()
    results = race(6, lambda _: find_or_create_job(db, team.id, "retry", sha("request"), inputs(), max_attempts=3))
    assert len({job.id for job, _ in results}) == 1
    assert [created for _, created in results].count(True) == 1
