"""Untrusted models through the real pool: the sandbox and the worker's limits stop them.

tests/workers/test_pool.py has jobs that train too long (``TIMEOUT``);
tests/workers/test_limits.py a ceiling too small for torch itself. Here the model is the
attacker: archives that smuggle pickles and file reads (:mod:`hostile_pt2`) through a
real job on PostgreSQL, Redis and S3, a model that allocates without bound, and one that
never returns, whose child is read from ``/proc`` while it runs to prove it holds no
credentials.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from support.hostile_pt2 import WithConstant, hostile, variants
from support.pool import Pool, finished, job_processes, running
from support.untrusted_models import CANARY, CEILING, Forever, Hog, dataset, export, submit

SECRET_NAMES = ("QAT_", "AWS_", "PGPASSWORD")


def test_hostile_archives_run_nothing_through_a_real_job(tmp_path: Path, production_settings: dict[str, str]) -> None:
    """On PostgreSQL, Redis and S3: each hostile variant is refused at submission or fails BAD_MODEL in
    the worker, and no payload ever runs (hostile sample inputs are dropped: test_pt2_loader.py)."""
    marker = tmp_path / "pwned"
    pt2 = export(WithConstant())
    with running(Pool(tmp_path, **production_settings)) as pool:
        for variant, (_, needle) in variants(marker).items():
            files = {"model": ("model.pt2", hostile(pt2, variant, marker)), "data": ("data.npz", dataset())}
            created = pool.post("/v1/jobs", files=files, data={"spec": json.dumps({"epochs": 1, "batch_size": 8})})
            if created.status_code == 201:
                failure = pool.wait_for_job(created.json()["id"], finished, timeout_s=120)["failure"]
                assert failure["code"] == "BAD_MODEL" and failure["user_error"] is True, (variant, failure)
                assert needle in failure["message"], (variant, failure)
            else:
                assert created.status_code == 422, (variant, created.text)
                assert created.json()["error"]["code"] == "BAD_MODEL" and needle in created.json()["error"]["message"]
    assert not marker.exists(), "a payload ran"


def test_model_allocating_without_bound_fails_out_of_memory(sandboxed_pool: Pool) -> None:
    job = sandboxed_pool.wait_for_job(submit(sandboxed_pool, export(Hog()))["id"], finished, timeout_s=120)
    assert job["state"] == "FAILED", job
    assert job["failure"]["code"] == "OUT_OF_MEMORY" and job["failure"]["user_error"] is True, job["failure"]
    assert f"{CEILING >> 20} MiB" in job["failure"]["message"]
    assert sandboxed_pool.get(f"/v1/jobs/{job['id']}").status_code == 200, "the API and worker live on"


def test_model_looping_forever_times_out_and_its_process_holds_no_secrets(sandboxed_pool: Pool) -> None:
    worker = sandboxed_pool.processes["worker-0"][0]
    job_id = submit(sandboxed_pool, export(Forever()), max_runtime_s=8)["id"]
    sandboxed_pool.wait_for_job(job_id, lambda job: job["state"] == "RUNNING" or finished(job), timeout_s=60)
    children = _wait_for_children(worker.pid)
    environ = Path(f"/proc/{children[0]}/environ").read_bytes().decode(errors="replace").split("\0")
    names = [entry.split("=", 1)[0] for entry in environ if entry]
    assert names and not [n for n in names if n.startswith(SECRET_NAMES)], names
    assert not [entry for entry in environ if CANARY in entry]
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD=1" in environ

    job = sandboxed_pool.wait_for_job(job_id, finished, timeout_s=60)
    assert job["state"] == "FAILED"
    assert job["failure"]["code"] == "TIMEOUT" and "max_runtime_s" in job["failure"]["message"]
    assert job_processes(worker.pid) == [], "the looping process was killed"


def _wait_for_children(pid: int, timeout_s: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = job_processes(pid)
        if children:
            return children
        time.sleep(0.05)
    raise AssertionError(f"worker {pid} started no pipeline process within {timeout_s} s")


def test_qat_quantize_reports_the_memory_hog_as_out_of_memory(tmp_path: Path) -> None:
    """The same model through the local command under the same ceiling: one error line, exit 2."""
    (tmp_path / "model.pt2").write_bytes(export(Hog()))
    (tmp_path / "data.npz").write_bytes(dataset())
    qat = Path(sys.executable).parent / "qat"
    run = subprocess.run(
        [str(qat), "quantize", "model.pt2", "--data", "data.npz", "--out", "out", "--epochs", "1", "--batch-size", "8"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_DATA, (CEILING, CEILING)),
        check=False,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.startswith("error [OUT_OF_MEMORY] model:") and "Traceback" not in run.stderr
