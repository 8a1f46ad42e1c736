"""Retention: ``collect_garbage`` / ``qat admin gc`` remove expired and orphaned files, never live ones.

Run on both databases and both stores (a local folder and S3 on moto). The store's
objects cannot be back-dated on S3, so the collector is given a clock 30 days ahead:
everything stored by the test is then 30 days old, and a job counts as recent by a
``finished_at`` moved forward with it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from service.artifacts import ArtifactStore
from service.datasets import register_dataset
from service.db import Job, SessionFactory, Team, reading, utcnow, writing
from service.jobs import (
    JobInputs,
    NewArtifact,
    claim_job,
    create_job,
    finish_job,
    get_job,
    list_artifacts,
    reap_expired_leases,
)
from service.ops.retention import collect_garbage, parse_duration
from service.teams import authenticate, create_team
from support.metrics import METRICS

AHEAD = timedelta(days=30)
KEEP = timedelta(days=7)


class Jobs:
    """Makes jobs in the real job store whose files really are in the artifact store."""

    def __init__(self, db: SessionFactory, artifacts: ArtifactStore, team: Team) -> None:
        self.db, self.store, self.team = db, artifacts, team

    def put(self, key: str, payload: bytes = b"bytes") -> NewArtifact:
        size, sha256 = self.store.put_stream(key, io.BytesIO(payload))
        return NewArtifact(key.rsplit("/", 1)[1], size, sha256, key)

    def queued(self) -> uuid.UUID:
        job_id = uuid.uuid4()
        model = self.put(f"jobs/{job_id}/inputs/model.pt2")
        data = self.put(f"jobs/{job_id}/inputs/data.npz")
        inputs = JobInputs(model.storage_key, model.sha256, {}, data.storage_key, data.sha256, job_id=job_id)
        return create_job(self.db, self.team.id, inputs, max_attempts=3).id

    def running(self, worker: str = "w1") -> uuid.UUID:
        job_id = self.queued()
        assert claim_job(self.db, job_id, worker, 60)
        return job_id

    def succeeded(self, *, lost_attempt: bool = False) -> uuid.UUID:
        """A succeeded job; with ``lost_attempt`` its first attempt was reaped after uploading a file."""
        job_id = self.running()
        attempt = 1
        if lost_attempt:
            self.put(f"jobs/{job_id}/attempt-1/model_int8.onnx")
            assert reap_expired_leases(self.db, utcnow() + timedelta(minutes=5)).requeued == [job_id]
            assert claim_job(self.db, job_id, "w2", 60)
            attempt = 2
        files = [self.put(f"jobs/{job_id}/attempt-{attempt}/{name}") for name in ("model_int8.onnx", "log.txt")]
        finish_job(self.db, job_id, "w2" if lost_attempt else "w1", attempt, METRICS, files)
        return job_id

    def finished_recently(self, job_id: uuid.UUID) -> None:
        """Move the job's end into the retention period of a clock ``AHEAD``."""
        with writing(self.db) as session:
            session.execute(
                update(Job).where(Job.id == job_id).values(finished_at=utcnow() + AHEAD - timedelta(days=1))
            )

    def keys(self, job_id: uuid.UUID) -> list[str]:
        return list(self.store.list(f"jobs/{job_id}/"))


@pytest.fixture
def jobs(db: SessionFactory, artifact_store: ArtifactStore) -> Jobs:
    team = authenticate(db, create_team(db, f"team-{uuid.uuid4().hex[:8]}").token)
    assert team is not None
    return Jobs(db, artifact_store, team)


def test_gc_removes_expired_and_orphaned_files_and_keeps_live_ones(jobs: Jobs) -> None:
    expired = jobs.succeeded()
    recent = jobs.succeeded(lost_attempt=True)
    jobs.finished_recently(recent)
    running = jobs.running()
    half_uploaded = jobs.put(f"jobs/{running}/attempt-1/model_int8.onnx").storage_key
    queued = jobs.queued()
    orphan_upload = jobs.put(f"jobs/{uuid.uuid4()}/inputs/model.pt2").storage_key
    dataset = jobs.put(f"datasets/{jobs.team.id}/{uuid.uuid4()}.npz", b"data")
    register_dataset(jobs.db, jobs.team.id, dataset.sha256, dataset.size, dataset.storage_key)
    orphan_dataset = jobs.put(f"datasets/{jobs.team.id}/{uuid.uuid4()}.npz").storage_key
    live = {job_id: jobs.keys(job_id) for job_id in (running, queued)}
    recent_published = [a.storage_key for a in list_artifacts(jobs.db, jobs.team.id, recent)]

    dry = collect_garbage(jobs.db, jobs.store, KEEP, now=utcnow() + AHEAD, dry_run=True)
    report = collect_garbage(jobs.db, jobs.store, KEEP, now=utcnow() + AHEAD)

    assert dry.to_dict() == report.to_dict()
    assert report.expired_jobs == [expired] and len(report.expired_keys) == 4  # 2 inputs + 2 results
    assert sorted(report.orphan_keys) == sorted(
        [orphan_upload, orphan_dataset, f"jobs/{recent}/attempt-1/model_int8.onnx"]
    )
    assert jobs.keys(expired) == []
    assert list_artifacts(jobs.db, jobs.team.id, expired) == []
    assert get_job(jobs.db, jobs.team.id, expired).state == "SUCCEEDED", "the job row stays as history"
    assert jobs.keys(recent) == sorted(
        [*recent_published, *(f"jobs/{recent}/inputs/{n}" for n in ("data.npz", "model.pt2"))]
    )
    assert {job_id: jobs.keys(job_id) for job_id in live} == live and half_uploaded in live[running]
    assert list(jobs.store.list("datasets/")) == [dataset.storage_key]
    # a second pass finds nothing more
    again = collect_garbage(jobs.db, jobs.store, KEEP, now=utcnow() + AHEAD)
    assert again.expired_keys == again.orphan_keys == []


def test_gc_keeps_everything_younger_than_the_period(jobs: Jobs) -> None:
    """Without the clock ahead, every object and job here is minutes old: nothing goes."""
    jobs.succeeded()
    jobs.put(f"jobs/{uuid.uuid4()}/inputs/model.pt2")  # an upload whose row may be about to be written
    before = list(jobs.store.list(""))
    report = collect_garbage(jobs.db, jobs.store, KEEP)
    assert report.expired_keys == report.orphan_keys == [] and list(jobs.store.list("")) == before


@pytest.mark.parametrize("text", ["30d", "12h", " 90m", "3600s", "2w"])
def test_durations(text: str) -> None:
    assert parse_duration(text).total_seconds() in (30 * 86400, 12 * 3600, 90 * 60, 3600, 14 * 86400)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("artifact_store", ["local"], indirect=True)
def test_qat_admin_gc(jobs: Jobs) -> None:
    """The command as an operator runs it, on the same database and artifact folder."""
    expired, queued = jobs.succeeded(), jobs.queued()
    env = {
        **os.environ,
        "QAT_DATABASE_URL": str(jobs.db.kw["bind"].url),
        "QAT_ARTIFACTS": str(jobs.store.root),  # type: ignore[attr-defined]
    }
    qat = [str(Path(sys.executable).parent / "qat"), "admin", "gc"]
    bad = subprocess.run([*qat, "--older-than", "a week"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--older-than" in bad.stderr and "30d" in bad.stderr
    run = subprocess.run([*qat, "--older-than", "0s", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["expired_jobs"] == [str(expired)]
    assert jobs.keys(expired) == [] and len(jobs.keys(queued)) == 2
    with reading(jobs.db) as session:
        assert session.get(Job, queued) is not None
