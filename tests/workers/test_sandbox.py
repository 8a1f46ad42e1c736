"""What the pipeline child inherits, and what the worker process never loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from workers.sandbox import child_environment


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
