"""One real embedded deployment for the client tests, shared by the package's modules.

:class:`workers.local_deployment.LocalDeployment` (what ``qat demo`` runs) starts the
API, the dispatcher and a CPU worker as ``qat`` processes under a temporary folder,
ignoring any ``QAT_*`` settings of the machine. One digits job is run once through
``qat submit --wait --download`` and shared; tests that need more submit their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from workers.local_deployment import QAT, LocalDeployment, embedded_settings


@dataclass(frozen=True)
class Service:
    deployment: LocalDeployment
    url: str
    token: str

    def cli(self, *args: object, env: dict[str, str] | None = None, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
        """Run ``qat ARGS`` as a user would, with ``QAT_URL``/``QAT_TOKEN`` set unless ``env`` is given."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith("QAT_")}
        environ |= {"QAT_URL": self.url, "QAT_TOKEN": self.token} if env is None else env
        return subprocess.run(
            [QAT, *map(str, args)], env=environ, capture_output=True, text=True, timeout=timeout_s, check=False
        )


@dataclass(frozen=True)
class Finished:
    """The shared job: ``qat submit --wait --download --json``'s output and download folder."""

    job: dict[str, Any]
    folder: Path


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
    run = service.cli("submit", model, "--data", data, "--epochs", 1, "--wait", "--download", folder, "--json")
    assert run.returncode == 0, f"{run.stderr}\n--- worker\n{service.deployment.log('worker')[-3000:]}"
    return Finished(json.loads(run.stdout), folder)
