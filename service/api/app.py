"""The API's application factory: ``create_app(settings)`` builds one configured Flask app.

Startup fails fast: a bad setting or a schema behind the code's migrations raises
before the app serves anything, with the fix in the message (``qat db upgrade``). This
module and everything it imports is torch-free: the API process never loads torch.
"""

from __future__ import annotations

from flask import Flask

from service.api.datasets import bp as datasets_bp
from service.api.docs import bp as docs_bp
from service.api.errors import register_error_handlers
from service.api.health import bp as health_bp
from service.api.jobs import bp as jobs_bp
from service.api.metrics import install_metrics
from service.api.services import EXTENSION, Services
from service.api.stream_slots import StreamSlots
from service.artifacts import ArtifactStore, store_from_settings
from service.db import make_engine, session_factory
from service.db.migrate import require_current_schema
from service.settings import Settings

# jobs and datasets (authenticated, under /v1), health and docs
BLUEPRINTS = (jobs_bp, datasets_bp, health_bp, docs_bp)

# non-file multipart fields (spec, config sent as text) are held in memory: keep them small
FORM_FIELD_OVERHEAD_BYTES = 64 << 10


def create_app(settings: Settings | None = None, *, store: ArtifactStore | None = None) -> Flask:
    """An app on ``settings`` (default: ``Settings.from_env()``); ``store`` overrides the artifact store."""
    settings = settings or Settings.from_env()
    engine = make_engine(settings.database_url)
    require_current_schema(engine)
    db = session_factory(engine)
    app = Flask(__name__)
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_config_bytes + FORM_FIELD_OVERHEAD_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the schemas' field order
    streams = StreamSlots(settings.max_streams, settings.max_streams_per_team)
    app.extensions[EXTENSION] = Services(settings, engine, db, store or store_from_settings(settings), streams)
    install_metrics(app, db)
    register_error_handlers(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app
