"""Children started ahead of their jobs: what such a child has seen, and the limits it sets itself."""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path

import pytest

from support.fault_servers import wait_until
from support.untrusted_models import Forever, dataset, export
from workers.children import JobChildren
from workers.protocol import RUNNING_NAME, WAITING_NAME, PipelineJob
from workers.sandbox import ChildLimits, killed_by


@pytest.fixture
def children(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JobChildren:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return JobChildren(ChildLimits(), jail=None)


def _name(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def test_a_child_started_ahead_takes_its_jobs_cpu_limit_from_job_json(children: JobChildren) -> None:
    """It waits with no CPU limit; with its job it sets the job's own (from spec.max_runtime_s) before loading
    the model, counted from the CPU time it has used: the time spent waiting is not the job's."""
    children.prepare_next()
    with children.take() as child:
        # it reads GO only once it has imported torch: seconds of CPU that must not count against the job
        wait_until(lambda: _name(child.process.pid) == WAITING_NAME, "the child names itself", timeout_s=60)
        # nothing of a job; its warm-up's export may leave caches in its home, this folder
        assert {path.name for path in child.folder.iterdir()} <= {".cache"}, "a child started ahead has seen no job"
        (child.folder / "model.pt2").write_bytes(export(Forever()))
        (child.folder / "data.npz").write_bytes(dataset())
        PipelineJob("model.pt2", "data.npz", None, {"epochs": 1, "batch_size": 8}, cpu_seconds=2).write(child.folder)
        went = time.monotonic()
        child.go()
        wait_until(lambda: _name(child.process.pid) == RUNNING_NAME, "the child runs its job", timeout_s=60)
        returncode = child.process.wait(timeout=120)
    assert killed_by(returncode, jailed=False) == signal.SIGXCPU
    # one thread looping: its 2 CPU-seconds take at least that long; counted from the start, it died at once
    assert time.monotonic() - went >= 1.5
    assert not child.workdir.exists(), "closing the child removes its folder"


def test_a_waiting_child_leaves_quietly_when_its_worker_stops(children: JobChildren) -> None:
    child = children.take()
    assert child.process.stdin is not None
    child.process.stdin.close()  # what a worker's exit does to the pipe
    assert child.process.wait(timeout=120) == 0
    child.log.finish()
    assert "Traceback" not in child.log.path.read_text()
    child.close()
    assert not child.workdir.exists()
