"""A worker's memory ceiling for jobs: a job that needs more fails with OUT_OF_MEMORY, the worker lives on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Pool, finished, running, submit

# enough for the worker, far too little for a pipeline that imports torch and trains
CEILING_MIB = 200


@pytest.fixture(scope="module")
def small_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    pool = Pool(tmp_path_factory.mktemp("limits"), QAT_CHILD_MEMORY_BYTES=f"{CEILING_MIB}MiB")
    with running(pool) as started:
        yield started


def test_job_over_the_memory_ceiling_fails_with_out_of_memory(digits: tuple[Path, Path], small_worker: Pool) -> None:
    job = small_worker.wait_for_job(submit(small_worker, digits, {"epochs": 1}), finished, timeout_s=60)
    assert job["state"] == "FAILED"
    assert job["failure"]["code"] == "OUT_OF_MEMORY" and job["failure"]["user_error"] is True
    assert f"{CEILING_MIB} MiB" in job["failure"]["message"]
    names = [a["name"] for a in small_worker.get(f"/v1/jobs/{job['id']}/artifacts").json()["artifacts"]]
    assert names == ["log.txt"]
