"""Server-sent events for one job: its state, phase and progress, as they change.

Workers write progress only to the job row (at most once a second), so the stream polls
that row rather than listening on a channel: the API stays stateless and any API
process can serve any stream. Each poll is its own short transaction, so an open stream
holds a greenlet but no database connection between polls; streams are bounded
(:mod:`service.api.stream_slots`) and short: each ends at the job's terminal state,
after ``max_stream_s`` (a minute) or as soon as its token is revoked, and an
``EventSource`` reconnects after the ``retry:`` it was told, sending ``Last-Event-ID`` so
an unchanged state is not sent again.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from service.db import SessionFactory
from service.jobs import get_job

POLL_S = 1.0
MAX_STREAM_S = 60.0
# how often a stream checks that its token still holds, and the reconnect delay it asks for
REAUTH_S = 2.0
RETRY_MS = 2000
# a comment line this often when nothing changes: keeps proxies from timing the stream
# out and lets the server notice a client that went away (and free its stream slot)
KEEPALIVE_S = 5.0


def job_events(
    db: SessionFactory,
    team_id: int,
    job_id: uuid.UUID,
    *,
    still_allowed: Callable[[], bool],
    last_event_id: str | None = None,
    poll_s: float = POLL_S,
    max_stream_s: float = MAX_STREAM_S,
) -> Iterator[str]:
    """``event: progress`` with ``{state, phase, progress}`` on every change, then ``event: end``.

    The first event is the job as it is now, unless it is the one ``last_event_id`` names;
    changes between two polls are seen as one. Each event's id is a digest of its
    snapshot. ``still_allowed`` (the caller's token is valid) is asked every ``REAUTH_S``;
    when it says no, ``event: end`` with ``"reason": "unauthenticated"`` closes the stream.
    """
    started = last_sent = last_auth = time.monotonic()
    last: str | None = last_event_id
    yield f"retry: {RETRY_MS}\n\n"
    while True:
        job = get_job(db, team_id, job_id)
        snapshot = {"state": job.state.value, "phase": job.phase, "progress": job.progress}
        event_id = hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).hexdigest()[:16]
        now = time.monotonic()
        if event_id != last:
            yield format_event("progress", snapshot, event_id)
            last, last_sent = event_id, now
        elif now - last_sent >= KEEPALIVE_S:
            yield ": keepalive\n\n"
            last_sent = now
        if job.state.terminal:
            yield format_event("end", {"state": job.state.value})
            return
        if now - last_auth >= REAUTH_S:
            if not still_allowed():
                yield format_event("end", {"state": job.state.value, "reason": "unauthenticated"})
                return
            last_auth = now
        if now - started >= max_stream_s:
            return
        time.sleep(poll_s)


def format_event(event: str, data: dict[str, Any], event_id: str | None = None) -> str:
    """One SSE message: its type, its id if it has one, and a single-line JSON payload."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
