"""A job's training checkpoints in the store: uploaded as it trains, given to its next attempt, removed at its end.

The child writes ``checkpoints/epoch-NNNN.pt`` into its folder after each epoch
(:mod:`quantlib.checkpoint`); the worker uploads the newest under the attempt's prefix,
``jobs/<id>/attempt-<n>/checkpoints/``, at most once every ``interval_s``. An attempt that
follows a killed one (its worker or its sandbox was killed) downloads the newest any
attempt left, and the child goes on from it. The child runs while the worker reads its
folder, so a checkpoint is opened without following links and read only up to the size it
had when opened, within a bound set by the model's size.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
import uuid
from pathlib import Path
from typing import IO

from quantlib.checkpoint import CHECKPOINT_NAME
from service.artifacts import ArtifactStore
from service.errors import StorageFull, StorageUnavailable
from workers.protocol import CHECKPOINT_DIR

log = logging.getLogger(__name__)
# a stored checkpoint: the attempt, then the child's own name for it (CHECKPOINT_NAME, epoch in group 2)
_KEY = re.compile(rf"^jobs/[^/]+/attempt-(\d+)/{CHECKPOINT_DIR}/{CHECKPOINT_NAME.pattern[1:]}")


class _Prefix:
    """Reads at most ``left`` bytes of ``file``: a checkpoint the child keeps writing stops where it was measured."""

    def __init__(self, file: IO[bytes], left: int) -> None:
        self._file = file
        self._left = left

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._file.read(size)
        self._left -= len(data)
        return data


class CheckpointUploads:
    """The newest checkpoint of one running attempt, kept in the store; :meth:`poll` it while the child runs."""

    def __init__(
        self, artifacts: ArtifactStore, job_id: uuid.UUID, attempt: int, folder: Path, interval_s: float, max_bytes: int
    ) -> None:
        self.artifacts = artifacts
        self.prefix = f"jobs/{job_id}/attempt-{attempt}/checkpoints"
        self.folder = folder / CHECKPOINT_DIR
        self.interval_s = interval_s
        self.max_bytes = max_bytes
        self._stored: str | None = None
        self._stored_at = float("-inf")

    def poll(self) -> None:
        """Upload the child's newest checkpoint if it is new and the last upload is ``interval_s`` old."""
        if time.monotonic() - self._stored_at < self.interval_s:
            return
        try:
            names = sorted(name for name in os.listdir(self.folder) if CHECKPOINT_NAME.match(name))
        except OSError:  # none written yet (or the child made the folder something else)
            return
        if not names or names[-1] == self._stored:
            return
        try:
            self._upload(names[-1])
        except (OSError, StorageUnavailable, StorageFull) as exc:  # the next poll tries again
            log.warning("checkpoint %s of %s not stored: %s", names[-1], self.prefix, exc)
            return
        if self._stored is not None:
            _delete(self.artifacts, f"{self.prefix}/{self._stored}")
        self._stored, self._stored_at = names[-1], time.monotonic()

    def _upload(self, name: str) -> None:
        folder = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
        finally:
            os.close(folder)
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > self.max_bytes:
                raise OSError(f"not a regular file of at most {self.max_bytes} bytes")
            self.artifacts.put_stream(f"{self.prefix}/{name}", _Prefix(file, info.st_size))  # type: ignore[arg-type]
        log.info("stored checkpoint %s/%s", self.prefix, name)


def newest_checkpoint(artifacts: ArtifactStore, job_id: uuid.UUID) -> str | None:
    """The key of the latest epoch's checkpoint any attempt of ``job_id`` stored; ``None`` if there is none."""
    found = [(int(m[2]), int(m[1]), key) for key in artifacts.list(f"jobs/{job_id}/") if (m := _KEY.match(key))]
    return max(found)[2] if found else None


def remove_checkpoints(artifacts: ArtifactStore, job_id: uuid.UUID) -> None:
    """Delete every checkpoint of ``job_id``: it has ended, no attempt will resume."""
    for key in [key for key in artifacts.list(f"jobs/{job_id}/") if _KEY.match(key)]:
        _delete(artifacts, key)


def _delete(artifacts: ArtifactStore, key: str) -> None:
    try:
        artifacts.delete(key)
    except StorageUnavailable as exc:  # the store's garbage collection removes what is left
        log.warning("could not delete checkpoint %s: %s", key, exc)
