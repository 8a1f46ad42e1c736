"""Children started ahead of their jobs: what such a child has seen, and the limits it sets itself."""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import pytest

from support.untrusted_models import Forever, dataset, export
from workers.children import JobChildren
from workers.protocol import PipelineJob
from workers.sandbox import ChildLimits, killed_by


@pytest.fixture
def children(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JobChildren:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return JobChildren(ChildLimits(), jail=None)


def test_a_child_started_ahead_takes_its_jobs_cpu_limit_from_job_json(children: JobChildren) -> None:
    """Started with the worker's limits only; the job's own (from spec.max_runtime_s) it sets before loading the model."""
    children.prepare_next()
    with children.take() as child:
        assert list(child.folder.iterdir()) == [], "a child started ahead has seen no job"
        (child.folder / "model.pt2").write_bytes(export(Forever()))
        (child.folder / "data.npz").write_bytes(dataset())
        PipelineJob("model.pt2", "data.npz", None, {"epochs": 1, "batch_size": 8}, cpu_seconds=2).write(child.folder)
        child.go()
        returncode = child.process.wait(timeout=120)
    assert killed_by(returncode, jailed=False) == signal.SIGXCPU
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
