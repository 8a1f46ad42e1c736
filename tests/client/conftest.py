"""One real embedded deployment for the client tests, shared by the package's modules.

:class:`workers.local_deployment.LocalDeployment` (what ``qat demo`` runs) starts the
API, the dispatcher and a CPU worker as ``qat`` processes under a temporary folder,
ignoring any ``QAT_*`` settings of the machine. One digits job is run once through
``qat submit --wait --download`` and shared; tests that need more submit their own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.client_service import Finished, Service
from workers.local_deployment import LocalDeployment, embedded_settings


@pytest.fixture(scope="package")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("deployment")
    with LocalDeployment(root, embedded_settings(root, {}), worker_name="client-test-worker") as deployment:
        url = deployment.start()
        yield Service(deployment, url, deployment.create_team("client-tests"))


@pytest.fixture(scope="package")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The digits example (briefly trained), written by a fresh interpreter as in tests/workers."""
    out = tmp_path_factory.mktemp("digits")
    code = f"from quantlib.examples.digits import write_example; write_example({str(out)!r}, epochs=3)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    return out / "model.pt2", out / "data.npz"


@pytest.fixture(scope="package")
def finished(service: Service, digits: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Finished:
    model, data = digits
    folder = tmp_path_factory.mktemp("download")
    run = service.cli(
        "submit", model, "--data", data, "--epochs", 1, "--device", "auto", "--wait", "--download", folder, "--json"
    )
    assert run.returncode == 0, f"{run.stderr}\n--- worker\n{service.deployment.log('worker')[-3000:]}"
    return Finished(json.loads(run.stdout), folder)
