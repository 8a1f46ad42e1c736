"""Fixtures of the security tests (the shared backends come from ``tests/conftest.py``'s plugins)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.pool import Pool, running


@pytest.fixture(scope="session")
def sandboxed_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """One embedded deployment for the hostile-model tests: each job gets at most 1 GiB of
    data memory, and the workers' environment carries a made-up secret to look for."""
    from support.untrusted_models import CANARY, CEILING  # torch: only where these tests run

    pool = Pool(tmp_path_factory.mktemp("sandboxed"), QAT_CHILD_MEMORY_BYTES=str(CEILING), AWS_SECRET_ACCESS_KEY=CANARY)
    with running(pool) as started:
        yield started
