"""``qat demo`` on the production backends: PostgreSQL, Redis and an S3-compatible server.

The issue promises that with ``QAT_DATABASE_URL``, ``QAT_BROKER_URL`` and ``QAT_ARTIFACTS``
(and ``QAT_S3_ENDPOINT_URL`` for MinIO and the like) set, the same command uses them. Here
they point at a fresh PostgreSQL database, an empty Redis index and a moto S3 bucket; the
job must succeed there, its files must be in the bucket, and nothing may fall back to the
embedded SQLite database or local artifact folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from service.artifacts import S3Store
from service.db import make_engine
from workers.local_deployment import QAT


def test_demo_runs_on_postgresql_redis_and_s3(
    tmp_path: Path, new_pg_database: Callable[[], str], redis_url: str, s3_endpoint: str, s3_bucket: str
) -> None:
    database = new_pg_database()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAT_")} | {
        "QAT_DATABASE_URL": database,
        "QAT_BROKER_URL": redis_url,
        "QAT_ARTIFACTS": f"s3://{s3_bucket}/demo",
        "QAT_S3_ENDPOINT_URL": s3_endpoint,
    }
    run = subprocess.run(
        [QAT, "demo", "--root", tmp_path, "--example-epochs", "2", "--epochs", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    out = " ".join(run.stdout.split())  # rich wraps lines at the terminal's width
    assert "backends from the environment: QAT_DATABASE_URL, QAT_BROKER_URL, QAT_ARTIFACTS, QAT_S3_ENDPOINT_URL" in out
    assert s3_endpoint not in out and database not in out, "the demo echoes no setting values"
    job_id = re.search(r"job ([0-9a-f-]{36})", out)
    assert job_id, out

    with make_engine(database).connect() as conn:
        state = conn.execute(text("SELECT state FROM jobs WHERE id = :id"), {"id": job_id[1]}).scalar_one()
    assert state == "SUCCEEDED"

    bucket = S3Store(s3_bucket, "demo", endpoint_url=s3_endpoint)
    stored = set(bucket.list(f"jobs/{job_id[1]}/"))
    onnx_key = f"jobs/{job_id[1]}/attempt-1/model_int8.onnx"
    assert {onnx_key, f"jobs/{job_id[1]}/attempt-1/report.json"} <= stored, stored
    in_bucket = hashlib.sha256(b"".join(bucket.open_stream(onnx_key))).hexdigest()
    downloaded = hashlib.sha256((tmp_path / "results" / "model_int8.onnx").read_bytes()).hexdigest()
    assert in_bucket == downloaded

    assert not (tmp_path / "qat.db").exists() and not (tmp_path / "artifacts").exists()
    assert not (tmp_path / "broker").exists()
