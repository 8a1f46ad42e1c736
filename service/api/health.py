"""Probes for orchestrators and Prometheus; unauthenticated and cheap."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from service.api.metrics import render_metrics
from service.api.operations import Answer, Operation, documented
from service.api.readiness import readiness
from service.api.schemas import HealthOut
from service.api.services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@documented(Operation("Liveness", {200: Answer("up", HealthOut)}, public=True))
def healthz() -> dict[str, object]:
    """The process answers: nothing else is checked, so a slow database does not get it restarted."""
    return HealthOut(status="ok").model_dump()


@bp.get("/readyz")
@documented(
    Operation(
        "Readiness: database, broker and storage reachable",
        {200: Answer("ready", HealthOut), 503: Answer("not ready", HealthOut)},
        public=True,
    )
)
def readyz() -> tuple[dict[str, object], int]:
    """Ready to take traffic: database, broker and artifact store all reachable (else 503)."""
    checks = readiness(services())
    ready = all(result == "ok" for result in checks.values())
    return HealthOut(status="ok" if ready else "unavailable", checks=checks).model_dump(), 200 if ready else 503


@bp.get("/metrics")
@documented(Operation("Prometheus metrics", {200: Answer("text exposition format", media="text/plain")}, public=True))
def metrics() -> Response:
    return render_metrics(current_app)
