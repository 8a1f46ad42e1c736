"""A whole deployment as real ``qat`` processes (API, dispatcher, CPU workers), and helpers to drive it.

Everything lives under the test's ``tmp_path``: a SQLite job store, a local artifact
directory and kombu's filesystem broker, configured only through ``QAT_*`` variables,
exactly as an operator would run it.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import requests

from bench.served import free_port
from service.db import SessionFactory, make_engine, session_factory
from workers.protocol import RUNNING_NAME

QAT = str(Path(sys.executable).parent / "qat")
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


class Pool:
    """The running deployment: its environment, its processes and a client for one team."""

    def __init__(self, root: Path, **settings: str) -> None:
        """The embedded default under ``root``; ``settings`` (``QAT_*``) replace any of it."""
        self.root = root
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("QAT_")},
            "QAT_DATABASE_URL": f"sqlite:///{root / 'qat.db'}",
            "QAT_BROKER_URL": f"filesystem://{root / 'broker'}",
            "QAT_ARTIFACTS": str(root / "artifacts"),
            # short, so a worker that stopped heartbeating would lose its job within a test
            "QAT_LEASE_SECONDS": "4",
            # the pool's own temp directory: job work folders can be inspected, none leak out
            "TMPDIR": str(root / "tmp"),
            # each job's child starts at its job: most pools here run a job or two, and a child started
            # ahead costs each worker a start-up it may never use (test_pool.py, test_recovery.py and
            # test_children.py run children started ahead, the default of a deployment)
            "QAT_CHILD_START_AHEAD": "false",
            **settings,
        }
        (root / "tmp").mkdir(exist_ok=True)
        self.processes: dict[str, tuple[subprocess.Popen[bytes], IO[bytes]]] = {}
        self.url = ""
        self.session = requests.Session()

    def as_team(self, name: str) -> Pool:
        """The same deployment seen through a new team ``name``'s token (created here)."""
        other = copy.copy(self)
        other.session = requests.Session()
        token = json.loads(self.qat("admin", "create-team", name, "--json"))["token"]
        other.session.headers["Authorization"] = f"Bearer {token}"
        return other

    def qat(self, *args: str) -> str:
        run = subprocess.run([QAT, *args], env=self.env, capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 0, run.stderr
        return run.stdout

    def start(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen([QAT, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = (process, log)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def db(self) -> SessionFactory:
        """The job store the processes use, for checks the HTTP API does not expose."""
        return session_factory(make_engine(self.env["QAT_DATABASE_URL"]))

    def crash(self, name: str) -> None:
        """SIGKILL process ``name`` as a machine crash would; it no longer counts as running."""
        process, log = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        log.close()

    def stop(self) -> None:
        """SIGTERM to the API and the dispatcher, as an operator stops them; SIGKILL to the workers, whose
        shutdown no test here is about: Celery's warm (and cold) shutdown first waits out its broker poll,
        3-4 s a worker (or a whole job), a minute of the suite. A job's sandbox dies with its worker."""
        for name, (process, _) in self.processes.items():
            if name.startswith("worker"):
                process.kill()
            else:
                process.terminate()
        for process, log in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.post(self.url + path, timeout=60, **kwargs)

    def wait_for_job(self, job_id: str, until: Any, timeout_s: float = 180) -> dict[str, Any]:
        """Poll ``GET /v1/jobs/{id}`` until ``until(job)`` holds; fail with the process logs otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.get(f"/v1/jobs/{job_id}").json()
            if until(job):
                return job
            for name, (process, _) in self.processes.items():
                assert process.poll() is None, f"{name} exited:\n{self.log(name)}"
            time.sleep(0.2)
        logs = "\n".join(f"--- {name}\n{self.log(name)[-3000:]}" for name in self.processes)
        raise AssertionError(f"job {job_id} did not get there in {timeout_s} s: {job}\n{logs}")


@contextmanager
def running(pool: Pool, workers: int = 1) -> Iterator[Pool]:
    """Migrate the database, create a team, then run the API, the dispatcher and ``workers`` CPU workers."""
    pool.qat("db", "upgrade")
    token = json.loads(pool.qat("admin", "create-team", "vision", "--json"))["token"]
    pool.session.headers["Authorization"] = f"Bearer {token}"
    port = free_port()
    pool.url = f"http://127.0.0.1:{port}"
    try:
        pool.start("api", "serve", "--port", str(port))
        pool.start("dispatcher", "dispatcher", "--slots", str(workers))
        for index in range(workers):
            pool.start(f"worker-{index}", "worker", "--name", f"test-worker-{index}")
        wait_for_api(pool)
        yield pool
    finally:
        pool.stop()


def wait_for_api(pool: Pool, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            pool.get("/healthz")
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(f"the API did not answer within {timeout_s} s:\n{pool.log('api')}")


def submit(
    pool: Pool, digits: tuple[Path, Path], spec: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> str:
    """Submit the digits model and data with ``spec`` (and ``config``); returns the job id."""
    model, data = digits
    form = {"spec": json.dumps(spec)}
    if config is not None:
        form["config"] = json.dumps(config)
    files = {"model": ("model.pt2", model.read_bytes()), "data": ("data.npz", data.read_bytes())}
    created = pool.post("/v1/jobs", data=form, files=files)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def finished(job: Mapping[str, Any]) -> bool:
    return job["state"] in TERMINAL


def child_pids(pid: int) -> list[int]:
    """The direct children of process ``pid`` (Linux ``/proc``)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``: a jailed job's Python runs under bubblewrap's own processes."""
    found, frontier = [], [pid]
    while frontier:
        children = child_pids(frontier.pop())
        found += children
        frontier += children
    return found


def job_processes(worker_pid: int, name: str = RUNNING_NAME) -> list[int]:
    """The pipeline processes under worker ``worker_pid`` that run a job (``WAITING_NAME``: that wait for one)."""
    found = []
    for pid in descendants(worker_pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                found.append(pid)
        except OSError:  # exited while we looked
            continue
    return found
