"""The child's output, kept to a bounded ``log.txt``: its first and its last bytes.

The child runs the user's code, which may print without end. Its stdout and stderr are a
pipe the worker drains on a thread, so the child never blocks on a full pipe: the first
half of the limit goes to the file as it comes, the last half stays in memory until the
child ends, and everything between is counted and dropped. The worker's memory and the
uploaded log stay within the limit whatever the child prints.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20


class BoundedLog:
    """Drains a pipe into ``path``, keeping at most ``limit`` bytes of it (plus one line saying what was cut)."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self._head_left = limit // 2
        self._tail_limit = limit - limit // 2
        self._tail: deque[bytes] = deque()
        self._tail_bytes = 0
        self.dropped = 0
        self._thread: threading.Thread | None = None

    def start(self, fd: int) -> None:
        """Read ``fd`` (the read end of the child's output pipe, owned from now on) until it closes."""
        self._thread = threading.Thread(
            target=self._drain, args=(fd,), name=f"log-{self.path.parent.name}", daemon=True
        )
        self._thread.start()

    def finish(self, timeout_s: float = 10.0) -> None:
        """Wait for the pipe to close (the child and all it started have ended), then write the tail."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    def last_lines(self, count: int) -> list[str]:
        """The last ``count`` lines of what the log kept, from the file's end (a bounded read)."""
        with open(self.path, "rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - 64 * 1024))
            lines = file.read().decode("utf-8", errors="replace").splitlines()
        return lines[-count:]

    def _drain(self, fd: int) -> None:
        with open(self.path, "ab") as out:
            try:
                while chunk := os.read(fd, _CHUNK):
                    self._take(chunk, out)
            finally:
                os.close(fd)
                if self.dropped:
                    out.write(
                        f"\n[... {self.dropped} bytes of output cut here: log.txt keeps the first and last part ...]\n".encode()
                    )
                out.writelines(self._tail)

    def _take(self, chunk: bytes, out: BinaryIO) -> None:
        if self._head_left > 0:
            head, chunk = chunk[: self._head_left], chunk[self._head_left :]
            out.write(head)
            self._head_left -= len(head)
        if not chunk:
            return
        self._tail.append(chunk)
        self._tail_bytes += len(chunk)
        while self._tail_bytes > self._tail_limit:
            excess = self._tail_bytes - self._tail_limit
            first = self._tail[0]
            if len(first) <= excess:
                self._tail.popleft()
                cut = len(first)
            else:
                self._tail[0] = first[excess:]
                cut = excess
            self._tail_bytes -= cut
            self.dropped += cut
