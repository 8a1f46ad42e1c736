"""Prometheus metrics of one app: request counts and latency, jobs by state, queue depth.

Each app gets its own registry, so tests and benchmarks can build several apps in one
process. Job counts are read from the job table when scraped (one GROUP BY), never
kept in memory, so they are right however many API processes run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from service.db import Job, JobState, SessionFactory, reading

REGISTRY_KEY = "qat_metrics"


class JobCollector(Collector):
    """``qat_jobs{state}`` over all teams and ``qat_queue_depth`` (jobs waiting for a worker)."""

    def __init__(self, db: SessionFactory) -> None:
        self._db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with reading(self._db) as session:
            counts = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).tuples().all())
        jobs = GaugeMetricFamily("qat_jobs", "Jobs in the store by state", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], counts.get(state, 0))
        yield jobs
        yield GaugeMetricFamily("qat_queue_depth", "Jobs queued for a worker", value=counts.get(JobState.QUEUED, 0))


def install_metrics(app: Flask, db: SessionFactory) -> None:
    """Count and time every request by route template (not raw path, to keep labels bounded)."""
    registry = CollectorRegistry()
    requests = Counter("qat_http_requests", "HTTP requests", ["method", "endpoint", "status"], registry=registry)
    latency = Histogram(
        "qat_http_request_duration_seconds", "HTTP request latency", ["method", "endpoint"], registry=registry
    )
    registry.register(JobCollector(db))
    app.extensions[REGISTRY_KEY] = registry

    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        started = g.get("request_started")
        if started is not None:
            latency.labels(request.method, endpoint).observe(time.perf_counter() - started)
        requests.labels(request.method, endpoint, str(response.status_code)).inc()
        return response


def render_metrics(app: Flask) -> Response:
    """The Prometheus text exposition of the app's registry."""
    return Response(generate_latest(app.extensions[REGISTRY_KEY]), mimetype=CONTENT_TYPE_LATEST)
