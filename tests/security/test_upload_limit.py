"""Uploads judged from their head alone, before a body byte is read, as ``qat serve`` runs the API.

A raw socket sends the request head with a huge ``Content-Length`` and then as much
body as it can until the answer arrives: the answer must come while the body is still
unsent (under 1 MiB written), so a client cannot make the server read or spool
gigabytes it will refuse anyway. With ``Expect: 100-continue`` the server must answer
with the error and never with ``100 Continue``.
"""

from __future__ import annotations

import json
import select
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.served import served_api
from service.db import make_engine, session_factory
from service.teams import create_team

GIB = 1 << 30
CHUNK = 64 << 10
PACE_S = 0.01
ENDPOINTS = ("/v1/jobs", "/v1/datasets")


@pytest.fixture(scope="module")
def served(migrated_sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str, str]]:
    """``qat serve`` on a SQLite copy with a 256 MiB data limit; its port, a team's token and a
    token of a team whose storage quota is 1 MiB."""
    folder = tmp_path_factory.mktemp("served")
    shutil.copyfile(migrated_sqlite_template, folder / "qat.db")
    url = f"sqlite:///{folder / 'qat.db'}"
    engine = make_engine(url)
    token = create_team(session_factory(engine), "uploader").token
    small = create_team(session_factory(engine), "small", max_storage_bytes=1 << 20).token
    engine.dispose()
    env = {
        "QAT_DATABASE_URL": url,
        "QAT_BROKER_URL": f"filesystem://{folder / 'broker'}",
        "QAT_ARTIFACTS": str(folder / "artifacts"),
        "QAT_MAX_DATA_BYTES": "256MiB",
        "QAT_MAX_MODEL_BYTES": "256MiB",
    }
    with served_api(env, folder / "serve.log") as base:
        yield int(base.rsplit(":", 1)[1]), token, small


def _head(path: str, declared: int, token: str | None, *, expect: bool = False) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: multipart/form-data; boundary=x"]
    lines.append(f"Content-Length: {declared}")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if expect:
        lines.append("Expect: 100-continue")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _send_until_answered(port: int, head: bytes, limit: int) -> tuple[int, bytes]:
    """Send ``head``, then a body chunk every 10 ms until an answer is readable; the body bytes written, and the answer.

    Paced like a fast client on a real network: on loopback the kernel would otherwise
    take megabytes into its buffers before the server has had a chance to answer.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head)
        written = 0
        while written < limit and not select.select([sock], [], [], PACE_S)[0]:
            try:
                sock.sendall(b"\0" * CHUNK)
            except (BrokenPipeError, ConnectionResetError):
                break
            written += CHUNK
        return written, _answer(sock)


def _answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _status_and_error(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower(), answer[:300]
    error: dict[str, object] = json.loads(body)["error"]
    return int(head.split()[1]), error


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("with_token", [False, True], ids=["no-token", "over-limit"])
def test_a_gigabyte_upload_is_answered_before_a_mebibyte_is_sent(
    served: tuple[int, str, str], path: str, with_token: bool
) -> None:
    port, token, _ = served
    written, answer = _send_until_answered(port, _head(path, GIB, token if with_token else None), GIB)
    status, error = _status_and_error(answer)
    print(f"{path} {'over the limit' if with_token else 'no token'}: answered {status} after {written} body bytes")
    assert (status, error["code"]) == ((413, "TOO_LARGE") if with_token else (401, "UNAUTHENTICATED"))
    assert written < 1 << 20


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("with_token", [False, True], ids=["no-token", "over-limit"])
def test_expect_100_continue_gets_the_error_never_a_continue(
    served: tuple[int, str, str], path: str, with_token: bool
) -> None:
    port, token, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(_head(path, 5 * GIB, token if with_token else None, expect=True))
        answer = _answer(sock)
    assert not answer.startswith(b"HTTP/1.1 100"), answer[:200]
    status, error = _status_and_error(answer)
    assert (status, error["code"]) == ((413, "TOO_LARGE") if with_token else (401, "UNAUTHENTICATED"))


def test_expect_100_continue_on_an_acceptable_upload_gets_the_continue(served: tuple[int, str, str]) -> None:
    """The control: the server does send ``100 Continue`` once the head passes, and reads the body."""
    port, token, _ = served
    body = b'--x\r\nContent-Disposition: form-data; name="data"; filename="d.npz"\r\n\r\nnot an npz\r\n--x--\r\n'
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(_head("/v1/datasets", len(body), token, expect=True))
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, error = _status_and_error(_answer(sock))
    assert (status, error["code"], error["field"]) == (422, "BAD_DATA", "data")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_an_upload_over_the_teams_storage_quota_is_answered_from_its_head(
    served: tuple[int, str, str], path: str
) -> None:
    port, _, small_quota = served
    written, answer = _send_until_answered(port, _head(path, 200 << 20, small_quota), 200 << 20)
    status, error = _status_and_error(answer)
    assert (status, error["code"], error["field"]) == (507, "STORAGE_QUOTA", "storage")
    assert "200.0 MiB declared" in str(error["message"]) and written < 1 << 20
