"""Job children started ahead of their jobs, so a warm worker starts a job in well under a second.

A job's child spends seconds starting Python and importing torch before it reads a byte
of its inputs. A worker therefore starts the child of its *next* job while the current
one runs: sandboxed and limited exactly like any job's child, in a fresh folder of its
own, it imports what a job needs and waits on its stdin. The next claimed job takes it:
the job's inputs go into that folder and one line on stdin sets it going.

Isolation is unchanged: a child still serves one job only. It has seen no job before its
own, it is never handed a second one, and it dies with its job (or with its worker).

A child is started without a CPU-time limit; it sets its job's own before it opens the
model (``job.json``'s ``cpu_seconds``), so seconds spent waiting never count against a job.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from workers.childlog import BoundedLog
from workers.jail import Jail
from workers.protocol import LOG_FILE
from workers.sandbox import ChildLimits, kill_pipeline, release_pipeline, start_pipeline
from workers.scratch import new_workdir

log = logging.getLogger(__name__)
# inside a child's scratch folder: the child's own folder (its inputs and outputs); the
# worker's files (log.txt) sit beside it, out of the child's reach
CHILD_FOLDER = "job"


@dataclass
class JobChild:
    """One job's sandboxed child and its folders; closing it kills the child and removes its files."""

    process: subprocess.Popen[bytes]
    workdir: Path
    log: BoundedLog

    @property
    def folder(self) -> Path:
        """The child's own folder (``/job`` in the sandbox): the job's inputs go here before :meth:`go`."""
        return self.workdir / CHILD_FOLDER

    def go(self) -> None:
        """Start the child on the job whose inputs and ``job.json`` are now in :attr:`folder`."""
        release_pipeline(self.process)

    def close(self) -> None:
        """Kill the child if it still runs, wait for its log, and remove its folders."""
        if self.process.poll() is None:
            kill_pipeline(self.process)
        elif self.process.stdin is not None:
            self.process.stdin.close()
        self.log.finish()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> JobChild:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class JobChildren:
    """Where a worker gets each job's child: the one started ahead (``warm``) if it is alive, else a new one.

    One per worker process, used from the thread that runs jobs: on Linux a child is
    killed when the thread that started it ends, so no other thread may start one.
    """

    def __init__(self, limits: ChildLimits, jail: Jail | None, *, warm: bool = True) -> None:
        self.limits = limits
        self.jail = jail
        self.warm = warm
        self._next: JobChild | None = None

    def take(self) -> JobChild:
        """A child for the job just claimed, waiting for its inputs; the caller closes it."""
        child, self._next = self._next, None
        if child is not None and child.process.poll() is None:
            return child
        if child is not None:  # it died waiting (killed, out of memory at import): a new one for this job
            log.warning("the child started ahead ended with %s before its job; starting another", child.process.poll())
            child.close()
        return self._start()

    def prepare_next(self) -> None:
        """Start the next job's child now, unless one waits already or starting ahead is off."""
        if self.warm and self._next is None:
            try:
                self._next = self._start()
            except Exception:  # noqa: BLE001 - the next job starts its own child, and fails if that fails too
                log.exception("could not start the next job's child ahead of its job")

    def close(self) -> None:
        """Kill the waiting child and remove its folder (the worker is stopping)."""
        if self._next is not None:
            self._next.close()
            self._next = None

    def _start(self) -> JobChild:
        workdir = new_workdir()
        try:
            (workdir / CHILD_FOLDER).mkdir()
            output = BoundedLog(workdir / LOG_FILE, self.limits.log_bytes)
            limits = replace(self.limits, cpu_seconds=None)  # the child sets its job's (see above)
            process = start_pipeline(workdir / CHILD_FOLDER, output, limits, self.jail)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return JobChild(process, workdir, output)
