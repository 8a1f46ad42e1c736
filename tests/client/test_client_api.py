"""The Python client itself against the real deployment: typed results, errors, sha256 checks."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from service.client import ApiError, ChecksumMismatch, Client, ServerUnreachable, WaitTimeout
from support.client_service import Finished, Service
from workers.local_deployment import free_port


def test_artifacts_list_sizes_and_hashes_of_what_was_downloaded(service: Service, finished: Finished) -> None:
    with Client(service.url, service.token) as client:
        job = client.get(finished.job["id"])
        assert job.succeeded and job.done and job.failure is None
        for artifact in client.artifacts(job.id):
            data = (finished.folder / artifact.name).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (artifact.size, artifact.sha256)


def test_submit_is_idempotent_and_list_pages_through_every_job(service: Service, digits: tuple[Path, Path]) -> None:
    model, data = digits
    key = str(uuid.uuid4())
    with Client(service.url, service.token) as client:
        first = client.submit(model, data=data, spec={"epochs": 0}, idempotency_key=key)
        again = client.submit(model, data=data, spec={"epochs": 0}, idempotency_key=key)
        assert again.id == first.id
        with pytest.raises(WaitTimeout):
            client.wait(first.id, poll_s=0.05, timeout_s=0)
        client.cancel(first.id)
        ids = [job.id for job in client.list(page_size=1)]
        assert first.id in ids and len(ids) == len(set(ids)) >= 2


def test_datasets_and_finished_jobs_files_are_uploaded_and_deleted_through_the_client(
    service: Service, digits: tuple[Path, Path]
) -> None:
    model, data = digits
    with Client(service.url, service.token) as client:
        dataset = client.upload_dataset(data)
        assert client.upload_dataset(data).id == dataset.id, "the same bytes: the same dataset"
        assert dataset.size == data.stat().st_size
        job = client.submit(model, dataset_id=str(dataset.id), spec={"epochs": 0})
        with pytest.raises(ApiError) as in_use:
            client.delete_dataset(dataset.id)
        assert (in_use.value.status, in_use.value.code) == (409, "WRONG_STATE")
        client.cancel(job.id)
        client.wait(job.id, timeout_s=60)
        assert client.delete_files(job.id).state == "CANCELLED" and client.artifacts(job.id) == []
        client.delete_dataset(dataset.id)
        with pytest.raises(ApiError) as gone:
            client.delete_dataset(dataset.id)
        assert gone.value.code == "NOT_FOUND"


def test_api_errors_carry_code_status_and_field(service: Service, digits: tuple[Path, Path]) -> None:
    model, data = digits
    with Client(service.url, service.token) as client:
        with pytest.raises(ApiError) as missing:
            client.get(str(uuid.uuid4()))
        assert (missing.value.code, missing.value.status) == ("NOT_FOUND", 404)
        with pytest.raises(ApiError) as bad_spec:
            client.submit(model, data=data, spec={"epochs": -1})
        assert bad_spec.value.code == "BAD_SPEC" and bad_spec.value.field and bad_spec.value.is_client_error


def test_unreachable_server_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, "token", timeout=2) as client, pytest.raises(ServerUnreachable, match=url):
        client.get(str(uuid.uuid4()))


def test_download_refuses_bytes_that_do_not_match_their_sha256(
    service: Service, finished: Finished, tmp_path: Path
) -> None:
    """Flip one byte of a stored artifact (same size), download, then restore it."""
    job_id = finished.job["id"]
    stored = next((service.deployment.root / "artifacts" / "jobs" / job_id).glob("attempt-*/record.txt"))
    original = stored.read_bytes()
    stored.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])
    try:
        with Client(service.url, service.token) as client, pytest.raises(ChecksumMismatch, match="record.txt"):
            client.download(job_id, tmp_path)
    finally:
        stored.write_bytes(original)
    assert not (tmp_path / "record.txt").exists() and not list(tmp_path.glob("*.part"))
