"""Redis (the broker) killed and restarted empty while one job runs and another waits: no job is lost.

The broker carries only job ids; the job table is the queue. The running job needs no
broker to finish; the waiting one is admitted from the table once Redis is back, and
each job runs exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from support.fault_servers import RedisServer, wait_until
from support.pool import Pool, finished, job_processes, running


def test_jobs_survive_a_redis_restart_and_queued_ones_are_readmitted(
    own_redis: RedisServer, new_pg_database: Callable[[], str], small_job: tuple[Path, Path], tmp_path: Path
) -> None:
    settings = {"QAT_BROKER_URL": own_redis.url, "QAT_DATABASE_URL": new_pg_database()}
    with running(Pool(tmp_path, **settings)) as pool:
        model, data = small_job
        files = {"model": ("model.pt2", model.read_bytes()), "data": ("data.npz", data.read_bytes())}
        ids = []
        for _ in range(2):
            created = pool.post("/v1/jobs", files=files, data={"spec": json.dumps({"epochs": 0})})
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        first, second = ids
        worker = pool.processes["worker-0"][0].pid
        wait_until(lambda: bool(job_processes(worker)), "the first job's pipeline process", timeout_s=120)
        assert [pool.get(f"/v1/jobs/{i}").json()["state"] for i in ids] == ["RUNNING", "QUEUED"]

        own_redis.kill()
        job = pool.wait_for_job(first, finished, timeout_s=240)
        assert job["state"] == "SUCCEEDED", job["failure"]
        waiting = pool.get(f"/v1/jobs/{second}").json()
        assert waiting["state"] == "QUEUED", "with the broker down, nothing can be admitted"
        wait_until(lambda: "dispatcher tick failed" in pool.log("dispatcher"), "the dispatcher noticing the outage")

        own_redis.start()  # empty: --save '' and no AOF, as a crashed broker without persistence
        job = pool.wait_for_job(second, finished, timeout_s=240)
        assert job["state"] == "SUCCEEDED", job["failure"]
        for job_id in ids:
            done = pool.get(f"/v1/jobs/{job_id}").json()
            assert done["attempt"] == 1, "each job ran once"
            names = {a["name"] for a in pool.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"]}
            assert "model_int8.onnx" in names
        assert len(pool.get("/v1/jobs").json()["jobs"]) == 2
