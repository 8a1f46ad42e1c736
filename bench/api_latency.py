"""API latency under load: p50/p99 of ``GET /v1/jobs/{id}`` and of a small ``POST /v1/jobs``.

Starts ``qat serve`` (gevent) on loopback against a fresh PostgreSQL database and a
temporary local artifact directory, then drives it from 50 client threads, each with
its own keep-alive connection. The server is a separate process, so the clients' GIL
does not slow it down. Run: ``python -m bench.api_latency``; the database is dropped
afterwards. Results go to stdout and ``bench/results/api_latency.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import requests
import torch

from bench.served import served_api
from service.db import make_engine, migrate, session_factory
from service.teams import create_team

RESULTS = Path(__file__).parent / "results" / "api_latency.json"
ADMIN_URL = os.environ.get("QAT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
Call = Callable[[requests.Session], requests.Response]


def main() -> None:
    parser = argparse.ArgumentParser(description="p50/p99 latency of the job API under concurrent clients")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--gets", type=int, default=40, help="GET requests per client")
    parser.add_argument("--posts", type=int, default=10, help="POST requests per client")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    model, data = tiny_inputs()
    files = {"model": ("m.pt2", model), "data": ("d.npz", data), "spec": (None, '{"epochs": 1, "batch_size": 8}')}
    with database() as url, tempfile.TemporaryDirectory() as artifacts:
        engine = make_engine(url)
        token = create_team(session_factory(engine), "bench", max_queued=10**9).token
        engine.dispose()
        env = {
            "QAT_DATABASE_URL": url,
            "QAT_ARTIFACTS": artifacts,
            "QAT_BROKER_URL": f"filesystem://{artifacts}/broker",
        }
        with served_api(env, Path(artifacts) / "serve.log") as base:
            auth = {"Authorization": f"Bearer {token}"}
            job_id = requests.post(f"{base}/v1/jobs", files=files, headers=auth, timeout=30).json()["id"]
            get_job = _load(args.clients, args.gets, auth, lambda s: s.get(f"{base}/v1/jobs/{job_id}", timeout=30))
            post_job = _load(
                args.clients, args.posts, auth, lambda s: s.post(f"{base}/v1/jobs", files=files, timeout=30)
            )
    results = {
        "clients": args.clients,
        "server": "qat serve (gevent), PostgreSQL, local artifact store, loopback",
        "request_bytes": {"model": len(model), "data": len(data)},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "get_job": get_job,
        "post_job": post_job,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name in ("get_job", "post_job"):
        row = results[name]
        print(f"{name}: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms", end=" ")
        print(f"({row['requests']} requests, {row['rps']} req/s)")
    print(f"results: {args.out}")


def _load(clients: int, per_client: int, headers: dict[str, str], call: Call) -> dict[str, Any]:
    """Run ``call`` ``per_client`` times on each of ``clients`` threads at once; latency percentiles."""
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client() -> None:
        with requests.Session() as session:
            session.headers.update(headers)
            start.wait()
            mine, bad = [], []
            for _ in range(per_client):
                began = time.perf_counter()
                response = call(session)
                mine.append(time.perf_counter() - began)
                if response.status_code >= 300:
                    bad.append(response.status_code)
        with lock:
            latencies.extend(mine)
            failures.extend(bad)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. HTTP {failures[0]}")
    return {"requests": len(latencies), **percentiles(latencies), "rps": round(len(latencies) / elapsed, 1)}


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50/p99/max in milliseconds; with fewer than two samples every cut is that sample."""
    if len(latencies) < 2:
        value = round(1000 * latencies[0], 1) if latencies else float("nan")
        return {"p50_ms": value, "p99_ms": value, "max_ms": value}
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "p50_ms": round(cuts[49] * 1000, 1),
        "p99_ms": round(cuts[98] * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
    }


def tiny_inputs() -> tuple[bytes, bytes]:
    """A one-layer ``.pt2`` and an eight-sample ``.npz``: the smallest realistic submission."""
    model = io.BytesIO()
    batch = {0: torch.export.Dim("batch", min=1, max=4096)}
    # a layer of its own (a root module that is itself the Linear has no layer name to configure)
    net = torch.nn.Sequential(torch.nn.Linear(4, 2)).eval()
    program = torch.export.export(net, (torch.randn(2, 4),), dynamic_shapes=(batch,))
    torch.export.save(program, model)
    data = io.BytesIO()
    np.savez(data, x_train=np.zeros((8, 4), np.float32), y_train=np.zeros(8, np.int64))
    return model.getvalue(), data.getvalue()


@contextmanager
def database() -> Iterator[str]:
    """A migrated, empty PostgreSQL database, dropped on exit."""
    name = f"qat_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
