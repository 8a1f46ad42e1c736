"""Engines and sessions for the job store, tuned per backend.

SQLite is the embedded default shared by an API process and several worker processes,
so it runs in WAL mode (readers never block the writer), with foreign keys on and a busy
timeout. Its write transactions start with ``BEGIN IMMEDIATE``: a deferred transaction
that reads and then writes fails at once with "database is locked" when another writer
got there first, while an immediate one waits its turn. Read-only transactions stay
deferred so API reads never queue behind workers' heartbeats.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

SessionFactory = sessionmaker[Session]

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 5
_WRITE = "qat_write"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; ``postgresql://`` uses psycopg 3, a SQLite file's folder is created."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        # pre-ping: a connection the server dropped (restart) is replaced, not handed out;
        # connect timeout: a server that accepts and never answers fails the request with a 503, not a hang
        return create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S})
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN instead of the driver's own implicit one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    mode = "IMMEDIATE" if connection.get_execution_options().get(_WRITE) else "DEFERRED"
    connection.exec_driver_sql(f"BEGIN {mode}")


def session_factory(engine: Engine) -> SessionFactory:
    """Sessions whose objects stay readable after commit, so store functions can return them."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def reading(db: SessionFactory) -> Iterator[Session]:
    """One read-only transaction."""
    with db.begin() as session:
        yield session


@contextmanager
def writing(db: SessionFactory) -> Iterator[Session]:
    """One write transaction, committed on success and rolled back on error.

    On SQLite it takes the write lock up front (``BEGIN IMMEDIATE``); on PostgreSQL rows
    are locked by the statements themselves (``SELECT ... FOR UPDATE``, conditional UPDATE).
    """
    with db.begin() as session:
        session.connection(execution_options={_WRITE: True})
        yield session
