"""Servers every test folder may need: PostgreSQL databases and an S3-compatible server.

PostgreSQL is the server already running on this machine (``QAT_TEST_POSTGRES_URL``,
default ``postgresql://postgres@127.0.0.1:5432/postgres``); each test session creates
its own databases there and drops them at the end. The S3 server is moto's, started on
a free loopback port for the session.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
import redis

from bench.served import free_port
from service.artifacts import S3Store

ADMIN_URL = os.environ.get("QAT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = "redis://127.0.0.1:6379"
# fixtures every folder shares: databases, stores and API servers; whole deployments
pytest_plugins = ("support.service_fixtures", "support.pool_fixtures")


@pytest.fixture(scope="session")
def new_pg_database() -> Iterator[Callable[[], str]]:
    """Makes empty PostgreSQL databases (``qat_test_<random>``) and drops them all at the end."""
    created: list[str] = []

    def make() -> str:
        name = f"qat_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    yield make
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        for name in created:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, with dummy credentials in the environment."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        try:
            _wait_until_answering(endpoint, server)
            yield endpoint
        finally:
            server.terminate()
            server.wait(timeout=10)


def _wait_until_answering(endpoint: str, server: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"moto server exited with status {server.returncode}")
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # an HTTP answer, even an error, means it is serving
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server did not answer on {endpoint} within {timeout_s} s")


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A new, empty bucket for the test."""
    name = f"qat-{uuid.uuid4().hex[:12]}"
    S3Store(name, endpoint_url=s3_endpoint).client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def redis_url() -> Iterator[str]:
    """An empty database index of the local Redis, flushed again afterwards (never one in use).

    Indexes are tried in random order so concurrent test sessions rarely pick the same one.
    """
    for index in random.sample(range(1, 16), 15):
        client = redis.Redis.from_url(f"{REDIS}/{index}")
        if client.dbsize() == 0:
            break
    else:
        pytest.fail("every Redis database index 1-15 holds keys; free one for the tests")
    client.flushdb()
    try:
        yield f"{REDIS}/{index}"
    finally:
        client.flushdb()
        client.close()
