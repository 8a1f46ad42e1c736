"""The worker's side of checkpoints: what it uploads from the running child's folder, and what it gives back."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from service.artifacts import LocalStore
from workers.checkpoints import CheckpointUploads, newest_checkpoint, remove_checkpoints

JOB = uuid.UUID("00000000-0000-4000-8000-000000000001")


def _stored(store: LocalStore) -> list[str]:
    return sorted(key for key in store.list("jobs/") if "/checkpoints/" in key)


def test_only_a_regular_checkpoint_within_its_bound_is_uploaded_and_only_the_newest_kept(tmp_path: Path) -> None:
    """The child is running and hostile: links, FIFOs and huge files in its folder are left where they are."""
    store = LocalStore(tmp_path / "store")
    folder = tmp_path / "job"
    saved = folder / "checkpoints"
    saved.mkdir(parents=True)
    secret = tmp_path / "worker-secret"
    secret.write_text("s3cret")
    uploads = CheckpointUploads(store, JOB, 1, folder, interval_s=0, max_bytes=100)

    (saved / "epoch-0001.pt").symlink_to(secret)
    uploads.poll()
    os.mkfifo(saved / "epoch-0002.pt")
    uploads.poll()  # must not hang on the FIFO
    (saved / "epoch-0003.pt").write_bytes(b"x" * 101)
    uploads.poll()
    assert _stored(store) == []

    (saved / "epoch-0004.pt").write_bytes(b"four")
    uploads.poll()
    (saved / "epoch-0005.pt").write_bytes(b"five")
    uploads.poll()
    assert _stored(store) == [f"jobs/{JOB}/attempt-1/checkpoints/epoch-0005.pt"], "the newest only"
    assert b"".join(store.open_stream(_stored(store)[0])) == b"five"


def test_a_checkpoint_folder_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "epoch-0001.pt").write_bytes(b"not the child's")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "checkpoints").symlink_to(elsewhere)
    store = LocalStore(tmp_path / "store")
    CheckpointUploads(store, JOB, 1, tmp_path / "job", interval_s=0, max_bytes=100).poll()
    assert _stored(store) == []


def test_uploads_wait_out_their_interval_and_the_next_attempt_gets_the_latest_epoch(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    saved = tmp_path / "job" / "checkpoints"
    saved.mkdir(parents=True)
    first = CheckpointUploads(store, JOB, 1, tmp_path / "job", interval_s=3600, max_bytes=100)
    (saved / "epoch-0001.pt").write_bytes(b"one")
    first.poll()
    (saved / "epoch-0002.pt").write_bytes(b"two")
    first.poll()  # within the interval: the store keeps epoch 1
    assert _stored(store) == [f"jobs/{JOB}/attempt-1/checkpoints/epoch-0001.pt"]

    (saved / "epoch-0003.pt").write_bytes(b"three")
    CheckpointUploads(store, JOB, 2, tmp_path / "job", interval_s=0, max_bytes=100).poll()
    assert newest_checkpoint(store, JOB) == f"jobs/{JOB}/attempt-2/checkpoints/epoch-0003.pt"
    assert newest_checkpoint(store, uuid.uuid4()) is None

    remove_checkpoints(store, JOB)
    assert _stored(store) == []
