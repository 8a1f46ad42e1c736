"""Servers the fault tests break on purpose, and helpers to run the API beside them.

Every server a test stops, kills or fills is the test's own: a ``redis-server``, a
PostgreSQL cluster (``initdb`` into a temporary folder) and a moto S3 server, each on a
free loopback port, never the shared ones on 6379/5432. The deployment itself (API,
dispatcher, workers as ``qat`` processes) is :class:`support.pool.Pool`.
"""

from __future__ import annotations

import functools
import io
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import redis
import requests

from support.layout_only_pt2 import layout_only_pt2
from support.pool import QAT, free_port, wait_for_api


def start(pool: Any, name: str, command: Sequence[str]) -> None:
    """Run ``command`` (a ``qat`` command, maybe behind ``unshare``/``nsenter``) as the pool's process ``name``."""
    log = open(pool.root / f"{name}.log", "wb")  # noqa: SIM115 - Pool.stop closes it
    process = subprocess.Popen(list(command), env=pool.env, stdout=log, stderr=subprocess.STDOUT)
    pool.processes[name] = (process, log)


@contextmanager
def serving(pool: Any, *team_options: str, prefix: Sequence[str] = ()) -> Iterator[Any]:
    """Only the API: migrate, create team ``vision`` (``qat admin create-team`` options), serve, stop at the end."""
    pool.qat("db", "upgrade")
    token = json.loads(pool.qat("admin", "create-team", "vision", *team_options, "--json"))["token"]
    pool.session.headers["Authorization"] = f"Bearer {token}"
    port = free_port()
    pool.url = f"http://127.0.0.1:{port}"
    try:
        start(pool, "api", [*prefix, QAT, "serve", "--port", str(port)])
        wait_for_api(pool)
        yield pool
    finally:
        pool.stop()


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 30, every_s: float = 0.1) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s")
        time.sleep(every_s)


# ------------------------------------------------------------------------------ Redis


class RedisServer:
    """A private ``redis-server`` without persistence: a restart loses every queued message."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - the server writes to it while it runs
        self.process = subprocess.Popen(["redis-server", *args, "--dir", str(self.workdir)], stdout=log, stderr=log)
        log.close()
        client = redis.Redis(port=self.port, socket_timeout=1)
        wait_until(lambda: _answers(client), f"redis-server on port {self.port}")
        client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: nothing is flushed."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


# ------------------------------------------------------------------------- PostgreSQL


def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else name


class PostgresCluster:
    """A throw-away PostgreSQL cluster (trust auth, TCP on loopback only) that a test may restart.

    PostgreSQL refuses to run as root, so as root the cluster belongs to ``postgres``.
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="qat-faults-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        command = [_pg_bin(tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{tool} failed: {done.stdout}\n{done.stderr}"

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends every session (what a restart does); ``immediate`` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------- S3 (moto)


class MotoServer:
    """moto's S3 server on a fixed loopback port, so a test can kill it and clients keep its URL."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, f"moto on port {self.port}")

    def _answers(self) -> bool:
        try:
            requests.get(self.endpoint, timeout=1)
            return True
        except requests.ConnectionError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None


# ---------------------------------------------------------------------------- the job


def tiny_inputs() -> dict[str, tuple[str, bytes]]:
    """A submission's files that pass the API's checks without being a real model: for API-only tests.

    The same bytes on every call (zip entries carry a time stamp), so a retried request is identical.
    """
    model, data = _tiny_files()
    return {"model": ("model.pt2", model), "data": ("data.npz", data)}


@functools.cache
def _tiny_files() -> tuple[bytes, bytes]:
    data = io.BytesIO()
    np.savez(data, x_train=np.zeros((2, 3), np.float32))
    return layout_only_pt2(), data.getvalue()
