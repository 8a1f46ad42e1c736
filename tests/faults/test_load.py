"""Load: 1,000 job submissions from 20 concurrent clients against ``qat serve`` on PostgreSQL.

Each is accepted or refused with 429 by the team's quota (900 queued jobs; no workers
run, so the queue only grows); none is lost or duplicated. Every tenth submission is
sent a second time with the same Idempotency-Key, usually while the first is still in
flight on another client: both answers name one job. Between submissions each client
reads a random accepted job, and the latency of those reads is printed (no timing is
asserted: the machine is shared).
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from sqlalchemy import func, select

from service.db import IdempotencyKey, Job, reading
from support.fault_servers import serving, tiny_inputs
from support.pool import Pool

SUBMISSIONS = 1000
CLIENTS = 20
MAX_QUEUED = 900
RETRY_EVERY = 10


@dataclass(frozen=True)
class Answer:
    key: str
    status: int
    job_id: str | None
    code: str | None


class Clients:
    """``CLIENTS`` threads draining one queue of submissions; each records what it was answered."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.work: queue.Queue[int] = queue.Queue()
        for index in range(SUBMISSIONS):
            self.work.put(index)
            if index % RETRY_EVERY == 0:
                self.work.put(index)  # the same request again, likely concurrently with the first
        self.answers: list[Answer] = []
        self.errors: list[str] = []
        self.post_s: list[float] = []
        self.get_s: list[float] = []
        self.accepted: list[str] = []
        self.lock = threading.Lock()

    def run(self) -> float:
        threads = [threading.Thread(target=self._client) for _ in range(CLIENTS)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        return time.monotonic() - started

    def _client(self) -> None:
        session = requests.Session()
        session.headers.update(self.pool.session.headers)
        while True:
            try:
                index = self.work.get_nowait()
            except queue.Empty:
                return
            try:
                self._submit(session, index)
                self._read(session)
            except requests.RequestException as exc:
                self.errors.append(f"submission {index}: {exc!r}")

    def _submit(self, session: requests.Session, index: int) -> None:
        key = f"load-{index}"
        form = {"spec": json.dumps({"epochs": 1, "seed": index})}
        started = time.perf_counter()
        response = session.post(
            f"{self.pool.url}/v1/jobs", files=tiny_inputs(), data=form, headers={"Idempotency-Key": key}, timeout=120
        )
        elapsed = time.perf_counter() - started
        body = response.json()
        job_id = body.get("id") if response.status_code in (200, 201) else None
        code = body["error"]["code"] if response.status_code >= 400 else None
        with self.lock:
            self.post_s.append(elapsed)
            self.answers.append(Answer(key, response.status_code, job_id, code))
            if job_id is not None:
                self.accepted.append(job_id)

    def _read(self, session: requests.Session) -> None:
        with self.lock:
            if not self.accepted:
                return
            job_id = random.choice(self.accepted)
        started = time.perf_counter()
        response = session.get(f"{self.pool.url}/v1/jobs/{job_id}", timeout=120)
        elapsed = time.perf_counter() - started
        assert response.status_code == 200 and response.json()["id"] == job_id, response.text
        with self.lock:
            self.get_s.append(elapsed)


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_1000_submissions_from_20_clients_are_each_accepted_or_refused_once(
    new_pg_database: Callable[[], str], tmp_path: Path
) -> None:
    with serving(Pool(tmp_path, QAT_DATABASE_URL=new_pg_database()), "--max-queued", str(MAX_QUEUED)) as pool:
        clients = Clients(pool)
        wall_s = clients.run()
        with reading(pool.db()) as session:
            stored = set(map(str, session.scalars(select(Job.id))))
            keys = session.scalar(select(func.count()).select_from(IdempotencyKey))

    answers = clients.answers
    print(
        f"\n{len(answers)} submissions in {wall_s:.1f} s ({len(answers) / wall_s:.0f}/s) from {CLIENTS} clients;"
        f" POST p50 {_percentile(clients.post_s, 0.5) * 1000:.0f} ms p99 {_percentile(clients.post_s, 0.99) * 1000:.0f} ms;"
        f" GET /v1/jobs/{{id}} p50 {_percentile(clients.get_s, 0.5) * 1000:.0f} ms"
        f" p99 {_percentile(clients.get_s, 0.99) * 1000:.0f} ms (n={len(clients.get_s)});"
        f" statuses { {s: sum(a.status == s for a in answers) for s in sorted({a.status for a in answers})} }"
    )
    assert clients.errors == [], clients.errors[:5]
    assert len(answers) == SUBMISSIONS + SUBMISSIONS // RETRY_EVERY, "every submission was answered"
    assert {a.status for a in answers} <= {200, 201, 429}, [a for a in answers if a.status not in (200, 201, 429)][:5]
    assert all(a.code == "QUOTA" for a in answers if a.status == 429)

    by_key: dict[str, set[str]] = defaultdict(set)
    for answer in answers:
        if answer.job_id is not None:
            by_key[answer.key].add(answer.job_id)
    assert all(len(ids) == 1 for ids in by_key.values()), "a key never names two jobs"
    created = [a for a in answers if a.status == 201]
    assert len(created) == len(by_key) == MAX_QUEUED, "the quota admits exactly max_queued jobs, each created once"
    accepted = {job_id for ids in by_key.values() for job_id in ids}
    assert stored == accepted, "no accepted job is lost and no job exists that nobody was told of"
    assert keys == MAX_QUEUED
    replays = [a for a in answers if a.status == 200]
    assert replays and all(a.key in by_key for a in replays), "an idempotent replay names the original job"
    print(f"{len(replays)} idempotent replays answered with the first job; {SUBMISSIONS - MAX_QUEUED} refused by quota")
