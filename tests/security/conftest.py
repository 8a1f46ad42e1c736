"""Fixtures for the security tests, borrowed from the service and worker test folders.

pytest only offers a conftest's fixtures below its own folder, so the two conftest
modules are loaded here under their own names and their fixtures re-exported: the
security tests run against the same real servers (waitress, PostgreSQL or SQLite, the
embedded worker pool) as the rest of the suite, without a second copy of that code.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


service_fixtures = _load("service_fixtures", TESTS / "service" / "conftest.py")
worker_fixtures = _load("worker_fixtures", TESTS / "workers" / "conftest.py")

# re-exported fixtures (pytest finds fixtures among a conftest's attributes)
migrated_pg_url = service_fixtures.migrated_pg_url
migrated_sqlite_template = service_fixtures.migrated_sqlite_template
backend = service_fixtures.backend
engine = service_fixtures.engine
db = service_fixtures.db
artifact_store = service_fixtures.artifact_store
make_api = service_fixtures.make_api
api = service_fixtures.api
digits = worker_fixtures.digits
production_settings = worker_fixtures.production_settings


@pytest.fixture(scope="session")
def sandboxed_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One embedded deployment for the hostile-model tests: each job gets at most 1 GiB of
    data memory, and the workers' environment carries a made-up secret to look for."""
    from untrusted_models import CANARY, CEILING

    pool = worker_fixtures.Pool(
        tmp_path_factory.mktemp("sandboxed"), QAT_CHILD_MEMORY_BYTES=str(CEILING), AWS_SECRET_ACCESS_KEY=CANARY
    )
    with worker_fixtures.running(pool) as started:
        yield started
