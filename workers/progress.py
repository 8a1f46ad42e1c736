"""Reading the child's progress lines and turning them into the job row's ``Progress``."""

from __future__ import annotations

import json
import math
import os
import stat
import time
from pathlib import Path

from service.contract import Phase, Progress
from workers.protocol import ProgressLine

# the most bytes read per poll: the child, which writes the file, runs untrusted code
MAX_READ = 1 << 20


class ProgressTail:
    """Follows a growing ``progress.jsonl``; :meth:`latest` is the newest complete line.

    It is opened without following links or blocking and read a bounded chunk at a time:
    the child could make it a link to the worker's files, a FIFO, or endless.

    ETA is estimated per phase from the step rate since the phase began, which is
    what users watch during the long phase (training).
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._latest: ProgressLine | None = None
        self._phase_started = time.monotonic()

    def poll(self) -> bool:
        """Read lines written since the last call; ``True`` if any arrived."""
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return False
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                return False
            file.seek(self._offset)
            chunk = file.read(MAX_READ)
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits
        if not complete and len(chunk) == MAX_READ:
            complete = chunk  # no line is that long: skip it
        self._offset += len(complete)
        lines = [line for line in map(_parse, complete.splitlines()) if line is not None]
        for line in lines:
            if self._latest is None or line.phase != self._latest.phase:
                self._phase_started = time.monotonic()
            self._latest = line
        return bool(lines)

    def latest(self) -> tuple[Phase, Progress] | None:
        """The newest phase and progress, with an ETA for the phase once steps are moving."""
        line = self._latest
        if line is None:
            return None
        eta = None
        if 0 < line.step < line.total:
            elapsed = time.monotonic() - self._phase_started
            eta = round(elapsed / line.step * (line.total - line.step), 1)
        return Phase(line.phase), Progress(
            step=line.step, total=line.total, epoch=line.epoch, loss=line.loss, eta_s=eta
        )


def _parse(raw: bytes) -> ProgressLine | None:
    """A progress line, or ``None`` for anything malformed: the child runs untrusted code.

    Only finite numbers of the right types pass: the line goes on into the job row's JSON.
    """
    try:
        line = ProgressLine(**json.loads(raw, parse_constant=_no_constants))
        Phase(line.phase)
    except (ValueError, TypeError, RecursionError):
        return None
    counts = (line.step, line.total, line.epoch if line.epoch is not None else 0)
    if not all(type(n) is int and 0 <= n < 2**53 for n in counts):
        return None
    if line.loss is not None and (type(line.loss) not in (int, float) or not math.isfinite(line.loss)):
        return None
    return line


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not JSON")
