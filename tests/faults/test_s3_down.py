"""The S3-compatible server down: uploads are retried with backoff, then the job fails STORAGE_UNAVAILABLE.

boto3 retries each request for about 1.5 s; the worker retries each result file for
15 s more (``service.artifacts.retry``), heartbeating meanwhile. Nothing of a failed
attempt is published: no artifact row, so no file a user could download.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from service.artifacts import S3Store
from service.db import Artifact, reading
from service.errors import StorageUnavailable
from support.fault_servers import MotoServer, tiny_inputs, wait_until
from support.pool import Pool, finished, job_processes, running

BUCKET = "qat-faults"


def test_s3_store_retries_a_dead_server_then_reports_it_unavailable(own_s3: MotoServer) -> None:
    store = S3Store("qat-retries", endpoint_url=own_s3.endpoint)
    store.client.create_bucket(Bucket="qat-retries")
    own_s3.kill()
    attempts: list[float] = []
    store.client.meta.events.register("before-send.s3.PutObject", lambda **_: attempts.append(time.monotonic()))
    with pytest.raises(StorageUnavailable) as raised:
        store.put_stream("jobs/x/attempt-1/model_int8.onnx", io.BytesIO(b"onnx"))
    print(f"\n{len(attempts)} attempts over {attempts[-1] - attempts[0]:.1f} s")
    assert len(attempts) == 6, "boto3: the first try and five retries"
    assert raised.value.code == "STORAGE_UNAVAILABLE" and "could not be reached" in raised.value.message


def _submit(pool: Pool, small_job: tuple[Path, Path]) -> str:
    model, data = small_job
    files = {"model": ("model.pt2", model.read_bytes()), "data": ("data.npz", data.read_bytes())}
    created = pool.post("/v1/jobs", files=files, data={"spec": json.dumps({"epochs": 0})})
    assert created.status_code == 201, created.text
    job_id: str = created.json()["id"]
    # the pipeline child starts once the inputs are downloaded: from then on S3 is needed only for results
    worker = pool.processes["worker-0"][0].pid
    wait_until(lambda: bool(job_processes(worker)), "the job's pipeline process", timeout_s=120, every_s=0.05)
    assert pool.get(f"/v1/jobs/{job_id}").json()["state"] == "RUNNING"
    return job_id


def _artifact_rows(pool: Pool, job_id: str) -> list[Artifact]:
    with reading(pool.db()) as session:
        return list(session.scalars(select(Artifact).where(Artifact.job_id == uuid.UUID(job_id))))


def test_worker_rides_out_a_short_s3_outage_and_fails_the_job_on_a_long_one(
    own_s3: MotoServer, small_job: tuple[Path, Path], tmp_path: Path
) -> None:
    S3Store(BUCKET, endpoint_url=own_s3.endpoint).client.create_bucket(Bucket=BUCKET)
    settings = {"QAT_ARTIFACTS": f"s3://{BUCKET}/qat", "QAT_S3_ENDPOINT_URL": own_s3.endpoint}
    with running(Pool(tmp_path, **settings)) as pool:
        # short: S3 dies while the job runs and comes back (empty, as moto does) while the worker retries
        job_id = _submit(pool, small_job)
        own_s3.kill()
        pool.wait_for_job(job_id, lambda job: job["phase"] == "uploading" or finished(job))
        time.sleep(1.5)  # at least one whole upload has failed by now
        own_s3.start()
        S3Store(BUCKET, endpoint_url=own_s3.endpoint).client.create_bucket(Bucket=BUCKET)
        job = pool.wait_for_job(job_id, finished, timeout_s=240)
        assert job["state"] == "SUCCEEDED", job
        assert "retrying in" in pool.log("worker-0"), "the worker retried the upload"
        listed = {a["name"]: a for a in pool.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"]}
        onnx = pool.get(f"/v1/jobs/{job_id}/artifacts/model_int8.onnx")
        assert hashlib.sha256(onnx.content).hexdigest() == listed["model_int8.onnx"]["sha256"]

        # long: S3 stays down; the API refuses new uploads with 503, the worker gives up on its job
        job_id = _submit(pool, small_job)
        own_s3.kill()
        refused = pool.post("/v1/jobs", files=tiny_inputs())
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "STORAGE_UNAVAILABLE", refused.text
        assert refused.headers["Retry-After"]
        ready = pool.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["storage"] == "unavailable"
        for answer in (refused.text, ready.text):  # nothing of the infrastructure in what callers see
            assert own_s3.endpoint.split("//")[1] not in answer and BUCKET not in answer and "qat/" not in answer
        job = pool.wait_for_job(job_id, finished, timeout_s=240)
        assert job["state"] == "FAILED", job
        failure = job["failure"]
        assert failure["code"] == "STORAGE_UNAVAILABLE" and failure["user_error"] is False, failure
        assert "no results were published" in failure["message"]
        assert own_s3.endpoint.split("//")[1] not in failure["message"] and BUCKET not in failure["message"]
        assert pool.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"] == []
        assert _artifact_rows(pool, job_id) == []
        assert len(pool.get("/v1/jobs").json()["jobs"]) == 2, "the refused submission made no job"
