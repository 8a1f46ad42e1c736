"""PostgreSQL restarted under traffic: the API answers 503 DATABASE_UNAVAILABLE meanwhile, then recovers by itself.

``qat submit --wait`` on a running job rides the restart out (the client retries 503s).

Also: a server that accepts connections and never answers fails them after the connect
timeout instead of holding API threads.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from service.db import Job, make_engine, reading
from support.fault_servers import PostgresCluster, serving, tiny_inputs, wait_until
from support.pool import QAT, Pool, finished, running

OUTAGE_S = 3.0
CLIENTS = 4


@dataclass(frozen=True)
class Answer:
    at: float
    method: str
    status: int  # 0: no HTTP answer at all (timeout, connection error)
    code: str | None
    retry_after: str | None
    message: str


class Traffic:
    """Clients that keep reading a job and submitting new ones until stopped, recording every answer."""

    def __init__(self, pool: Pool, job_id: str) -> None:
        self.pool, self.job_id = pool, job_id
        self.answers: list[Answer] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._reader) for _ in range(CLIENTS)]
        self.threads.append(threading.Thread(target=self._submitter))

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _session(self) -> requests.Session:
        session = requests.Session()
        session.headers.update(self.pool.session.headers)
        return session

    def _record(self, method: str, send: Callable[[], requests.Response]) -> None:
        try:
            response = send()
        except requests.RequestException as exc:
            self.answers.append(Answer(time.monotonic(), method, 0, None, None, repr(exc)))
            return
        error = response.json().get("error") if response.status_code >= 400 else None
        self.answers.append(
            Answer(
                time.monotonic(),
                method,
                response.status_code,
                error["code"] if error else None,
                response.headers.get("Retry-After"),
                error["message"] if error else "",
            )
        )

    def _reader(self) -> None:
        session = self._session()
        while not self.stopping.is_set():
            self._record("GET", lambda: session.get(f"{self.pool.url}/v1/jobs/{self.job_id}", timeout=15))
            time.sleep(0.02)

    def _submitter(self) -> None:
        session = self._session()
        while not self.stopping.is_set():
            self._record("POST", lambda: session.post(f"{self.pool.url}/v1/jobs", files=tiny_inputs(), timeout=15))
            time.sleep(0.2)

    def gets_after(self, at: float) -> list[Answer]:
        return [a for a in list(self.answers) if a.method == "GET" and a.at > at]


def test_api_answers_503_while_postgresql_restarts_and_recovers_alone(
    own_postgres: PostgresCluster, tmp_path: Path
) -> None:
    pool = Pool(tmp_path, QAT_DATABASE_URL=own_postgres.url)
    with serving(pool):
        created = pool.post("/v1/jobs", files=tiny_inputs())
        assert created.status_code == 201, created.text
        with Traffic(pool, created.json()["id"]) as traffic:
            time.sleep(1.0)
            down = time.monotonic()
            own_postgres.stop("fast")
            time.sleep(OUTAGE_S)
            own_postgres.start()
            up = time.monotonic()
            wait_until(
                lambda: [a.status for a in traffic.gets_after(up)][-3:] == [200] * 3,
                "three successful reads after the restart",
            )
            recovered = min(a.at for a in traffic.gets_after(up) if a.status == 200)
        db = pool.db()
        with reading(db) as session:
            jobs = {str(job_id) for job_id in session.scalars(select(Job.id))}

    answers = traffic.answers
    statuses = {a.status for a in answers}
    print(
        f"\n{len(answers)} requests; outage {up - down:.1f} s; first success {recovered - up:.2f} s after the restart;"
        f" statuses {sorted(statuses)}"
    )
    assert statuses <= {200, 201, 503}, [a for a in answers if a.status not in (200, 201, 503)][:5]
    unavailable = [a for a in answers if a.status == 503]
    assert any(down < a.at < up for a in unavailable), "requests during the outage were answered 503"
    for answer in unavailable:
        assert answer.code == "DATABASE_UNAVAILABLE", answer
        assert answer.retry_after is not None and int(answer.retry_after) > 0, answer
        assert "retry" in answer.message and "127.0.0.1" not in answer.message, answer
    # every accepted submission is a job row with its two inputs; refused ones left no files
    accepted = 1 + sum(1 for a in answers if a.method == "POST" and a.status == 201)
    assert len(jobs) == accepted
    stored = [p for p in (tmp_path / "artifacts" / "jobs").rglob("*") if p.is_file()]
    assert len(stored) == 2 * accepted and {p.parts[-3] for p in stored} == jobs, sorted(map(str, stored))


def test_a_database_that_accepts_and_never_answers_fails_fast_instead_of_hanging() -> None:
    """A half-dead server (the port accepts, nothing answers) must not hold API threads forever."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        engine = make_engine(f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/qat")
        outcome: list[BaseException | None] = []

        def connect() -> None:
            try:
                engine.connect().close()
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                outcome.append(exc)

        attempt = threading.Thread(target=connect, daemon=True)
        started = time.monotonic()
        attempt.start()
        attempt.join(timeout=120)
        print(f"\ngave up after {time.monotonic() - started:.1f} s")
        assert outcome and isinstance(outcome[0], OperationalError), outcome or "still connecting after 120 s"
        assert "timeout" in str(outcome[0]).lower()
        engine.dispose()


def test_qat_submit_wait_rides_out_a_postgresql_restart(
    own_postgres: PostgresCluster, small_job: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = small_job
    with running(Pool(tmp_path, QAT_DATABASE_URL=own_postgres.url)) as pool:
        token = pool.session.headers["Authorization"].removeprefix("Bearer ")
        env = {**os.environ, "QAT_URL": pool.url, "QAT_TOKEN": token}
        command = [QAT, "submit", str(model), "--data", str(data), "--epochs", "150", "--wait", "--json"]
        client = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(
                lambda: any(j["state"] == "RUNNING" for j in pool.get("/v1/jobs").json()["jobs"]), "a running job"
            )
            own_postgres.stop("fast")
            time.sleep(OUTAGE_S)
            own_postgres.start()
            out, err = client.communicate(timeout=300)
        finally:
            client.kill()
        assert client.returncode == 0, err[-2000:]
        job = json.loads(out)
        assert job["state"] == "SUCCEEDED" and finished(job), job
        print(f"\nthe job succeeded on attempt {job['attempt']} across a {OUTAGE_S} s database outage")
