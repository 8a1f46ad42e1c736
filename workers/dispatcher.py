"""The dispatcher: the job table is the queue, the broker only carries admitted job ids.

Every tick it reaps expired leases (re-queueing the jobs of dead workers) and admits
QUEUED jobs while workers have room: at most ``slots`` jobs running or sent and not yet
claimed, taking teams in turn (round robin) and never more than a team's
``max_running``. Within a team, higher priority and then older jobs go first. Jobs
stay in the table until admitted, so one team's backlog never sits in the broker in
front of another team's job. A sent job that is still queued after ``resend_after_s``
(a lost message) is sent again; duplicates are harmless because claims are conditional.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable

from sqlalchemy import func, select

from service.db import Job, JobState, SessionFactory, Team, reading
from service.store import reap_expired_leases

log = logging.getLogger(__name__)
TICK_S = 0.5
RESEND_AFTER_S = 60.0
_ACTIVE = (JobState.RUNNING, JobState.CANCELLING)
Send = Callable[[uuid.UUID], None]


class Dispatcher:
    """Admission state between ticks: which (job, attempt) pairs were sent, and when."""

    def __init__(self, db: SessionFactory, send: Send, slots: int, resend_after_s: float = RESEND_AFTER_S) -> None:
        self.db = db
        self.send = send
        self.slots = slots
        self.resend_after_s = resend_after_s
        self._sent: dict[tuple[uuid.UUID, int], float] = {}
        self._last_team: int | None = None

    def tick(self) -> list[uuid.UUID]:
        """Reap expired leases, then send the jobs there is room for; returns the ids sent."""
        reaped = reap_expired_leases(self.db)
        if reaped.requeued or reaped.failed:
            log.warning("reaped leases: requeued %s, failed %s", reaped.requeued, reaped.failed)
        admitted = self._choose()
        for job_id, attempt in admitted:
            self.send(job_id)
            self._sent[(job_id, attempt)] = time.monotonic()
        return [job_id for job_id, _ in admitted]

    def _choose(self) -> list[tuple[uuid.UUID, int]]:
        with reading(self.db) as session:
            counts = select(Job.team_id, func.count()).where(Job.state.in_(_ACTIVE)).group_by(Job.team_id)
            active = Counter(dict(session.execute(counts).tuples().all()))
            limits = dict(session.execute(select(Team.id, Team.max_running)).tuples().all())
            queued = session.execute(
                select(Job.id, Job.attempt, Job.team_id)
                .where(Job.state == JobState.QUEUED)
                .order_by(Job.priority.desc(), Job.created_at, Job.id)
            ).tuples().all()
        now = time.monotonic()
        still_queued = {(job_id, attempt) for job_id, attempt, _ in queued}
        self._sent = {key: at for key, at in self._sent.items() if key in still_queued}
        pending = {key for key, at in self._sent.items() if now - at < self.resend_after_s}
        in_flight = active + Counter(team for job_id, attempt, team in queued if (job_id, attempt) in pending)
        room = self.slots - sum(in_flight.values())
        waiting: dict[int, deque[tuple[uuid.UUID, int]]] = {}
        for job_id, attempt, team in queued:
            if (job_id, attempt) not in pending:
                waiting.setdefault(team, deque()).append((job_id, attempt))
        chosen: list[tuple[uuid.UUID, int]] = []
        while room > 0:
            team = self._next_team([t for t, jobs in waiting.items() if jobs and in_flight[t] < limits.get(t, 0)])
            if team is None:
                break
            chosen.append(waiting[team].popleft())
            in_flight[team] += 1
            room -= 1
        return chosen

    def _next_team(self, eligible: list[int]) -> int | None:
        """The first eligible team after the one served last, wrapping around."""
        if not eligible:
            return None
        eligible.sort()
        after = [team for team in eligible if self._last_team is not None and team > self._last_team]
        self._last_team = (after or eligible)[0]
        return self._last_team


def run_forever(dispatcher: Dispatcher, tick_s: float = TICK_S) -> None:
    """Tick until interrupted; a failing tick (database restarting) is logged and retried."""
    while True:
        try:
            for job_id in dispatcher.tick():
                log.info("sent job %s", job_id)
        except Exception:  # noqa: BLE001 - the dispatcher must outlive a database hiccup
            log.exception("dispatcher tick failed; retrying")
        time.sleep(tick_s)
