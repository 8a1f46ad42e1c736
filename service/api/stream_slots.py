"""How many event streams may be open at once, in all and per team.

Each open ``/v1/jobs/{id}/events`` stream is a greenlet, a connection and a database
query a second for its whole life (up to a minute). Cheap, but not free: without a bound
one team could open thousands and load the database for everyone. A stream beyond the
bound is refused at once (503 with ``Retry-After``). Counted per API process.
"""

from __future__ import annotations

import threading
from collections import Counter

from service.errors import TooManyStreams


class StreamSlots:
    """At most ``total`` open streams, ``per_team`` of them for any one team."""

    def __init__(self, total: int, per_team: int) -> None:
        self.total, self.per_team = total, per_team
        self._open: Counter[int] = Counter()
        self._lock = threading.Lock()

    def acquire(self, team_id: int) -> None:
        """Take a slot for ``team_id`` or raise :class:`TooManyStreams`; :meth:`release` gives it back."""
        with self._lock:
            if self._open[team_id] >= self.per_team:
                raise TooManyStreams(
                    f"this team already has {self.per_team} event streams open, the most allowed; close one, "
                    "or poll GET /v1/jobs/{id}"
                )
            if sum(self._open.values()) >= self.total:
                raise TooManyStreams(f"the service has {self.total} event streams open, the most it serves; retry soon")
            self._open[team_id] += 1

    def release(self, team_id: int) -> None:
        with self._lock:
            self._open[team_id] -= 1
            if self._open[team_id] <= 0:
                del self._open[team_id]

    def open_streams(self) -> int:
        with self._lock:
            return sum(self._open.values())
