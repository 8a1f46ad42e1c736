"""From inside the job sandbox on purpose: every escape fails, the worker stays small, the next job runs.

The test is the worker: it starts the child runner (:func:`workers.sandbox.start_pipeline`,
the same call a worker makes) with :mod:`sandbox_attack` in place of the pipeline, while
PostgreSQL, Redis and an S3 server listen on loopback and this process's environment
holds credentials. Each attempt's own result is asserted, not only the exit status.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from workers.childlog import BoundedLog
from workers.jail import JOB_ROOT, Jail
from workers.protocol import OUT_DIR, PipelineJob, child_file, read_child_file
from workers.sandbox import PIPELINE, ChildLimits, kill_pipeline, release_pipeline, start_pipeline

CANARY = "escape-canary-5d1e"
MAX_PROCESSES = 64
LOG_BYTES = 8 << 20
PRINT_BYTES = 1 << 30
SANDBOX_UID = 65534
CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.fixture
def worker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials in the environment of this process, the 'worker' whose /proc the attacker reads."""
    monkeypatch.setenv("QAT_DATABASE_URL", f"postgresql://qat:{CANARY}@127.0.0.1:5432/qat")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY)


@pytest.fixture
def job_folder(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "job"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _vm(field: str) -> int:
    """This process's ``VmRSS``/``VmHWM`` in bytes."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) << 10


def _run(folder: Path, log: BoundedLog, limits: ChildLimits, program: tuple[str, ...] = PIPELINE) -> int:
    child = start_pipeline(folder, log, limits, Jail(SANDBOX_UID), program)
    release_pipeline(child)
    try:
        return child.wait(timeout=300)
    finally:
        if child.poll() is None:
            kill_pipeline(child)
        log.finish()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_every_escape_from_the_sandbox_fails(
    tmp_path: Path, job_folder: Path, worker_environment: None, s3_endpoint: str, redis_url: str
) -> None:
    ports = {"postgresql": 5432, "redis": urlsplit(redis_url).port or 6379, "s3": urlsplit(s3_endpoint).port}
    assert all(_listening(port) for port in ports.values()), "the control: each server answers the worker"
    secret_file = tmp_path / "worker-secret.txt"
    secret_file.write_text(CANARY)
    outside = [tmp_path / "escaped", CHECKOUT / "quantlib" / "escaped", Path("/usr/escaped"), Path("/escaped")]
    targets = {
        "ports": ports,
        "worker_pid": os.getpid(),
        "worker_files": [str(secret_file), str(CHECKOUT / "pyproject.toml"), str(CHECKOUT / "service" / "settings.py")],
        "outside": [str(path) for path in outside],
        "forks": 10_000,
        "print_bytes": PRINT_BYTES,
    }
    shutil.copy(Path(__file__).with_name("sandbox_attack.py"), job_folder / "attack.py")
    (job_folder / "targets.json").write_text(json.dumps(targets))
    log = BoundedLog(tmp_path / "log.txt", LOG_BYTES)
    peak_before = _vm("VmHWM")

    returncode = _run(job_folder, log, ChildLimits(max_processes=MAX_PROCESSES), (str(JOB_ROOT / "attack.py"),))

    assert returncode == 0, log.last_lines(20)
    result = json.loads(read_child_file(job_folder, "result.json", 1 << 20) or b"{}")
    for name in ports:
        assert "Connection refused" in result[f"connect {name}"].get("error", ""), result[f"connect {name}"]
    assert "error" in result["worker environ"], "the worker's /proc entry is not there at all"
    visible = result["processes"]["ok"]  # bubblewrap's init and the attacker, under pids of their own
    worker_command = Path("/proc/self/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert len(visible) <= 3 and not any(worker_command in entry for entry in visible), visible
    for path in targets["worker_files"]:
        assert "No such file or directory" in result[f"read {path}"].get("error", ""), result[f"read {path}"]
    for path in outside:
        assert "error" in result[f"write {path}"] and not path.exists(), result[f"write {path}"]
    forks = result["fork"].get("error", "")
    assert "Resource temporarily unavailable" in forks, result["fork"]
    assert int(forks.rsplit("after ", 1)[1].split()[0]) < MAX_PROCESSES
    if os.geteuid() == 0:
        assert result["uid"]["ok"] == [SANDBOX_UID, SANDBOX_UID], "a root worker's child runs unprivileged"

    kept = log.path.stat().st_size
    assert LOG_BYTES <= kept <= LOG_BYTES + 1024, kept
    assert log.dropped == PRINT_BYTES - LOG_BYTES
    with open(log.path, "rb") as kept_log:  # the first half, then the line that says what was cut
        kept_log.seek(LOG_BYTES // 2)
        assert kept_log.read(100).startswith(f"\n[... {PRINT_BYTES - LOG_BYTES} bytes of output cut here".encode())
    assert _vm("VmHWM") - peak_before < 64 << 20, "the worker read 1 GiB of output without holding it"
    assert CANARY not in log.path.read_text(errors="replace")


def test_a_normal_job_runs_in_the_sandbox_right_after(
    tmp_path: Path, job_folder: Path, digits: tuple[Path, Path]
) -> None:
    model, data = digits
    shutil.copy(model, job_folder / "model.pt2")
    shutil.copy(data, job_folder / "data.npz")
    PipelineJob("model.pt2", "data.npz", None, {"epochs": 1}).write(job_folder)
    log = BoundedLog(tmp_path / "log.txt", LOG_BYTES)

    returncode = _run(job_folder, log, ChildLimits(max_processes=512))

    assert returncode == 0, log.last_lines(30)
    assert child_file(job_folder, f"{OUT_DIR}/model_int8.onnx") is not None
    report = json.loads(read_child_file(job_folder, f"{OUT_DIR}/report.json", 1 << 26) or b"{}")
    assert report["accuracy"], report
