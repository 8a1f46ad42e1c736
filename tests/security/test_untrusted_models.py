"""Untrusted models through the real pool: the sandbox and the worker's limits stop them.

tests/workers/test_pool.py has a payload that creates a file, and jobs that train too
long (``TIMEOUT``); tests/workers/test_limits.py a ceiling too small for torch itself.
Here the model is the attacker: a payload that also phones home, a model that
allocates without bound, and one that never returns, whose child is read from
``/proc`` while it runs to prove it holds no credentials.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from untrusted_models import CANARY, CEILING, Forever, Hog, Plain, dataset, export, submit, touch_and_connect, with_payload
from worker_fixtures import Pool, child_pids, finished

SECRET_NAMES = ("QAT_", "AWS_", "PGPASSWORD")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server


def connected(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
    except BlockingIOError:
        return False
    return True


def test_the_payload_is_live_when_loaded_without_the_sandbox(tmp_path: Path, listener: socket.socket) -> None:
    """The control: plain ``torch.export.load`` runs this file's payload, so the next test means something."""
    marker = tmp_path / "pwned"
    model = tmp_path / "model.pt2"
    model.write_bytes(with_payload(export(Plain()), touch_and_connect(marker, listener.getsockname()[1])))
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_WEIGHTS_ONLY_LOAD"}
    code = f"import torch\ntry:\n    torch.export.load({str(model)!r})\nexcept Exception:\n    pass"
    subprocess.run([sys.executable, "-c", code], env=env, timeout=120, check=True)
    assert marker.exists() and connected(listener)


def test_pickle_payload_neither_writes_nor_connects(sandboxed_pool: Pool, tmp_path: Path, listener: socket.socket) -> None:
    marker = tmp_path / "pwned"
    model = with_payload(export(Plain()), touch_and_connect(marker, listener.getsockname()[1]))
    job = sandboxed_pool.wait_for_job(submit(sandboxed_pool, model)["id"], finished, timeout_s=120)
    assert job["state"] == "FAILED"
    assert job["failure"]["code"] == "BAD_MODEL" and job["failure"]["user_error"] is True
    assert not marker.exists(), "the model's payload wrote a file"
    assert not connected(listener), "the model's payload opened a connection"


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
    assert child_pids(worker.pid) == [], "the looping process was killed"


def _wait_for_children(pid: int, timeout_s: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = child_pids(pid)
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
