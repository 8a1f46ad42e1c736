"""A whole deployment on this machine as real processes: API, dispatcher and workers (one by default).

``qat demo`` and the client tests run the service exactly as an operator would: the
``qat`` console script in separate processes, configured only through ``QAT_*``
variables. With none given, everything lives under ``root`` (a SQLite job store, a
local artifact directory, kombu's filesystem broker); given ``QAT_DATABASE_URL``,
``QAT_BROKER_URL`` and ``QAT_ARTIFACTS``, the same processes use PostgreSQL, Redis and S3.
Whatever was started is stopped by :meth:`LocalDeployment.stop`, also after an error.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

QAT = str(Path(sys.executable).parent / "qat")
SERVICE_SETTINGS = ("QAT_DATABASE_URL", "QAT_BROKER_URL", "QAT_ARTIFACTS")
# passed on when set, no default: the S3-compatible server an s3:// QAT_ARTIFACTS lives on (MinIO)
OPTIONAL_SETTINGS = ("QAT_S3_ENDPOINT_URL",)


class DeploymentError(RuntimeError):
    """A ``qat`` step failed or a process died; the message carries its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def embedded_settings(root: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``QAT_*`` settings: the ones set in ``environ`` win, the rest default to files under ``root``.

    ``OPTIONAL_SETTINGS`` are passed on only when set: the processes get no other ``QAT_*``
    variable, so without this an ``s3://`` store on MinIO would be looked for on AWS.
    """
    env = os.environ if environ is None else environ
    defaults = {
        "QAT_DATABASE_URL": f"sqlite:///{root / 'qat.db'}",
        "QAT_BROKER_URL": f"filesystem://{root / 'broker'}",
        "QAT_ARTIFACTS": str(root / "artifacts"),
    }
    optional = {name: env[name] for name in OPTIONAL_SETTINGS if env.get(name)}
    return {name: env.get(name) or default for name, default in defaults.items()} | optional


class LocalDeployment:
    """Start with :meth:`start` (or ``with``); each process logs to ``root/<name>.log``."""

    def __init__(
        self, root: Path, settings: Mapping[str, str], *, worker_name: str = "local-worker", workers: int = 1
    ) -> None:
        self.root = root
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("QAT_")}, **settings}
        self.worker_name = worker_name
        self.workers = workers
        self.url = ""
        self.processes: dict[str, tuple[subprocess.Popen[bytes], IO[bytes]]] = {}

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def qat(self, *args: str, timeout_s: float = 120) -> str:
        """Run one ``qat`` command to completion with the deployment's settings; its stdout."""
        run = subprocess.run([QAT, *args], env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False)
        if run.returncode != 0:
            raise DeploymentError(f"`qat {' '.join(args)}` exited {run.returncode}:\n{run.stderr[-3000:]}")
        return run.stdout

    def create_team(self, name: str) -> str:
        """A new team's API token."""
        return str(json.loads(self.qat("admin", "create-team", name, "--json"))["token"])

    def start(self, *, ready_timeout_s: float = 60) -> str:
        """Migrate, then start the API, the dispatcher and the workers; the API's URL once it answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.qat("db", "upgrade")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._spawn("api", "serve", "--port", str(port))
        self._spawn("dispatcher", "dispatcher", "--slots", str(self.workers))
        self._spawn("worker", "worker", "--name", self.worker_name)
        for index in range(1, self.workers):
            self._spawn(f"worker-{index}", "worker", "--name", f"{self.worker_name}-{index}")
        self._wait_for_api(ready_timeout_s)
        return self.url

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, (process, _) in self.processes.items()}

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def check_alive(self) -> None:
        """Raise with the log of any process that exited: a dead worker would make a wait hang."""
        for name, (process, _) in self.processes.items():
            if process.poll() is not None:
                raise DeploymentError(f"{name} exited with {process.returncode}:\n{self.log(name)[-3000:]}")

    def stop(self, timeout_s: float = 10) -> None:
        """Terminate every process started here (SIGTERM, then SIGKILL after ``timeout_s``)."""
        for process, _ in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process, log in self.processes.values():
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
        self.processes.clear()

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen([QAT, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = (process, log)

    def _wait_for_api(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        raise DeploymentError(f"the API did not answer within {timeout_s} s:\n{self.log('api')[-3000:]}")
