"""The service under a burst of small jobs: PostgreSQL, Redis, the API, the dispatcher
and two CPU workers, all as ``qat`` processes configured by ``QAT_*`` variables.

Four teams submit their share of the jobs at once, each from its own thread, while a
poller per team reads its jobs' status until every job has ended (or the deadline
passed). Reported: API latency of submit and status (p50/p99), jobs per minute, queue
wait per team (the dispatcher's round robin should keep them level) and the
pipeline's overhead: a job's wall time on a worker minus the compute inside its
child (calibrating, training, exporting, evaluating). The database is dropped, the
Redis DB flushed and every process stopped, also after an error.
Run alone: ``python -m bench.service_throughput --jobs 40``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
import requests

from bench.api_latency import database, percentiles, tiny_inputs
from workers.local_deployment import LocalDeployment

TEAMS = ("vision", "speech", "search", "ads")
WORKERS = 2
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
COMPUTE_PHASES = ("calibrating", "training", "exporting", "evaluating")
REDIS = "redis://127.0.0.1:6379"
PAGE_SIZE = 100


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def summarise(
    jobs: list[dict[str, Any]], team_of: dict[str, str], submit_s: list[float], status_s: list[float]
) -> dict[str, Any]:
    """The numbers a person reads, from the jobs' final JSON as the API returned it."""
    done = [job for job in jobs if job["state"] == "SUCCEEDED"]
    waits: dict[str, list[float]] = {team: [] for team in TEAMS}
    overheads, child_startup = [], []
    for job in done:
        waits[team_of[job["id"]]].append(_seconds(job["created_at"], job["started_at"]))
        timings = job["metrics"]["timings_s"]
        compute = sum(timings.get(phase, 0.0) for phase in COMPUTE_PHASES)
        overheads.append(_seconds(job["started_at"], job["finished_at"]) - compute)
        child_startup.append(timings["pipeline"] - compute - timings.get("loading", 0.0))
    span = (
        _seconds(min(job["created_at"] for job in jobs), max(job["finished_at"] for job in done))
        if done
        else float("nan")
    )
    return {
        "ended": len(jobs),
        "succeeded": len(done),
        "states": {state: sum(job["state"] == state for job in jobs) for state in {job["state"] for job in jobs}},
        "failures": sorted(
            {f"{job['failure']['code']}: {job['failure']['message'][:160]}" for job in jobs if job["failure"]}
        ),
        "jobs_per_minute": round(60 * len(done) / span, 1) if done else 0.0,
        "submit": {"count": len(submit_s), **percentiles(submit_s)},
        "status": {"count": len(status_s), **percentiles(status_s)},
        "queue_wait_s": {
            team: {"median": round(statistics.median(w), 1), "max": round(max(w), 1)} if w else None
            for team, w in waits.items()
        },
        "overhead_s": {
            "median_per_job": round(statistics.median(overheads), 2) if overheads else None,
            "child_startup_median": round(statistics.median(child_startup), 2) if child_startup else None,
            "what": "worker wall time (started_at to finished_at) minus the child's calibrating, training, "
            "exporting and evaluating; child_startup: interpreter start-up, imports and reading inputs",
        },
    }


def _submit_all(
    url: str, token: str, count: int, files: dict[str, Any], latencies: list[float], ids: list[str]
) -> None:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"
        for _ in range(count):
            began = time.perf_counter()
            response = session.post(f"{url}/v1/jobs", files=files, timeout=60)
            latencies.append(time.perf_counter() - began)
            response.raise_for_status()
            ids.append(response.json()["id"])


def _poll_all(
    url: str,
    token: str,
    ids: list[str],
    expected: int,
    deadline: float,
    latencies: list[float],
    final: dict[str, dict[str, Any]],
) -> None:
    """Until all ``expected`` jobs have ended (or the deadline): every second read one open
    job's status, timed (what a client waiting on a job does), and collect the ended jobs
    from the team's job list, a page request instead of one request per job, so the
    polling does not take the CPU the workers need."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"
        while time.monotonic() < deadline:
            open_ids = [job_id for job_id in list(ids) if job_id not in final]
            if not open_ids and len(ids) == expected:
                return
            if open_ids:
                began = time.perf_counter()
                session.get(f"{url}/v1/jobs/{open_ids[0]}", timeout=60).raise_for_status()
                latencies.append(time.perf_counter() - began)
            for job in _team_jobs(session, url):
                if job["state"] in TERMINAL:
                    final[job["id"]] = job
            time.sleep(1.0)


def _team_jobs(session: requests.Session, url: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    params: dict[str, Any] = {"page_size": PAGE_SIZE}
    while True:
        page = session.get(f"{url}/v1/jobs", params=params, timeout=60)
        page.raise_for_status()
        body = page.json()
        jobs += body["jobs"]
        if not body["next_page_token"]:
            return jobs
        params["page_token"] = body["next_page_token"]


def _empty_redis_db() -> str:
    """An index of the local Redis that holds no keys, tried in random order (others use some)."""
    for index in random.sample(range(1, 16), 15):
        with redis.Redis.from_url(f"{REDIS}/{index}") as client:
            if client.dbsize() == 0:
                return f"{REDIS}/{index}"
    raise RuntimeError("every Redis database index 1-15 holds keys; free one for the benchmark")


def measure(jobs: int, deadline_s: float = 480, *, start_ahead: bool = True) -> dict[str, Any]:
    """Submit ``jobs`` small jobs split over four teams; wait for them (at most ``deadline_s``).

    ``start_ahead``: workers start each job's child ahead of its job (``QAT_CHILD_START_AHEAD``,
    the default); ``False`` measures a child started when its job arrives, for comparison.
    """
    model, data = tiny_inputs()
    files = {"model": ("m.pt2", model), "data": ("d.npz", data), "spec": (None, '{"epochs": 1, "batch_size": 8}')}
    broker = _empty_redis_db()
    per_team = [jobs // len(TEAMS) + (i < jobs % len(TEAMS)) for i in range(len(TEAMS))]
    submit_s: list[float] = []
    status_s: list[float] = []
    final: dict[str, dict[str, Any]] = {}
    ids: dict[str, list[str]] = {team: [] for team in TEAMS}
    started = time.monotonic()
    with database() as url, tempfile.TemporaryDirectory() as tmp:
        settings = {
            "QAT_DATABASE_URL": url,
            "QAT_BROKER_URL": broker,
            "QAT_ARTIFACTS": str(Path(tmp) / "artifacts"),
            "QAT_CHILD_START_AHEAD": str(start_ahead).lower(),
        }
        try:
            with LocalDeployment(Path(tmp) / "pool", settings, worker_name="bench-worker", workers=WORKERS) as pool:
                tokens = {
                    team: json.loads(pool.qat("admin", "create-team", team, "--max-queued", str(jobs), "--json"))[
                        "token"
                    ]
                    for team in TEAMS
                }
                base = pool.start()
                deadline = time.monotonic() + deadline_s
                threads = [
                    threading.Thread(target=_submit_all, args=(base, tokens[team], n, files, submit_s, ids[team]))
                    for team, n in zip(TEAMS, per_team, strict=True)
                ] + [
                    threading.Thread(
                        target=_poll_all, args=(base, tokens[team], ids[team], n, deadline, status_s, final)
                    )
                    for team, n in zip(TEAMS, per_team, strict=True)
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                pool.check_alive()
        finally:
            redis.Redis.from_url(broker).flushdb()
    team_of = {job_id: team for team, team_ids in ids.items() for job_id in team_ids}
    unfinished = sum(len(team_ids) for team_ids in ids.values()) - len(final)
    summary = summarise(list(final.values()), team_of, submit_s, status_s)
    summary.update(
        submitted=len(team_of),
        unfinished_at_deadline=unfinished,
        wall_s=round(time.monotonic() - started, 1),
        workers=WORKERS,
        child_start_ahead=start_ahead,
    )
    return {
        "summary": summary,
        "setup": "qat serve + dispatcher + 2 workers, PostgreSQL, Redis broker, local artifacts",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="throughput and fairness of the job service")
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--cold", action="store_true", help="start each job's child when its job arrives")
    args = parser.parse_args()
    print(json.dumps(measure(args.jobs, start_ahead=not args.cold), indent=2))


if __name__ == "__main__":
    main()
