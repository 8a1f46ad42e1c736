"""The dispatcher: the job table is the queue, the broker only carries admitted job ids.

Every tick it reaps expired leases (re-queueing the jobs of dead workers) and admits
QUEUED jobs while workers have room: at most ``slots`` jobs running or sent and not yet
claimed, never more than a team's ``max_running``. Within a team, higher priority and
then older jobs go first. Jobs stay in the table until admitted, so one team's backlog
never sits in the broker in front of another team's job. A sent job that is still queued
after ``resend_after_s`` (a lost message) is sent again; duplicates are harmless because
claims are conditional.

Teams take turns by smooth weighted round robin (nginx's upstream balancer): each pick,
every team with an admissible job earns its ``weight`` in credit, the richest team is
served and pays the total weight of those teams. Over any stretch where teams keep a
backlog, a team of weight 2 gets two admissions for every one of a weight-1 team, and
its turns are spread out rather than bunched, so a team's first job waits at most one
round (the sum of the weights) of admissions. It needs one number per team and
nothing stored: after a restart turns start afresh, which costs at most one round.
A team without queued jobs forgets its credit, so idling banks no claim on the pool;
ties go to the team with fewer jobs in flight, so a newcomer gets the next free slot.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable

from sqlalchemy import func, select

from service.db import Job, JobState, SessionFactory, Team, reading
from service.jobs import reap_expired_leases

log = logging.getLogger(__name__)
TICK_S = 0.5
RESEND_AFTER_S = 60.0
RELEASE_EVERY_S = 5.0
_ACTIVE = (JobState.RUNNING, JobState.CANCELLING)
Send = Callable[[uuid.UUID], None]
Release = Callable[[], list[uuid.UUID]]
_TEAM_LIMITS = select(Team.id, Team.max_running, Team.weight)


class Dispatcher:
    """Admission state between ticks: which (job, attempt) pairs were sent, and when."""

    def __init__(self, db: SessionFactory, send: Send, slots: int, resend_after_s: float = RESEND_AFTER_S) -> None:
        self.db = db
        self.send = send
        self.slots = slots
        self.resend_after_s = resend_after_s
        self._sent: dict[tuple[uuid.UUID, int], float] = {}
        self._credit: dict[int, int] = {}

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
            limits = {team: (cap, weight) for team, cap, weight in session.execute(_TEAM_LIMITS).tuples()}
            queued = (
                session.execute(
                    select(Job.id, Job.attempt, Job.team_id)
                    .where(Job.state == JobState.QUEUED)
                    .order_by(Job.priority.desc(), Job.created_at, Job.id)
                )
                .tuples()
                .all()
            )
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
        self._credit = {team: credit for team, credit in self._credit.items() if team in waiting}
        chosen: list[tuple[uuid.UUID, int]] = []
        while room > 0:
            eligible = {t: weight for t, (cap, weight) in limits.items() if waiting.get(t) and in_flight[t] < cap}
            if not eligible:
                break
            team = self._next_team(eligible, in_flight)
            chosen.append(waiting[team].popleft())
            in_flight[team] += 1
            room -= 1
        return chosen

    def _next_team(self, weights: dict[int, int], in_flight: Counter[int]) -> int:
        """One smooth weighted round-robin pick among ``weights`` (team -> weight), which is not empty."""
        for team, weight in weights.items():
            self._credit[team] = self._credit.get(team, 0) + weight
        team = max(weights, key=lambda t: (self._credit[t], -in_flight[t], -t))
        self._credit[team] -= sum(weights.values())
        return team


def run_forever(dispatcher: Dispatcher, tick_s: float = TICK_S, *, release_inputs: Release | None = None) -> None:
    """Tick until interrupted; a failing tick (database restarting) is logged and retried.

    Every ``RELEASE_EVERY_S`` it also calls ``release_inputs`` (deleting failed and
    cancelled jobs' inputs, :func:`service.ops.retention.release_inputs`), so a team's
    storage is freed within seconds of such a job ending, whoever ended it.
    """
    released_at = 0.0
    while True:
        try:
            for job_id in dispatcher.tick():
                log.info("sent job %s", job_id)
            if release_inputs is not None and time.monotonic() - released_at >= RELEASE_EVERY_S:
                released = release_inputs()
                released_at = time.monotonic()
                if released:
                    log.info("deleted the inputs of failed or cancelled jobs %s", released)
        except Exception:  # noqa: BLE001 - the dispatcher must outlive a database or store hiccup
            log.exception("dispatcher tick failed; retrying")
        time.sleep(tick_s)
