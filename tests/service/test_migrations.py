"""Alembic owns the schema: up from empty on both databases, matching the models exactly."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from service.db import Base, make_engine, migrate
from service.errors import SchemaOutOfDate


def test_empty_database_is_refused_with_the_command_to_run(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    assert migrate.current_revision(engine) is None
    assert not migrate.schema_is_current(engine)
    with pytest.raises(SchemaOutOfDate) as info:
        migrate.require_current_schema(engine)
    assert info.value.code == "SCHEMA_OUT_OF_DATE"
    assert info.value.message == (
        f"database schema is at revision none (empty database), code needs {migrate.head_revision()}: "
        "run `qat db upgrade`"
    )
    engine.dispose()


def test_upgrade_from_empty_matches_the_models(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    assert migrate.schema_is_current(engine)
    migrate.require_current_schema(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_downgrade_to_empty_and_back(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    command.downgrade(migrate.alembic_config(empty_db_url), "base")
    assert migrate.current_revision(engine) is None
    migrate.upgrade(empty_db_url)
    assert migrate.schema_is_current(engine)
    engine.dispose()
