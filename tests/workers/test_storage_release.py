"""Submit-then-cancel cycles do not pile up storage: the dispatcher deletes cancelled jobs' inputs at once.

Found before: with ``max_queued`` 3, 20 cycles of submitting a large model and cancelling
it kept every input (971 MiB) until ``qat admin gc`` ran 30 days later. Here the real API
and dispatcher run (no worker, so every job stays queued until cancelled) on the
embedded default; what is stored is read from the artifact folder itself.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np

from support.layout_only_pt2 import layout_only_pt2
from support.pool import Pool, free_port, wait_for_api
from workers.dispatcher import RELEASE_EVERY_S

CYCLES = 20
MODEL_BYTES = 1 << 20


def _input_files(pool: Pool) -> list[Path]:
    return sorted((pool.root / "artifacts" / "jobs").glob("*/inputs/*"))


def _storage_bytes(pool: Pool, team: str) -> int:
    [row] = [row for row in json.loads(pool.qat("admin", "list-teams", "--json")) if row["name"] == team]
    return int(row["storage_bytes"])


def test_cancelled_jobs_inputs_are_deleted_within_seconds(tmp_path: Path) -> None:
    pool = Pool(tmp_path)
    pool.qat("db", "upgrade")
    token = json.loads(pool.qat("admin", "create-team", "cycling", "--max-queued", "3", "--json"))["token"]
    pool.session.headers["Authorization"] = f"Bearer {token}"
    pool.url = f"http://127.0.0.1:{free_port()}"
    model = layout_only_pt2(MODEL_BYTES)
    spec = json.dumps({"epochs": 1, "batch_size": 4})
    try:
        pool.start("api", "serve", "--port", pool.url.rsplit(":", 1)[1])
        pool.start("dispatcher", "dispatcher")
        wait_for_api(pool)
        for _ in range(CYCLES):
            files = {"model": ("m.pt2", model), "data": ("d.npz", _tiny_npz()), "spec": (None, spec)}
            created = pool.post("/v1/jobs", files=files)
            assert created.status_code == 201, created.text
            assert pool.post(f"/v1/jobs/{created.json()['id']}/cancel").json()["state"] == "CANCELLED"
        held = sum(path.stat().st_size for path in _input_files(pool))
        cancelled_at = time.monotonic()
        while _input_files(pool) and time.monotonic() - cancelled_at < 20:
            time.sleep(0.1)
        released_s = time.monotonic() - cancelled_at
        assert _input_files(pool) == [], pool.log("dispatcher")
        assert _storage_bytes(pool, "cycling") == 0
        print(
            f"\n{CYCLES} submit-then-cancel cycles: {held >> 20} MiB of inputs gone {released_s:.1f} s after the last"
        )
        assert released_s < 2 * RELEASE_EVERY_S
        assert "deleted the inputs of failed or cancelled jobs" in pool.log("dispatcher")
    finally:
        pool.stop()


def _tiny_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x_train=np.zeros((4, 4), np.float32))
    return buffer.getvalue()
