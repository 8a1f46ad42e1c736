"""Server-sent events for one job: its state, phase and progress, as they change.

Workers write progress only to the job row (at most once a second), so the stream polls
that row rather than listening on a channel: the API stays stateless and any API
process can serve any stream. Each poll is its own short transaction, so an open stream
holds a server thread but no database connection between polls. Streams end at the
job's terminal state or after ``max_stream_s``; an ``EventSource`` then reconnects.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from service import store
from service.db import SessionFactory

POLL_S = 0.5
MAX_STREAM_S = 600.0
# a comment line this often when nothing changes: keeps proxies from timing the stream
# out and lets the server notice a client that went away
KEEPALIVE_S = 15.0


def job_events(
    db: SessionFactory,
    team_id: int,
    job_id: uuid.UUID,
    *,
    poll_s: float = POLL_S,
    max_stream_s: float = MAX_STREAM_S,
) -> Iterator[str]:
    """``event: progress`` with ``{state, phase, progress}`` on every change, then ``event: end``.

    The first event is the job as it is now; changes between two polls are seen as one.
    Raises ``NotFound`` on the first poll for a job the team cannot see.
    """
    deadline = time.monotonic() + max_stream_s
    last: dict[str, Any] | None = None
    last_sent = time.monotonic()
    while True:
        job = store.get_job(db, team_id, job_id)
        snapshot = {"state": job.state.value, "phase": job.phase, "progress": job.progress}
        now = time.monotonic()
        if snapshot != last:
            yield format_event("progress", snapshot)
            last, last_sent = snapshot, now
        elif now - last_sent >= KEEPALIVE_S:
            yield ": keepalive\n\n"
            last_sent = now
        if job.state.terminal:
            yield format_event("end", {"state": job.state.value})
            return
        if now >= deadline:
            return
        time.sleep(poll_s)


def format_event(event: str, data: dict[str, Any]) -> str:
    """One SSE message: its type and a single-line JSON payload."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
