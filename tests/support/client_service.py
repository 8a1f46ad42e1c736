"""The client tests' view of a running embedded deployment, and the job they share."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.local_deployment import QAT, LocalDeployment


@dataclass(frozen=True)
class Service:
    deployment: LocalDeployment
    url: str
    token: str

    def cli(
        self, *args: object, env: dict[str, str] | None = None, timeout_s: float = 180
    ) -> subprocess.CompletedProcess[str]:
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
