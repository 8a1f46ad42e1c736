"""Fixtures of whole deployments and their inputs, for every test folder (a plugin of ``tests/conftest.py``)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.pool import Pool, running


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """The embedded deployment with one worker, shared by a module's tests.

    Starting the processes costs seconds; each test submits its own jobs.
    """
    with running(Pool(tmp_path_factory.mktemp("pool"))) as started:
        yield started


@pytest.fixture
def production_settings(
    new_pg_database: Callable[[], str], redis_url: str, s3_endpoint: str, s3_bucket: str
) -> dict[str, str]:
    """``QAT_*`` settings of the production stack: a new PostgreSQL database, an empty Redis index, a new bucket."""
    return {
        "QAT_DATABASE_URL": new_pg_database(),
        "QAT_BROKER_URL": redis_url,
        "QAT_ARTIFACTS": f"s3://{s3_bucket}/qat",
        "QAT_S3_ENDPOINT_URL": s3_endpoint,
    }


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The digits example's ``model.pt2`` and ``data.npz``, with a briefly trained FP32 model.

    Trained in a fresh interpreter: the test modules import onnxruntime, whose OpenMP
    threads slow torch training in the same process several times over.
    """
    out = tmp_path_factory.mktemp("digits")
    code = f"from quantlib.examples.digits import write_example; write_example({str(out)!r}, epochs=5)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    return out / "model.pt2", out / "data.npz"
