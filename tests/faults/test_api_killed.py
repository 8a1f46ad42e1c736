"""The API process SIGKILLed during an upload: no job row, and no stored byte that ``qat admin gc`` cannot remove.

Killed while the body is still arriving, the form is still being parsed into temporary
files and nothing is stored yet. Killed while it stores the inputs, the row that
would own them is not written yet: the stored and half-stored files are orphans, listed
by the store and removed by ``qat admin gc``.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.artifacts import LocalStore
from service.db import Job, reading
from support.fault_servers import serving, tiny_inputs, wait_until
from support.layout_only_pt2 import layout_only_pt2
from support.pool import Pool, wait_for_api

MODEL_BYTES = 100 << 20


def _multipart(boundary: str) -> bytes:
    """A job submission with a big (stored, uncompressed) model, as raw multipart bytes."""
    files = {**tiny_inputs(), "model": ("model.pt2", layout_only_pt2(MODEL_BYTES))}
    body = b""
    for name, (filename, content) in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        body += head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


class Upload:
    """One ``POST /v1/jobs`` over a raw socket, so the test decides how much of the body is sent."""

    def __init__(self, pool: Pool) -> None:
        boundary = uuid.uuid4().hex
        self.body = _multipart(boundary)
        host, port = pool.url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        head = (
            f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {pool.session.headers['Authorization']}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode())

    def send(self, fraction: float) -> None:
        self.sock.sendall(self.body[: int(len(self.body) * fraction)])

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    with serving(Pool(tmp_path)) as started:
        yield started


def _jobs(pool: Pool) -> int:
    with reading(pool.db()) as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def test_api_killed_mid_upload_leaves_no_job_and_nothing_gc_cannot_clean(pool: Pool) -> None:
    store = LocalStore(pool.root / "artifacts")

    # 1. killed while the body is in flight: the app never ran
    upload = Upload(pool)
    upload.send(0.5)
    pool.crash("api")
    upload.close()
    assert _jobs(pool) == 0 and list(store.list("jobs/")) == []

    # 2. killed while the inputs are being stored: the first stored byte is the signal
    pool.start("api", "serve", "--port", pool.url.rsplit(":", 1)[1])
    wait_for_api(pool)
    upload = Upload(pool)
    upload.send(1.0)
    jobs = pool.root / "artifacts" / "jobs"
    stored = lambda: jobs.is_dir() and any(p.is_file() for p in jobs.rglob("*"))  # noqa: E731
    wait_until(stored, "the API storing the upload", timeout_s=60, every_s=0.002)
    pool.crash("api")
    upload.close()
    assert _jobs(pool) == 0, "the job row is written only after its inputs are stored"
    orphans = list(store.list("jobs/"))
    assert orphans and all(key.split("/")[2] == "inputs" for key in orphans), orphans
    print(f"\norphans after the kill: {[key.split('/', 2)[2] for key in orphans]}")

    time.sleep(1.1)  # gc only takes objects older than its period; the smallest is a second
    cleaned = json.loads(pool.qat("admin", "gc", "--older-than", "1s", "--json"))
    assert sorted(cleaned["orphan_keys"]) == sorted(orphans)
    assert list(store.list()) == [] and _jobs(pool) == 0
