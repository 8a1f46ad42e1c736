"""Per-job work folders in the temp directory, and removing those a killed worker left.

A worker killed with SIGKILL runs no ``finally``, so its job's folder (the model, the
data, a half-trained model: gigabytes) would stay in ``$TMPDIR`` for good. Each folder
is named after the worker process, ``qat-pid<pid>-job-<random>``, so a later
worker on the host can tell whose it is and remove the folders of processes that no
longer run. A pid the kernel has since given to another process only delays the removal;
a running worker's folder is never removed.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

_PREFIX = "qat-pid"
_OWNER = re.compile(rf"^{_PREFIX}(\d+)-job-")


def new_workdir() -> Path:
    """A fresh folder for one job's child of this process; its owner removes it (:func:`shutil.rmtree`).

    Made before the job is known (the child starts ahead of its job), so the name has no job id.
    """
    return Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-job-"))


def remove_stale_workdirs(root: Path | None = None) -> list[Path]:
    """Remove the job folders under ``root`` (default: the temp directory) whose process is gone."""
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        owner = _OWNER.match(path.name)
        if owner is None or _running(int(owner[1])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _running(pid: int) -> bool:
    if pid <= 0:
        return True  # not a process of ours: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
