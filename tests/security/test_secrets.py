"""Secrets stay secret, and results arrive intact, on the production stack.

A real pool (API, dispatcher, worker processes) runs on PostgreSQL with a password in
its URL and on S3 (moto) with a recognisable secret key, answering downloads with
presigned URLs. After a job has run end to end, and a few requests have failed, no
process log and no job log may contain the team's token, the database password, the
S3 secret key or any presigned URL's signature; and every artifact fetched again
through its presigned URL must hash to the sha256 the job recorded.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from service.artifacts import S3Store
from support.pool import Pool, finished, running
from support.untrusted_models import Plain, dataset, export

PG_PASSWORD = "pg-canary-pass-91c2"
S3_SECRET = "s3-canary-secret-5b7e"


def test_no_secret_in_any_log_and_artifacts_match_their_sha256(
    new_pg_database: Callable[[], str], s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    bucket = f"qat-{uuid.uuid4().hex[:12]}"
    S3Store(bucket, endpoint_url=s3_endpoint).client.create_bucket(Bucket=bucket)
    # trust authentication ignores the password, so it can be a canary
    database = new_pg_database().replace("postgres@", f"postgres:{PG_PASSWORD}@", 1)
    pool = Pool(
        tmp_path,
        QAT_DATABASE_URL=database,
        QAT_ARTIFACTS=f"s3://{bucket}/qat",
        QAT_S3_ENDPOINT_URL=s3_endpoint,
        QAT_DOWNLOAD_REDIRECT="true",
    )
    with running(pool):
        token = pool.session.headers["Authorization"].removeprefix("Bearer ")
        files = {"model": ("model.pt2", export(Plain())), "data": ("data.npz", dataset())}
        created = pool.post("/v1/jobs", files=files, data={"spec": '{"epochs": 1, "batch_size": 8}'})
        assert created.status_code == 201, created.text
        job = pool.wait_for_job(created.json()["id"], finished, timeout_s=180)
        assert job["state"] == "SUCCEEDED", job["failure"]

        signatures = []
        artifacts = pool.get(f"/v1/jobs/{job['id']}/artifacts").json()["artifacts"]
        assert {"model_int8.onnx", "record.json", "report.json", "log.txt"} <= {a["name"] for a in artifacts}
        for artifact in artifacts:
            redirect = pool.get(f"/v1/jobs/{job['id']}/artifacts/{artifact['name']}", allow_redirects=False)
            assert redirect.status_code == 302
            location = redirect.headers["Location"]
            signatures += parse_qs(urlsplit(location).query)["X-Amz-Signature"]
            body = requests.get(location, timeout=30).content  # the presigned URL needs no token
            assert len(body) == artifact["size"]
            assert hashlib.sha256(body).hexdigest() == artifact["sha256"], artifact["name"]
            if artifact["name"] == "log.txt":
                job_log = body.decode(errors="replace")
        # failures get logged too: a wrong token, an unknown job
        assert pool.session.get(pool.url + "/v1/jobs", headers={"Authorization": f"Bearer {token}x"}).status_code == 401
        assert pool.get(f"/v1/jobs/{uuid.uuid4()}").status_code == 404

    seen = job_log.split("environment variables:", 1)[1].splitlines()[0].split()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" in seen
    assert not [name for name in seen if name.startswith(("QAT_", "AWS_"))], seen
    logs = {name: pool.log(name) for name in ("api", "dispatcher", "worker-0")} | {"job log.txt": job_log}
    assert all(logs.values()), "every process wrote a log"
    secrets = {"token": token, "database password": PG_PASSWORD, "S3 secret key": S3_SECRET}
    secrets |= {f"presigned signature {i}": signature for i, signature in enumerate(signatures)}
    leaks = [(what, where) for what, secret in secrets.items() for where, text in logs.items() if secret in text]
    assert leaks == []
