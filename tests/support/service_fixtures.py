"""Fixtures of real backends (PostgreSQL and SQLite databases, artifact stores, API servers), for every test folder.

Registered by ``tests/conftest.py`` as a plugin, so the service, security and client
tests share one copy.

API servers run in the test's process (``support.api_server``); the PostgreSQL databases
and the S3 server come from ``tests/conftest.py``.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from service.api.app import create_app
from service.artifacts import ArtifactStore, LocalStore, S3Store
from service.db import Base, SessionFactory, Team, make_engine, migrate, session_factory
from service.settings import Settings
from service.teams import authenticate, create_team
from support.api_server import ApiServer

BACKENDS = ("sqlite", "postgresql")


# ------------------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def migrated_pg_url(new_pg_database: Callable[[], str]) -> str:
    """One migrated PostgreSQL database shared by the session; tests empty it after use."""
    url = new_pg_database()
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("template") / "qat.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(f"sqlite:///{path}")
    with engine.connect() as connection:  # fold the WAL into the file so a copy is complete
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_db_url(backend: str, new_pg_database: Callable[[], str], tmp_path: Path) -> str:
    """A database with no tables at all, for migration tests."""
    return new_pg_database() if backend == "postgresql" else f"sqlite:///{tmp_path / 'empty.db'}"


@pytest.fixture
def engine(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database of ``backend``, private to the test."""
    if backend == "sqlite":
        path = tmp_path / "qat.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite_template"), path)
        engine = make_engine(f"sqlite:///{path}")
        yield engine
        engine.dispose()
        return
    engine = make_engine(request.getfixturevalue("migrated_pg_url"))
    yield engine
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()


@pytest.fixture
def db(engine: Engine) -> SessionFactory:
    return session_factory(engine)


@pytest.fixture
def make_team(db: SessionFactory) -> Callable[..., Team]:
    """Creates a team (through its first token, so authentication is exercised too)."""

    def make(max_running: int = 2, max_queued: int = 100) -> Team:
        issued = create_team(db, f"team-{uuid.uuid4().hex[:8]}", max_running=max_running, max_queued=max_queued)
        team = authenticate(db, issued.token)
        assert team is not None
        return team

    return make


# ---------------------------------------------------------------------------- storage


@pytest.fixture(params=["local", "s3"])
def artifact_store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """Each store implementation, empty; the S3 one keeps its keys under a prefix."""
    if request.param == "local":
        return LocalStore(tmp_path / "artifacts")
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3Store(request.getfixturevalue("s3_bucket"), "some/prefix", endpoint)


# ------------------------------------------------------------------------ API servers


@pytest.fixture
def make_api(engine: Engine, artifact_store: ArtifactStore, tmp_path: Path) -> Iterator[Callable[..., ApiServer]]:
    """Starts API servers on the test's database and store (or ``store``); ``env`` adds ``QAT_*`` settings."""
    servers: list[ApiServer] = []

    def make(store: ArtifactStore | None = None, **env: str) -> ApiServer:
        base = {
            "QAT_DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "QAT_BROKER_URL": f"filesystem://{tmp_path / 'broker'}",
            "QAT_ARTIFACTS": str(tmp_path / "unused-artifacts"),  # the fixture's store is passed directly
        }
        server = ApiServer(create_app(Settings.from_env({**base, **env}), store=store or artifact_store))
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def api(make_api: Callable[..., ApiServer]) -> ApiServer:
    """An API server with default settings."""
    return make_api()
