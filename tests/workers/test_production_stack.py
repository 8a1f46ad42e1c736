"""The production stack end to end: PostgreSQL job store, Redis broker, S3-compatible artifact store."""

from __future__ import annotations

import hashlib
from pathlib import Path

from support.pool import Pool, finished, running, submit


def test_digits_job_on_postgresql_redis_and_s3(
    digits: tuple[Path, Path], tmp_path: Path, production_settings: dict[str, str]
) -> None:
    with running(Pool(tmp_path, **production_settings)) as pool:
        job_id = submit(pool, digits, {"epochs": 1})
        job = pool.wait_for_job(job_id, finished)
        assert job["state"] == "SUCCEEDED", job["failure"]
        listed = {a["name"]: a for a in pool.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"]}
        onnx = pool.get(f"/v1/jobs/{job_id}/artifacts/model_int8.onnx")
        assert onnx.status_code == 200
        assert hashlib.sha256(onnx.content).hexdigest() == listed["model_int8.onnx"]["sha256"]
    assert not (tmp_path / "artifacts").exists(), "artifacts went to S3, not the local default"
