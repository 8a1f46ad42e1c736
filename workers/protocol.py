"""The files through which a worker and its sandboxed pipeline child talk.

The child gets no database, broker or storage access, so everything passes through a
private work directory: the parent writes the inputs and ``job.json``, the child appends
progress lines, writes its results under ``out/`` (already under their published names)
and, on failure, ``error.json``. Torch-free, so the parent never imports torch.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from service.contract import LOG_FILE, OUTPUT_FILES

JOB_FILE = "job.json"
PROGRESS_FILE = "progress.jsonl"
ERROR_FILE = "error.json"
OUT_DIR = "out"
# the dataset's arrays as files the child maps (inflated .npz members, decoded images)
SCRATCH_DIR = "arrays"
# where the child writes its training checkpoints, and the one it resumes from (a later attempt's)
CHECKPOINT_DIR = "checkpoints"
RESUME_FILE = "resume.pt"

# The files a succeeded job publishes, in ``OUT_DIR`` (``log.txt`` is the child's log).
ARTIFACTS = (*OUTPUT_FILES.values(), LOG_FILE)

# the most of a child's error message kept: the child runs untrusted code
MAX_ERROR_MESSAGE = 4000
# the most bytes the worker reads of error.json and report.json
MAX_ERROR_BYTES = 64 << 10
MAX_REPORT_BYTES = 64 << 20
# exit status of a child that wrote ERROR_FILE
EXIT_REPORTED_ERROR = 3
# CPU seconds between SIGXCPU (the soft limit, which ends the child) and SIGKILL (the hard one)
CPU_GRACE_S = 5
# the line on the child's stdin that starts it on the job in its folder (EOF instead: exit unused)
GO = b"go\n"
# the child's process name (``/proc/<pid>/comm``) while it waits for its job, and once it has one
WAITING_NAME = "qat-waiting"
RUNNING_NAME = "qat-job"


@dataclass(frozen=True)
class PipelineJob:
    """What the child runs: input file names relative to the work directory and the QAT spec.

    ``cpu_seconds`` is the job's own CPU-time limit (from ``spec.max_runtime_s``): the child
    was started before its job was known, so it sets that limit itself before it loads the model.
    """

    model: str
    data: str
    config: str | None
    spec: dict[str, Any]
    cpu_seconds: int | None = None
    # a checkpoint an earlier attempt of the job left, to resume from
    resume: str | None = None

    def write(self, workdir: Path) -> None:
        (workdir / JOB_FILE).write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def read(cls, workdir: Path) -> PipelineJob:
        return cls(**json.loads((workdir / JOB_FILE).read_text(encoding="utf-8")))


@dataclass(frozen=True)
class ProgressLine:
    """One progress report of the child: ``phase`` is a :class:`service.jobs.Phase` value."""

    phase: str
    step: int
    total: int
    loss: float | None = None
    epoch: int | None = None

    def to_json(self) -> str:
        """One line of strict JSON: a loss that is not finite is written as null (JSON has no NaN)."""
        finite = self.loss is None or math.isfinite(self.loss)
        return json.dumps({**asdict(self), "loss": self.loss if finite else None}, allow_nan=False)


@dataclass(frozen=True)
class PipelineError:
    """Why the child failed: a failure code, a message for the user, and whose fault it was."""

    code: str
    message: str
    user_error: bool

    def write(self, workdir: Path) -> None:
        (workdir / ERROR_FILE).write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def read(cls, workdir: Path) -> PipelineError | None:
        text = read_child_file(workdir, ERROR_FILE, MAX_ERROR_BYTES)
        if text is None:
            return None
        try:
            raw = json.loads(text)
            return cls(str(raw["code"])[:64], str(raw["message"])[:MAX_ERROR_MESSAGE], raw["user_error"] is True)
        except (ValueError, TypeError, KeyError):
            return None


def child_file(folder: Path, relative: str) -> Path | None:
    """``folder/relative`` if each folder on the way is a real folder and the end a regular file; else ``None``.

    The child may have made any entry a link (to the worker's own secrets) or a FIFO (to
    hang the worker). Checked with ``lstat``, so call it once the child has ended: then
    nothing can change the entries between the check and the worker's read.
    """
    path = folder
    parts = Path(relative).parts
    for index, part in enumerate(parts):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return None
        if not (stat.S_ISREG(mode) if index == len(parts) - 1 else stat.S_ISDIR(mode)):
            return None
    return path


def read_child_file(folder: Path, relative: str, limit: int) -> bytes | None:
    """The bytes of a regular file the child left (see :func:`child_file`), if at most ``limit``; else ``None``."""
    path = child_file(folder, relative)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        return file.read(limit)
