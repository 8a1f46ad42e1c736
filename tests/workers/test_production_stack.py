"""The production stack end to end: PostgreSQL job store, Redis broker, S3-compatible artifact store.

The job's dataset is sent the way a large one is: straight to S3 in parts through presigned
URLs (``qat upload-dataset --in-parts``); the API never carries its bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import requests

from support.pool import Pool, finished, running


def test_digits_job_on_postgresql_redis_and_s3_with_a_dataset_sent_in_parts(
    digits: tuple[Path, Path], tmp_path: Path, production_settings: dict[str, str]
) -> None:
    model, data = digits
    with running(Pool(tmp_path, **production_settings)) as pool:
        token = str(pool.session.headers["Authorization"]).removeprefix("Bearer ")
        upload = pool.qat("upload-dataset", str(data), "--in-parts", "--json", "--url", pool.url, "--token", token)
        dataset = json.loads(upload)
        assert dataset["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
        job_id = _submit(pool, model, dataset["id"])
        job = pool.wait_for_job(job_id, finished)
        assert job["state"] == "SUCCEEDED", job["failure"]
        listed = {a["name"]: a for a in pool.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"]}
        onnx = pool.get(f"/v1/jobs/{job_id}/artifacts/model_int8.onnx")
        assert onnx.status_code == 200
        assert hashlib.sha256(onnx.content).hexdigest() == listed["model_int8.onnx"]["sha256"]

        # a declared sha256 the bytes do not have: the API cannot see it, the worker fails the job as the
        # user's BAD_DATA before any training
        body = data.read_bytes()
        started = pool.post("/v1/datasets/uploads", json={"size": len(body), "sha256": "0" * 64})
        assert started.status_code == 201, started.text
        lying = started.json()
        put = requests.put(lying["parts"][0]["url"], data=body, timeout=30)
        completion = {"upload_token": lying["upload_token"], "parts": [{"part_number": 1, "etag": put.headers["ETag"]}]}
        completed = pool.post(f"/v1/datasets/uploads/{lying['id']}/complete", json=completion)
        assert completed.status_code == 201, completed.text
        failed = pool.wait_for_job(_submit(pool, model, completed.json()["id"]), finished)
        failure = failed["failure"]
        assert failed["state"] == "FAILED" and failure["code"] == "BAD_DATA" and failure["user_error"], failure
        assert "sha256 declared" in failure["message"], failure
    assert not (tmp_path / "artifacts").exists(), "artifacts went to S3, not the local default"


def _submit(pool: Pool, model: Path, dataset_id: str) -> str:
    form = {"spec": '{"epochs": 1}', "dataset_id": dataset_id}
    created = pool.post("/v1/jobs", data=form, files={"model": ("model.pt2", model.read_bytes())})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])
