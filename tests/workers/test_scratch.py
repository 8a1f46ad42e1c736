"""Job work folders: a SIGKILLed worker's folder is removed by the next job, a running one's never."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from workers.scratch import new_workdir, remove_stale_workdirs

# a worker stand-in: opens a job folder, says where, and waits to be killed inside the job
HOLD_A_FOLDER = """
import sys, time
from workers.scratch import new_workdir
path = new_workdir()
(path / "model.pt2").write_bytes(b"x" * 1024)
print(path, flush=True)
time.sleep(60)
"""


def test_folder_of_a_sigkilled_process_is_removed_and_a_running_ones_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    env = {"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    killed = subprocess.Popen([sys.executable, "-c", HOLD_A_FOLDER], env=env, stdout=subprocess.PIPE, text=True)
    assert killed.stdout is not None
    left = Path(killed.stdout.readline().strip())
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=10)
    assert left.is_dir() and left.parent == tmp_path, "SIGKILL ran no cleanup"
    unrelated = tmp_path / "qat-something-else"
    unrelated.mkdir()

    ours = new_workdir()
    assert ours.parent == tmp_path
    assert remove_stale_workdirs() == [left]
    assert not left.exists()
    assert ours.is_dir() and unrelated.is_dir()
