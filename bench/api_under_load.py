"""Short requests while the API holds hundreds of event streams and slow connections.

One team opens ``streams`` event streams on a queued job and ``slow`` connections that
send a header byte a second and never finish their head (a slowloris); meanwhile
another team polls ``GET /v1/jobs`` and ``/healthz`` one request at a time. The poller's
latency is measured first on the quiet server and then under that load, in one run, so
the ratio is what the load costs. Three more teams' streams are watched while their tokens
are revoked: how long until each stream says so (opened a fraction of the 2 s token
re-check apart, so the worst phase is among them). ``qat serve`` runs as a process on a fresh
PostgreSQL database. ``tests/service/test_server.py`` holds the same figures to bounds.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import requests

from bench.api_latency import database, percentiles
from bench.served import served_api
from service.api.events import REAUTH_S
from service.db import SessionFactory, make_engine, session_factory
from service.jobs import JobInputs, create_job
from service.teams import authenticate, create_team, revoke_token


def measure(streams: int = 200, slow: int = 300, seconds: float = 8.0) -> dict[str, Any]:
    """The figures of the module docstring, on a server of its own."""
    with database() as url, tempfile.TemporaryDirectory() as folder:
        engine = make_engine(url)
        env = {"QAT_DATABASE_URL": url, "QAT_ARTIFACTS": folder, "QAT_BROKER_URL": f"filesystem://{folder}/broker"}
        try:
            with served_api(env, Path(folder) / "serve.log") as base:
                return under_load(base, session_factory(engine), streams=streams, slow=slow, seconds=seconds)
        finally:
            engine.dispose()


REVOKED_PHASES = 3


def under_load(base: str, db: SessionFactory, *, streams: int, slow: int, seconds: float) -> dict[str, Any]:
    """Quiet and loaded latency of another team's polls, and the revoked stream's end, against ``base``."""
    port = int(base.rsplit(":", 1)[1])
    streamer, poller = (create_team(db, f"{role}-{uuid.uuid4().hex[:6]}") for role in ("a", "b"))
    revoked = [create_team(db, f"c{phase}-{uuid.uuid4().hex[:6]}") for phase in range(REVOKED_PHASES)]
    quiet = poll(base, poller.token, seconds / 2)
    with hostile_load(port, streamer.token, queued_job(db, streamer.token), streams, slow), ExitStack() as watching:
        ended = []
        for index, team in enumerate(revoked):
            if index:  # a fraction of the re-check period apart: each is revoked at another phase of it
                time.sleep(REAUTH_S / REVOKED_PHASES)
            sock = open_stream(port, team.token, queued_job(db, team.token))
            ended.append(watching.enter_context(watched_until_end(sock)))
        loaded = poll(base, poller.token, seconds, midway=lambda: [revoke_token(db, team.prefix) for team in revoked])
    ends_s = [round(at[0] - loaded["midway_at"], 2) for at in ended]
    return {
        "streams": streams,
        "slow_connections": slow,
        "quiet": quiet,
        "loaded": loaded,
        "jobs_p99_ratio": round(loaded["jobs"]["p99_ms"] / quiet["jobs"]["p99_ms"], 2),
        "revoked_stream_end_s": max(ends_s),
        "revoked_stream_ends_s": ends_s,
    }


def queued_job(db: SessionFactory, token: str) -> uuid.UUID:
    """A job row that stays QUEUED (no worker runs here): something for streams to watch."""
    inputs = JobInputs(
        model_key="jobs/x/inputs/model.pt2",
        model_sha256="0" * 64,
        spec={},
        data_key="jobs/x/inputs/data.npz",
        data_sha256="0" * 64,
    )
    team = authenticate(db, token)
    if team is None:
        raise RuntimeError("the team's token does not authenticate")
    return create_job(db, team.id, inputs, max_attempts=1).id


def open_stream(port: int, token: str, job_id: uuid.UUID) -> socket.socket:
    """An event stream on a raw socket, once its ``200`` has arrived."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    status = sock.recv(12)
    if status != b"HTTP/1.1 200":
        raise RuntimeError(f"the event stream was refused: {status!r}")
    return sock


@contextmanager
def hostile_load(port: int, token: str, job_id: uuid.UUID, streams: int, slow: int) -> Iterator[None]:
    """``streams`` open event streams and ``slow`` connections dribbling a header byte a second."""
    opened = [open_stream(port, token, job_id) for _ in range(streams)]
    dribbling = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(slow)]
    stop = threading.Event()

    def dribble() -> None:
        for sock in dribbling:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nX")
        while not stop.wait(1.0):
            for sock in dribbling:
                try:
                    sock.sendall(b"x")
                except OSError:  # the server gave up on it (408): that is its job
                    pass

    dribbler = threading.Thread(target=dribble, daemon=True)
    dribbler.start()
    try:
        yield
    finally:
        stop.set()
        dribbler.join(timeout=10)
        for sock in [*opened, *dribbling]:
            sock.close()


def poll(base: str, token: str, seconds: float, midway: Callable[[], object] | None = None) -> dict[str, Any]:
    """``GET /v1/jobs`` then ``/healthz``, one at a time for ``seconds``; ``midway`` is called halfway."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    samples: dict[str, list[float]] = {"jobs": [], "healthz": []}
    began = time.monotonic()
    midway_at = None
    while time.monotonic() - began < seconds:
        for name, path in (("jobs", "/v1/jobs"), ("healthz", "/healthz")):
            started = time.monotonic()
            response = session.get(f"{base}{path}", timeout=30)
            samples[name].append(time.monotonic() - started)
            if response.status_code != 200:
                raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:200]}")
        if midway is not None and midway_at is None and time.monotonic() - began >= seconds / 2:
            midway()
            midway_at = time.monotonic()
    return {"midway_at": midway_at, **{name: summary(values) for name, values in samples.items()}}


def summary(latencies: list[float]) -> dict[str, Any]:
    return {"requests": len(latencies), **percentiles(latencies)}


@contextmanager
def watched_until_end(sock: socket.socket, timeout_s: float = 30) -> Iterator[list[float]]:
    """Read the stream on a thread; the list holds when (``time.monotonic()``) it sent its ``end``
    for a revoked token, once the block has finished."""
    ended: list[float] = []

    def watch() -> None:
        received = b""
        while b'"reason":"unauthenticated"' not in received:
            chunk = sock.recv(65536)
            if not chunk:
                return
            received += chunk
        ended.append(time.monotonic())

    sock.settimeout(timeout_s)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield ended
        watcher.join(timeout=timeout_s)
        if not ended:
            raise RuntimeError("the revoked token's stream did not send its end event")
    finally:
        sock.close()
