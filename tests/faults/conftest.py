"""Fixtures of the fault tests: servers of the test's own to break (``support.fault_servers``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.fault_servers import MotoServer, PostgresCluster, RedisServer


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.process is not None:
        server.kill()


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.remove()


@pytest.fixture
def own_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """A moto server of the test's own, with dummy credentials in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = MotoServer()
    server.start()
    yield server
    if server.process is not None:
        server.kill()


@pytest.fixture(scope="session")
def small_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The digits net untrained (``model.pt2``) and a 256-image slice of its data: the cheapest real job.

    Written in a fresh interpreter so this process never imports torch.
    """
    out = tmp_path_factory.mktemp("small-job")
    code = f"""
import numpy as np
from quantlib.examples.digits import write_example
model, data = write_example({str(out)!r}, epochs=0)
full = dict(np.load(data))
np.savez(data, x_train=full["x_train"][:256], y_train=full["y_train"][:256],
         x_eval=full["x_eval"][:128], y_eval=full["y_eval"][:128])
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    return out / "model.pt2", out / "data.npz"
