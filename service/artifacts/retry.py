"""Storing a file while the store may be briefly down: a finished job's results are worth waiting for.

boto3 retries each request for about a second and a half (five retries from a 50 ms
backoff); restarting an S3-compatible server takes longer. :func:`store_file` retries
the whole file, read again from disk so its sha256 is computed afresh, on a longer
backoff, then gives up with the store's own error. A full disk is not retried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from service.artifacts.base import ArtifactStore
from service.errors import StorageUnavailable

log = logging.getLogger(__name__)
RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0)


def store_file(
    store: ArtifactStore,
    key: str,
    path: Path,
    pause: Callable[[float], None] = time.sleep,
    delays: Sequence[float] = RETRY_DELAYS_S,
) -> tuple[int, str]:
    """``store.put_stream`` of the file at ``path``, retried after each of ``delays``; ``(size, sha256)``.

    ``pause`` waits between tries: a worker passes one that keeps its lease alive.
    """
    for delay in delays:
        try:
            return _put(store, key, path)
        except StorageUnavailable as exc:
            log.warning("storing %s failed, retrying in %.0f s: %s", key, delay, exc)
            pause(delay)
    return _put(store, key, path)


def _put(store: ArtifactStore, key: str, path: Path) -> tuple[int, str]:
    with open(path, "rb") as file:
        return store.put_stream(key, file)
