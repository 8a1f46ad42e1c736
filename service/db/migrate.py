"""Schema migrations in code: ``qat db upgrade`` and the startup check that refuses an old schema.

Processes never create tables themselves; Alembic revisions in ``migrations/`` do, on
PostgreSQL and SQLite alike. The API and workers call :func:`require_current_schema` at
startup so a deploy that forgot to migrate fails with the command to run instead of
with SQL errors on the first request.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

import migrations
from service.errors import SchemaOutOfDate


def alembic_config(url: str | None = None) -> Config:
    """Alembic's configuration without an ini file; ``url`` overrides ``QAT_DATABASE_URL``."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["url"] = url
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Migrate the database at ``url`` (default: the settings') up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    """The revision this code needs."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("migrations/versions holds no revision")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; ``None`` for an empty (never migrated) database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def schema_is_current(engine: Engine) -> bool:
    """Whether the database is at the revision this code needs."""
    return current_revision(engine) == head_revision()


def require_current_schema(engine: Engine) -> None:
    """Raise :class:`SchemaOutOfDate`, saying what to run, unless the schema is current."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at revision {current or 'none (empty database)'}, "
            f"code needs {head}: run `qat db upgrade`"
        )
