"""The HTTP API's blueprints: jobs and datasets (authenticated, under ``/v1``), health and docs."""

from service.api.datasets import bp as datasets_bp
from service.api.docs import bp as docs_bp
from service.api.health import bp as health_bp
from service.api.jobs import bp as jobs_bp

BLUEPRINTS = (jobs_bp, datasets_bp, health_bp, docs_bp)

__all__ = ["BLUEPRINTS"]
