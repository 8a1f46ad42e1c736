"""What the pipeline child inherits, what the worker reads of it, and when a worker refuses to start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support.pool import Pool, finished, running, submit
from workers.childlog import BoundedLog
from workers.jail import Jail
from workers.progress import ProgressTail
from workers.protocol import ProgressLine, child_file, read_child_file
from workers.sandbox import ChildLimits, child_environment, killed_by, start_pipeline


@pytest.mark.parametrize("jailed", [False, True], ids=["plain", "bwrap"])
def test_a_child_gets_the_worker_slots_threads_whatever_the_worker_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jailed: bool
) -> None:
    """QAT_CHILD_THREADS, not the worker's own OMP_NUM_THREADS (or torch's one thread per core)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    code = "import os; print(*(os.environ[v] for v in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')))"
    log = BoundedLog(tmp_path / "log.txt", 1 << 16)
    folder = tmp_path / "job"
    folder.mkdir()
    child = start_pipeline(folder, log, ChildLimits(threads=3), Jail() if jailed else None, ("-c", code))
    assert child.wait(timeout=60) == 0
    log.finish()
    assert (tmp_path / "log.txt").read_text().split() == ["3", "3", "3"]


def test_child_environment_is_an_allowlist_without_secrets(tmp_path: Path) -> None:
    parent = {
        "PATH": "/usr/bin",
        "LC_ALL": "C.UTF-8",
        "CUDA_VISIBLE_DEVICES": "3",
        "HOME": "/root",
        "QAT_DATABASE_URL": "postgresql://qat:pw@db/qat",
        "QAT_BROKER_URL": "redis://redis:6379/0",
        "AWS_SECRET_ACCESS_KEY": "s",
        "PGPASSWORD": "pw",
        "REDIS_URL": "redis://:pw@redis",
        "CUDA_API_TOKEN": "t",
    }
    env = child_environment(parent, home=tmp_path)
    assert env == {
        "PATH": "/usr/bin",
        "LC_ALL": "C.UTF-8",
        "CUDA_VISIBLE_DEVICES": "3",
        "HOME": str(tmp_path),
        "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1",
        "PYTHONUNBUFFERED": "1",
    }


def test_worker_process_modules_never_import_torch() -> None:
    code = "import sys, workers.tasks, workers.dispatcher, workers.commands; assert 'torch' not in sys.modules"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr


def _worker(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``qat worker`` in a fresh folder with ``env`` over this environment; it must stop on its own."""
    qat = Path(sys.executable).parent / "qat"
    full = {k: v for k, v in os.environ.items() if not k.startswith("QAT_")} | env
    return subprocess.run([str(qat), "worker"], cwd=tmp_path, env=full, capture_output=True, text=True, timeout=60)


def test_worker_refuses_to_start_without_bubblewrap(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    run = _worker(tmp_path, PATH=str(empty))
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error [SANDBOX_UNAVAILABLE] QAT_SANDBOX: bubblewrap (bwrap) is not installed")
    assert "QAT_SANDBOX=none" in run.stderr and "Traceback" not in run.stderr


def test_worker_refuses_to_start_where_the_sandbox_cannot_be_built(tmp_path: Path) -> None:
    """A host that refuses namespaces (a container without the deploy/ profile): bwrap's own reason is shown."""
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    run = _worker(tmp_path, PATH=f"{fake.parent}:{os.environ['PATH']}")
    assert run.returncode == 2, run.stderr
    assert "error [SANDBOX_UNAVAILABLE]" in run.stderr and "No permissions to create new namespace" in run.stderr


def test_a_bad_sandbox_setting_is_one_line(tmp_path: Path) -> None:
    run = _worker(tmp_path, QAT_SANDBOX="docker")
    assert run.returncode == 2
    assert run.stderr.strip() == "error [BAD_SETTING] QAT_SANDBOX: Input should be 'bwrap' or 'none', got 'docker'"


def test_child_files_are_read_only_when_they_are_regular_files(tmp_path: Path) -> None:
    """The child may leave links to the worker's files, FIFOs or folders where results belong."""
    secret = tmp_path / "worker-secret"
    secret.write_text("s3cret")
    folder = tmp_path / "job"
    (folder / "out").mkdir(parents=True)
    (folder / "out" / "report.json").write_text("{}")
    (folder / "out" / "model_int8.onnx").symlink_to(secret)
    os.mkfifo(folder / "out" / "record.txt")
    (folder / "out" / "config.json").mkdir()
    (folder / "linked").symlink_to(tmp_path)
    assert child_file(folder, "out/report.json") == folder / "out" / "report.json"
    assert read_child_file(folder, "out/report.json", 10) == b"{}"
    assert read_child_file(folder, "out/report.json", 1) is None, "over the limit"
    for relative in ("out/model_int8.onnx", "out/record.txt", "out/config.json", "linked/worker-secret", "out/none"):
        assert child_file(folder, relative) is None, relative
        assert read_child_file(folder, relative, 1 << 20) is None, relative


def test_progress_is_not_read_through_a_link_or_a_fifo(tmp_path: Path) -> None:
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"phase": "training", "step": 1, "total": 2}\n')
    (tmp_path / "linked.jsonl").symlink_to(secret)
    os.mkfifo(tmp_path / "fifo.jsonl")
    for name in ("linked.jsonl", "fifo.jsonl"):
        tail = ProgressTail(tmp_path / name)
        assert tail.poll() is False and tail.latest() is None, name


def test_the_log_keeps_its_head_and_tail_and_says_what_it_cut(tmp_path: Path) -> None:
    log = BoundedLog(tmp_path / "log.txt", limit=100)
    read_end, write_end = os.pipe()
    log.start(read_end)
    os.write(write_end, b"H" * 50 + b"M" * 1000 + b"T" * 50)
    os.close(write_end)
    log.finish()
    text = log.path.read_text()
    assert (
        text
        == "H" * 50 + "\n[... 1000 bytes of output cut here: log.txt keeps the first and last part ...]\n" + "T" * 50
    )
    assert log.dropped == 1000 and log.last_lines(1) == ["T" * 50]


def test_a_short_log_is_kept_whole(tmp_path: Path) -> None:
    log = BoundedLog(tmp_path / "log.txt", limit=1 << 20)
    read_end, write_end = os.pipe()
    log.start(read_end)
    os.write(write_end, b"line 1\nline 2\n")
    os.close(write_end)
    log.finish()
    assert log.path.read_text() == "line 1\nline 2\n" and log.dropped == 0


def test_with_qat_sandbox_none_jobs_still_run_under_the_limits(digits: tuple[Path, Path], tmp_path: Path) -> None:
    """The operator's explicit opt-out for a trusted single-user host: the same job, unconfined."""
    with running(Pool(tmp_path, QAT_SANDBOX="none")) as pool:
        job = pool.wait_for_job(submit(pool, digits, {"epochs": 1}), finished)
        assert job["state"] == "SUCCEEDED", job["failure"]
        assert "QAT_SANDBOX=none: jobs run unconfined" in pool.log("worker-0")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGSEGV])
def test_the_signal_that_ended_a_child_is_read_from_bubblewrap_and_from_python(tmp_path: Path, sig: int) -> None:
    """bubblewrap exits 128 + n for a process it ran that died of signal n; a plain child reports -n."""
    jail = Jail()
    jail.prepare(tmp_path)
    suicide = [sys.executable, "-c", f"import os; os.kill(os.getpid(), {int(sig)})"]
    jailed = subprocess.run(jail.command(suicide, tmp_path), capture_output=True, timeout=60, check=False)
    plain = subprocess.run(suicide, capture_output=True, timeout=60, check=False)
    assert killed_by(jailed.returncode, jailed=True) == sig, jailed.stderr
    assert killed_by(plain.returncode, jailed=False) == sig


def test_an_ordinary_exit_status_is_no_signal() -> None:
    assert (
        killed_by(3, jailed=True) is None
        and killed_by(0, jailed=False) is None
        and killed_by(200, jailed=False) is None
    )


def test_progress_lines_carry_only_finite_numbers(tmp_path: Path) -> None:
    """The job row's progress is JSON (PostgreSQL's jsonb refuses NaN): neither side lets one through."""
    assert json.loads(ProgressLine("training", 1, 2, float("nan"), 1).to_json())["loss"] is None
    path = tmp_path / "progress.jsonl"
    hostile = [
        '{"phase": "training", "step": 1, "total": 2, "loss": NaN}',
        '{"phase": "training", "step": 1, "total": 2, "loss": 1e999}',
        '{"phase": "training", "step": true, "total": 2}',
        '{"phase": "training", "step": 1.5, "total": 2}',
    ]
    path.write_text("\n".join(hostile) + "\n")
    tail = ProgressTail(path)
    assert tail.poll() is False and tail.latest() is None
    with open(path, "a") as file:
        file.write(ProgressLine("training", 2, 4, 0.25, 1).to_json() + "\n")
    assert tail.poll() is True and tail.latest() is not None and tail.latest()[1].loss == 0.25
