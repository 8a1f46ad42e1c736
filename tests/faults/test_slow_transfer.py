"""Inputs that take longer to download than a lease lasts: the worker's heartbeat keeps the job its own.

The worker reaches S3 through a proxy that passes what the server sends at 1 MiB/s, so a
6 MiB dataset takes about 6 s to come in while a lease lasts 2 s. A worker that renewed
its lease only between steps would see its job re-queued mid-download (attempt 2, 3,
then WORKER_LOST); with its background heartbeat the job succeeds on attempt 1.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.artifacts import S3Store
from support.fault_servers import MotoServer
from support.pool import Pool, finished, running

BUCKET = "qat-slow"
RATE = 1 << 20  # bytes per second, server to client
LEASE_S = 2
DATA_BYTES = 6 << 20


class ThrottlingProxy:
    """A loopback TCP proxy to ``port``: client to server at full speed, server to client at ``rate``."""

    def __init__(self, port: int, rate: int) -> None:
        self.target, self.rate = port, rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.closed.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.rate), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, rate: int | None) -> None:
        try:
            while not self.closed.is_set() and (chunk := source.recv(16 << 10)):
                sink.sendall(chunk)
                if rate:
                    time.sleep(len(chunk) / rate)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                end.close()


@pytest.fixture
def slow_s3(own_s3: MotoServer) -> Iterator[ThrottlingProxy]:
    S3Store(BUCKET, endpoint_url=own_s3.endpoint).client.create_bucket(Bucket=BUCKET)
    proxy = ThrottlingProxy(own_s3.port, RATE)
    yield proxy
    proxy.close()


def test_a_download_slower_than_the_lease_keeps_the_job_on_attempt_1(
    slow_s3: ThrottlingProxy, small_job: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = small_job
    small = dict(np.load(data))
    padding = DATA_BYTES // small["x_eval"][0].nbytes
    big = io.BytesIO()
    x_eval = np.resize(small["x_eval"], (padding, *small["x_eval"].shape[1:]))
    np.savez(
        big,
        x_train=small["x_train"],
        y_train=small["y_train"],
        x_eval=x_eval,
        y_eval=np.resize(small["y_eval"], padding),
    )
    assert big.getbuffer().nbytes >= DATA_BYTES
    settings = {
        "QAT_ARTIFACTS": f"s3://{BUCKET}/qat",
        "QAT_S3_ENDPOINT_URL": slow_s3.endpoint,
        "QAT_LEASE_SECONDS": str(LEASE_S),
    }
    with running(Pool(tmp_path, **settings)) as pool:
        files = {"model": ("model.pt2", model.read_bytes()), "data": ("data.npz", big.getvalue())}
        created = pool.post("/v1/jobs", files=files, data={"spec": json.dumps({"epochs": 0})})
        assert created.status_code == 201, created.text
        job = pool.wait_for_job(created.json()["id"], finished, timeout_s=300)
    assert job["state"] == "SUCCEEDED", job["failure"]
    assert job["attempt"] == 1, "the lease held through the download"
    download = job["metrics"]["timings_s"]["download"]
    print(f"\ndownload {download} s with a {LEASE_S} s lease")
    assert download > 2 * LEASE_S, "the download really outlasted the lease"
