"""Alembic environment: migrates the database named by ``service.db.migrate`` or by the settings.

There is no ``alembic.ini``: ``service.db.migrate`` builds the configuration in code and
passes the URL in ``config.attributes["url"]`` (kept out of the ini parser, which would
choke on ``%`` in an encoded password). Without it, ``QAT_DATABASE_URL`` decides. SQLite
runs in batch mode because it cannot ALTER most things in place.
"""

from __future__ import annotations

from alembic import context

from service.db import Base, make_engine
from service.settings import Settings

config = context.config
if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run `qat db upgrade` against the database")

url = config.attributes.get("url") or Settings.from_env().database_url
engine = make_engine(url)
try:
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
finally:
    engine.dispose()
