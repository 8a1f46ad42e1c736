"""A worker's ceilings for jobs: memory (OUT_OF_MEMORY) and CPU time (TIMEOUT); the worker lives on."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.pool import Pool, finished, running, submit
from workers.sandbox import ChildLimits

# enough for the worker, far too little for a pipeline that imports torch and trains
CEILING_MIB = 200
# past importing torch, loading and calibrating (about 5 CPU-seconds here), into training
CPU_SECONDS = 10
# trains far longer than CPU_SECONDS allows
LONG_SPEC = {"epochs": 200, "batch_size": 8}


@pytest.fixture(scope="module")
def small_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    pool = Pool(tmp_path_factory.mktemp("limits"), QAT_CHILD_MEMORY_BYTES=f"{CEILING_MIB}MiB")
    with running(pool) as started:
        yield started


def test_job_over_the_memory_ceiling_fails_with_out_of_memory(digits: tuple[Path, Path], small_worker: Pool) -> None:
    job = small_worker.wait_for_job(submit(small_worker, digits, {"epochs": 1}), finished, timeout_s=60)
    assert job["state"] == "FAILED"
    # the failure itself in the message: one run of make test (of many) saw INTERNAL here
    assert job["failure"]["code"] == "OUT_OF_MEMORY" and job["failure"]["user_error"] is True, job["failure"]
    assert f"{CEILING_MIB} MiB" in job["failure"]["message"]
    names = [a["name"] for a in small_worker.get(f"/v1/jobs/{job['id']}/artifacts").json()["artifacts"]]
    assert names == ["log.txt"]


def test_an_interpreter_error_counts_as_out_of_memory_only_under_a_memory_ceiling() -> None:
    """What the memory test above sees in about one run in four, when an import hits the ceiling."""
    code = (
        "import resource; from workers.pipeline import classify; "
        "error = SystemError('error return without exception set'); print(classify(error).code); "
        "resource.setrlimit(resource.RLIMIT_DATA, (64 << 30, resource.getrlimit(resource.RLIMIT_DATA)[1])); "
        "print(classify(error).code)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert run.stdout.split() == ["INTERNAL", "OUT_OF_MEMORY"], run.stderr


def test_job_over_the_cpu_time_limit_fails_with_timeout(digits: tuple[Path, Path], tmp_path: Path) -> None:
    """No ``max_runtime_s``: only the kernel's RLIMIT_CPU stops the training child."""
    with running(Pool(tmp_path, QAT_CHILD_CPU_SECONDS=str(CPU_SECONDS))) as pool:
        job_id = submit(pool, digits, LONG_SPEC)
        training = pool.wait_for_job(job_id, lambda job: job["phase"] == "training" or finished(job))
        assert training["state"] == "RUNNING", training["failure"]
        job = pool.wait_for_job(job_id, finished, timeout_s=120)
        assert job["state"] == "FAILED"
        assert job["failure"]["code"] == "TIMEOUT" and job["failure"]["user_error"] is True
        message = job["failure"]["message"]
        assert f"CPU-time limit of {CPU_SECONDS} CPU-seconds" in message and "QAT_CHILD_CPU_SECONDS" in message
        names = [a["name"] for a in pool.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"]]
        assert names == ["log.txt"]


def test_cpu_limit_follows_max_runtime_and_never_exceeds_the_workers() -> None:
    cpus = os.cpu_count() or 1
    assert ChildLimits().for_job(None) == ChildLimits()
    assert ChildLimits(memory_bytes=1).for_job(10) == ChildLimits(memory_bytes=1, cpu_seconds=10 * cpus)
    assert ChildLimits(cpu_seconds=5).for_job(10) == ChildLimits(cpu_seconds=5)
    assert ChildLimits(cpu_seconds=10**6).for_job(10).cpu_seconds == 10 * cpus


def test_a_refused_mapping_is_out_of_memory_and_other_os_errors_are_ours() -> None:
    """What the memory test above saw in one run: an OSError of ENOMEM (a library or a mapping
    refused under the ceiling), which is the job's size, while a full disk is not."""
    from workers.pipeline import classify

    assert classify(OSError(errno.ENOMEM, "Cannot allocate memory")).code == "OUT_OF_MEMORY"
    assert classify(OSError("libgomp.so.1: cannot allocate memory in static TLS block")).code == "OUT_OF_MEMORY"
    assert classify(OSError(errno.ENOSPC, "No space left on device")).code == "INTERNAL"
