"""An upload declared over the limit is refused before its body is sent, as ``qat serve`` runs the API.

A raw socket sends only the request head with a huge ``Content-Length``; the answer
must arrive while the body is still unsent, so a client cannot make the server read
(or spool to disk) gigabytes it will refuse anyway.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import waitress
from waitress import wasyncore

from service.app import create_app
from service.settings import Settings
from service.teams import create_team
from service.uploads import server_body_limit


@pytest.fixture
def served(migrated_sqlite_template: Path, tmp_path: Path) -> Iterator[tuple[int, str]]:
    """The API under waitress with the body limit ``qat serve`` sets; yields its port and a token."""
    (tmp_path / "qat.db").write_bytes(migrated_sqlite_template.read_bytes())
    settings = Settings.from_env(
        {
            "QAT_DATABASE_URL": f"sqlite:///{tmp_path / 'qat.db'}",
            "QAT_BROKER_URL": f"filesystem://{tmp_path / 'broker'}",
            "QAT_ARTIFACTS": str(tmp_path / "artifacts"),
        }
    )
    app = create_app(settings)
    token = create_team(app.extensions["qat"].db, "uploader").token
    server = waitress.create_server(app, host="127.0.0.1", port=0, max_request_body_size=server_body_limit(settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield server.effective_port, token
    server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
    thread.join(timeout=10)
    server.task_dispatcher.shutdown()


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/datasets"])
def test_oversized_body_is_refused_from_its_head_alone(served: tuple[int, str], path: str) -> None:
    port, token = served
    declared = 1 << 40  # 1 TiB: far over any limit
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {declared}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head.encode() + b"--x\r\n")  # a few body bytes, then nothing more
        answer = sock.recv(4096).decode("latin-1")
    assert answer.startswith("HTTP/1.1 413"), answer
