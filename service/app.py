"""The API's application factory: ``create_app(settings)`` builds one configured Flask app.

Startup fails fast: a bad setting or a schema behind the code's migrations raises
before the app serves anything, with the fix in the message (``qat db upgrade``). This
module and everything it imports is torch-free: the API process never loads torch.
"""

from __future__ import annotations

from flask import Flask

from service.api import BLUEPRINTS
from service.db import make_engine, session_factory
from service.http_errors import register_error_handlers
from service.metrics import install_metrics
from service.migrate import require_current_schema
from service.services import EXTENSION, Services
from service.settings import Settings
from service.storage import ArtifactStore, store_from_settings
from service.stream_slots import StreamSlots

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
