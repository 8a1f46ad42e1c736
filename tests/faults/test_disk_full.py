"""The local artifact store's disk is full: uploads answer 507, jobs fail STORAGE_FULL, no partial file stays.

The disk is a real one that fills up: a 1 MiB tmpfs mounted over the store's folder in a
private mount namespace (``unshare --mount``; with ``--map-root-user`` when not root), so
the mount needs no privilege on the host and vanishes with the processes. The API runs
in that namespace and the worker joins it (``nsenter``); the test sees the same files
through ``/proc/<api pid>/root``.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.fault_servers import serving, start, tiny_inputs
from support.layout_only_pt2 import layout_only_pt2
from support.pool import QAT, Pool, finished

STORE_BYTES = 1 << 20


def _namespaces_work() -> bool:
    command = ["unshare", "--mount", "true"] if os.geteuid() == 0 else ["unshare", "--mount", "--map-root-user", "true"]
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


class FullDiskDeployment:
    """A deployment whose artifact store is a tiny tmpfs in the API's own mount namespace."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.store = pool.root / "artifacts"
        self.store.mkdir()

    @property
    def api_command_prefix(self) -> list[str]:
        """``unshare`` with a tmpfs mounted over the store, then ``exec`` of the command after it."""
        unshare = ["unshare", "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
        mount = f'mount -t tmpfs -o size={STORE_BYTES} qat-full-store "$0" && exec "$@"'
        return [*unshare, "sh", "-c", mount, str(self.store)]

    def start_worker(self) -> None:
        """A worker in the API's mount namespace, so it writes to the same tiny disk."""
        namespace = f"--mount=/proc/{self.api_pid}/ns/mnt"
        start(self.pool, "worker-0", ["nsenter", namespace, "--", QAT, "worker", "--name", "full-disk-worker"])

    @property
    def api_pid(self) -> int:
        return int(self.pool.processes["api"][0].pid)

    @property
    def disk(self) -> Path:
        """The store's folder as the API sees it: the tmpfs."""
        return Path(f"/proc/{self.api_pid}/root") / self.store.relative_to("/")

    def files(self) -> list[str]:
        """Every file on the tmpfs, half-written ones (``.partial-*``) included."""
        return sorted(str(path.relative_to(self.disk)) for path in self.disk.rglob("*") if path.is_file())

    def fill(self) -> None:
        """Write a filler file until the tmpfs has no byte left."""
        with open(self.disk / "filler", "wb", buffering=0) as filler:
            try:
                for _ in range(2 * STORE_BYTES // 4096):
                    filler.write(b"\0" * 4096)
            except OSError:
                return
        raise AssertionError("the store's tmpfs did not fill up")


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[FullDiskDeployment]:
    if not _namespaces_work():
        pytest.skip("this machine allows no private mount namespace (unshare --mount)")
    deployment = FullDiskDeployment(Pool(tmp_path))
    with serving(deployment.pool, prefix=deployment.api_command_prefix):
        disk = os.statvfs(deployment.disk)
        assert deployment.files() == [] and disk.f_blocks * disk.f_frsize <= STORE_BYTES, "the store is the tmpfs"
        yield deployment


def _model_of(size: int) -> bytes:
    """A model the API accepts (torch.export's layout) with ``size`` bytes of stored weights."""
    return layout_only_pt2(size)


def test_upload_to_a_full_disk_is_507_and_leaves_no_file(deployment: FullDiskDeployment) -> None:
    files = {**tiny_inputs(), "model": ("model.pt2", _model_of(2 * STORE_BYTES))}
    refused = deployment.pool.post("/v1/jobs", files=files)
    assert refused.status_code == 507, refused.text
    error = refused.json()["error"]
    assert error["code"] == "STORAGE_FULL" and "store is full" in error["message"], error
    assert str(deployment.disk) not in refused.text, "the store's folder is not shown to callers"
    assert deployment.files() == [], "no partial upload is left on the disk"
    assert deployment.pool.get("/v1/jobs").json()["jobs"] == [], "no job row for a refused upload"
    # the failed write gave its space back: a small job fits
    assert deployment.pool.post("/v1/jobs", files=tiny_inputs()).status_code == 201


def test_job_whose_artifacts_do_not_fit_fails_storage_full(
    deployment: FullDiskDeployment, small_job: tuple[Path, Path]
) -> None:
    pool = deployment.pool
    model, data = small_job
    files = {"model": ("model.pt2", model.read_bytes()), "data": ("data.npz", data.read_bytes())}
    created = pool.post("/v1/jobs", files=files, data={"spec": json.dumps({"epochs": 0})})
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    deployment.fill()
    pool.start("dispatcher", "dispatcher")
    deployment.start_worker()

    job = pool.wait_for_job(job_id, finished, timeout_s=240)
    assert job["state"] == "FAILED", job
    assert job["failure"]["code"] == "STORAGE_FULL" and job["failure"]["user_error"] is False, job["failure"]
    assert "store is full" in job["failure"]["message"] and str(deployment.disk) not in job["failure"]["message"]
    assert pool.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"] == []
    left = [name for name in deployment.files() if name.startswith(f"jobs/{uuid.UUID(job_id)}/attempt-")]
    assert left == [], "nothing of the failed attempt stays on the disk"
