"""The HTTP server ``qat serve`` runs (gevent), under clumsy and hostile connections.

Each test starts the real process on loopback. The load test holds 200 event streams
of one team and 300 connections that dribble their headers, while another team polls:
its p99 and ``/healthz``'s must stay under a second, and a revoked token's stream must
end within seconds.
"""

from __future__ import annotations

import io
import json
import os
import select
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from bench.api_under_load import queued_job, under_load
from bench.served import served_api
from service.artifacts import LocalStore
from service.db import SessionFactory, make_engine, migrate, session_factory
from service.jobs import NewArtifact, claim_job, finish_job
from service.teams import create_team
from support.metrics import METRICS

STREAMS = 200
SLOW_CONNECTIONS = 300
POLL_S = 7.0  # under the 10 s head timeout, so the slow connections stay open throughout


def _raw(port: int, request: bytes, timeout_s: float = 20) -> bytes:
    """Send ``request`` on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _json_error(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), answer[:300]
    return int(head.split()[1]), json.loads(body)["error"]["code"]


@pytest.fixture
def sqlite_served(migrated_sqlite_template: Path, tmp_path: Path) -> Callable[..., Iterator[str]]:
    def serve(**env: str) -> Iterator[str]:
        shutil.copyfile(migrated_sqlite_template, tmp_path / "qat.db")
        base = {
            "QAT_DATABASE_URL": f"sqlite:///{tmp_path / 'qat.db'}",
            "QAT_BROKER_URL": f"filesystem://{tmp_path / 'broker'}",
            "QAT_ARTIFACTS": str(tmp_path / "artifacts"),
        }
        return served_api({**base, **env}, tmp_path / "serve.log")

    return serve


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GARBAGE\r\n\r\n", 400, "INVALID_ARGUMENT"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414, "TOO_LARGE"),
        (b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-N%d: 1\r\n" % i for i in range(120)) + b"\r\n", 431, "TOO_LARGE"),
        (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431, "TOO_LARGE"),
        (b"GET /healthz HTTP/1.1\r\nHost: x", 408, "REQUEST_TIMEOUT"),  # the head never ends
        (
            b"POST /v1/datasets HTTP/1.1\r\nTransfer-Encoding: chunked\r\nAuthorization: Bearer x\r\n\r\nzz\r\n",
            401,
            "UNAUTHENTICATED",
        ),
    ],
    ids=["bad-request-line", "uri-too-long", "too-many-headers", "header-too-long", "slow-head", "chunked-no-token"],
)
def test_the_server_answers_its_own_errors_in_json(
    sqlite_served: Callable[..., Iterator[str]], request_bytes: bytes, status: int, code: str
) -> None:
    with sqlite_served(QAT_HTTP_HEAD_TIMEOUT_S="1") as url:
        port = int(url.rsplit(":", 1)[1])
        started = time.monotonic()
        answer = _raw(port, request_bytes)
        assert _json_error(answer) == (status, code)
        assert time.monotonic() - started < 5


def test_idle_and_dribbling_connections_are_closed(sqlite_served: Callable[..., Iterator[str]]) -> None:
    with sqlite_served(QAT_HTTP_IDLE_TIMEOUT_S="1", QAT_HTTP_HEAD_TIMEOUT_S="2") as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
            started = time.monotonic()
            assert idle.recv(1) == b""  # closed, nothing said: no request had begun
            assert time.monotonic() - started < 4
        with socket.create_connection(("127.0.0.1", port), timeout=10) as dribbling:
            started = time.monotonic()
            dribbling.sendall(b"GET /healthz HTTP/1.1\r\n")
            answer = b""
            for _ in range(10):  # a header byte every 0.5 s: never idle, never done
                dribbling.sendall(b"X")
                time.sleep(0.5)
                if select_readable(dribbling):
                    break
            while chunk := dribbling.recv(65536):
                answer += chunk
        assert _json_error(answer) == (408, "REQUEST_TIMEOUT")
        assert time.monotonic() - started < 5


def test_downloads_that_stop_reading_neither_starve_others_nor_stay_open(
    sqlite_served: Callable[..., Iterator[str]], tmp_path: Path
) -> None:
    """50 clients ask for a 64 MiB artifact and never read it: /healthz still answers at once,
    and the server drops each stalled download after the idle timeout."""
    with sqlite_served(QAT_HTTP_IDLE_TIMEOUT_S="2") as url:
        port = int(url.rsplit(":", 1)[1])
        db = session_factory(make_engine(f"sqlite:///{tmp_path / 'qat.db'}"))
        issued = create_team(db, "downloader")
        job_id = queued_job(db, issued.token)
        stored = LocalStore(tmp_path / "artifacts")
        key = f"jobs/{job_id}/attempt-1/model.onnx"
        size, sha256 = stored.put_stream(key, io.BytesIO(os.urandom(64 << 20)))
        assert claim_job(db, job_id, "w", 60)
        finish_job(db, job_id, "w", 1, METRICS, [NewArtifact("model.onnx", size, sha256, key)])
        request = (
            f"GET /v1/jobs/{job_id}/artifacts/model.onnx HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {issued.token}\r\n\r\n"
        ).encode()
        stalled = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(50)]
        for sock in stalled:
            sock.sendall(request)
        try:
            health = []
            for _ in range(20):
                started = time.monotonic()
                assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
                health.append(time.monotonic() - started)
            assert max(health) < 1.0, health
            time.sleep(4)  # past the idle timeout: the server has given up on every stalled download
            dropped = sum(_drained_to_end(sock) < size for sock in stalled)
            assert dropped == len(stalled)
        finally:
            for sock in stalled:
                sock.close()


def _drained_to_end(sock: socket.socket) -> int:
    """Read what the server sent until it closed the connection; the byte count."""
    total = 0
    try:
        while chunk := sock.recv(1 << 20):
            total += len(chunk)
    except ConnectionResetError:
        pass
    return total


def select_readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


# --------------------------------------------------------------------------- load


@pytest.fixture
def pg_served(new_pg_database: Callable[[], str], tmp_path: Path) -> Iterator[tuple[str, SessionFactory]]:
    url = new_pg_database()
    migrate.upgrade(url)
    engine = make_engine(url)
    env = {
        "QAT_DATABASE_URL": url,
        "QAT_BROKER_URL": f"filesystem://{tmp_path / 'broker'}",
        "QAT_ARTIFACTS": str(tmp_path / "artifacts"),
    }
    with served_api(env, tmp_path / "serve.log") as base:
        yield base, session_factory(engine)
    engine.dispose()


def test_streams_and_slow_connections_do_not_starve_other_teams(pg_served: tuple[str, SessionFactory]) -> None:
    url, db = pg_served
    figures = under_load(url, db, streams=STREAMS, slow=SLOW_CONNECTIONS, seconds=POLL_S)
    quiet, loaded = figures["quiet"], figures["loaded"]
    print(
        f"\n{STREAMS} streams + {SLOW_CONNECTIONS} slow connections: another team's GET /v1/jobs p50/p99 "
        f"{loaded['jobs']['p50_ms']}/{loaded['jobs']['p99_ms']} ms (quiet {quiet['jobs']['p50_ms']}/"
        f"{quiet['jobs']['p99_ms']} ms), /healthz p99 {loaded['healthz']['p99_ms']} ms over "
        f"{loaded['jobs']['requests']} requests; revoked tokens' streams ended after "
        f"{figures['revoked_stream_ends_s']} s"
    )
    assert loaded["jobs"]["requests"] >= 20
    assert loaded["jobs"]["p99_ms"] < 1000 and loaded["healthz"]["p99_ms"] < 1000
    assert figures["revoked_stream_end_s"] < 5
