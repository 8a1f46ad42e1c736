"""``qat serve`` as a process on a free loopback port: the server exactly as deployed.

For benchmarks and for tests of the HTTP server itself (deadlines, hostile heads, many
connections), which an app served in-process by a test server would not exercise.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

QAT = Path(sys.executable).parent / "qat"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served_api(env: dict[str, str], log: Path, *, timeout_s: float = 30) -> Iterator[str]:
    """Run ``qat serve`` with the ``QAT_*`` variables ``env`` (its output to ``log``); yield its URL."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QAT_")}
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(QAT), "serve", "--port", str(port)], env={**clean, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, server, log, timeout_s)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_until_up(url: str, server: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"qat serve exited {server.returncode}: {log.read_text()}")
        try:
            requests.get(f"{url}/healthz", timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(f"qat serve did not answer on {url} within {timeout_s} s: {log.read_text()}")
