"""A worker killed mid-training: the reaper re-queues its job and the other worker finishes it once,
going on from the last epoch the killed attempt finished (its checkpoint).

A job whose sandboxed process alone is killed from outside runs again at once (SANDBOX_KILLED).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from service.db import Artifact, reading
from service.jobs import load_job
from support.pool import Pool, descendants, finished, job_processes, running, submit

# Attempt 1 is killed as soon as it is seen training, attempt 2 trains all of it: long
# enough (a few seconds on an idle machine) that the training phase is seen at all.
SPEC = {"epochs": 30}


# three samples a batch: epochs of a few seconds, so the kill lands inside the third
RESUMABLE = {"epochs": 6, "batch_size": 3, "seed": 5}


def _epoch(job: dict) -> int | None:
    return (job["progress"] or {}).get("epoch") if job["phase"] == "training" else None


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """Two CPU workers and a 3 s lease, so a dead worker's job is re-queued within seconds."""
    settings = {"QAT_LEASE_SECONDS": "3", "QAT_CHECKPOINT_INTERVAL_S": "0", "QAT_CHILD_START_AHEAD": "true"}
    pool = Pool(tmp_path_factory.mktemp("recovery"), **settings)
    with running(pool, workers=2):
        yield pool


def test_job_of_a_worker_killed_in_epoch_3_succeeds_once_on_the_other_resuming_at_epoch_3(
    digits: tuple[Path, Path], two_workers: Pool
) -> None:
    """The reaper re-queues it and the other worker runs it once, going on from the checkpoint the
    killed attempt stored after epoch 2; it ends exactly as the same job run unbroken beside it."""
    pool = two_workers
    job_id = submit(pool, digits, RESUMABLE)
    unbroken_id = submit(pool, digits, RESUMABLE)  # on the other worker, never interrupted
    killed_in = pool.wait_for_job(job_id, lambda job: (_epoch(job) or 0) >= 3 or finished(job))
    assert _epoch(killed_in) == 3 and killed_in["attempt"] == 1, killed_in

    db = pool.db()
    owner = load_job(db, uuid.UUID(job_id)).lease_owner
    assert owner is not None
    worker_pid = int(owner.rsplit(":", 1)[1])  # worker ids are host:pid
    name = next(name for name, (process, _) in pool.processes.items() if process.pid == worker_pid)
    pipeline = descendants(worker_pid)
    assert job_processes(worker_pid), "the worker runs the job in a child process"
    workdirs = list((pool.root / "tmp").glob(f"qat-pid{worker_pid}-job-*"))
    assert workdirs, "the job's folder (and the next job's child's, started ahead)"
    pool.crash(name)
    # no one kills the child: it must die with its worker rather than train on, holding the GPU
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in pipeline) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pipeline:
        assert not Path(f"/proc/{pid}").exists(), f"pipeline child {pid} outlived its worker"
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, 9)

    resumed_epochs: list[int] = []

    def record(job: dict) -> bool:
        if job["attempt"] == 2 and (epoch := _epoch(job)) is not None:
            resumed_epochs.append(epoch)
        return finished(job)

    job = pool.wait_for_job(job_id, record, timeout_s=300)
    assert job["state"] == "SUCCEEDED", job["failure"]
    assert job["attempt"] == 2
    assert resumed_epochs and min(resumed_epochs) >= 3, resumed_epochs
    assert pool.get(f"/v1/jobs/{job_id}/artifacts/report.json").json()["resumed_at_epoch"] == 3
    assert not any(path.exists() for path in workdirs), "the next job on the host removed the killed worker's folders"

    with reading(db) as session:
        rows = list(session.scalars(select(Artifact).where(Artifact.job_id == uuid.UUID(job_id))))
    assert {row.attempt for row in rows} == {2}
    assert all(row.storage_key.startswith(f"jobs/{job_id}/attempt-2/") for row in rows)
    listed = pool.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"]
    assert sorted(a["name"] for a in listed) == sorted(row.name for row in rows)
    assert len(listed) == len({a["name"] for a in listed}), "every artifact is listed once"
    stored = [path for path in (pool.root / "artifacts" / "jobs" / job_id).rglob("*") if path.is_file()]
    left = [path for path in stored if "attempt-1" in path.parts or "checkpoints" in path.parts]
    assert left == [], "the killed attempt's only upload, its checkpoint, is removed when the job ends"

    unbroken = pool.wait_for_job(unbroken_id, finished, timeout_s=300)
    assert unbroken["state"] == "SUCCEEDED" and unbroken["attempt"] == 1
    ours, theirs = job["metrics"]["accuracy"]["int8_simulated"], unbroken["metrics"]["accuracy"]["int8_simulated"]
    assert abs(ours["top1"] - theirs["top1"]) <= 0.005 and abs(ours["sqnr_db"] - theirs["sqnr_db"]) < 0.5, (
        ours,
        theirs,
    )
    print("\nattempt 2 timings (s):", job["metrics"]["timings_s"])


def test_a_sandbox_killed_from_outside_is_retried_not_blamed_on_the_user(
    digits: tuple[Path, Path], two_workers: Pool
) -> None:
    """The OOM killer ends the job's sandboxed process: a system fault, so attempt 2 runs at once.

    (Which signals count as "from outside" is tested on their exit statuses in test_sandbox.py.)
    """
    pool = two_workers
    job_id = submit(pool, digits, SPEC)
    training = pool.wait_for_job(job_id, lambda job: job["phase"] == "training" or finished(job))
    assert training["state"] == "RUNNING" and training["attempt"] == 1
    owner = load_job(pool.db(), uuid.UUID(job_id)).lease_owner
    assert owner is not None
    sandboxed = job_processes(int(owner.rsplit(":", 1)[1]))
    assert len(sandboxed) == 1, "one pipeline process runs the job inside the sandbox"
    os.kill(sandboxed[0], signal.SIGKILL)

    job = pool.wait_for_job(job_id, finished, timeout_s=300)
    assert job["state"] == "SUCCEEDED" and job["attempt"] == 2, job
    assert job["failure"] is None
