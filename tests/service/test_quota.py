"""Per-team storage: the quota on bytes and datasets, deleting files, and failed jobs' inputs freed at once.

Through the real API on PostgreSQL and SQLite, local and S3 stores; what the store holds is
read from the store itself.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import numpy as np
import pytest
import requests

from service.db import reading
from service.errors import StorageQuotaExceeded
from service.jobs import JobInputs, NewArtifact, claim_job, create_job, fail_job, finish_job, get_job
from service.ops.retention import release_inputs
from service.quota import storage_used
from service.teams import authenticate, create_team, list_teams
from support.layout_only_pt2 import layout_only_pt2
from support.metrics import METRICS

DIGEST = "0" * 64
MODEL = layout_only_pt2(64)


def _npz(seed: int, rows: int = 8) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x_train=np.random.default_rng(seed).standard_normal((rows, 4), dtype=np.float32))
    return buffer.getvalue()


def _team(api: Any, **limits: int) -> tuple[requests.Session, int]:
    issued = create_team(api.services.db, f"team-{uuid.uuid4().hex[:8]}", **limits)
    team = authenticate(api.services.db, issued.token)
    assert team is not None
    return api.client(issued.token), team.id


def _submit(client: requests.Session, model: bytes, data: bytes | None = None, **form: str) -> requests.Response:
    files: dict[str, Any] = {"model": ("m.pt2", model), "spec": (None, '{"epochs": 1, "batch_size": 4}')}
    if data is not None:
        files["data"] = ("d.npz", data)
    files.update({name: (None, value) for name, value in form.items()})
    return client.post("/v1/jobs", files=files)


def _error(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def _used(api: Any, team_id: int) -> int:
    with reading(api.services.db) as session:
        return storage_used(session, team_id)


def _keys(api: Any, prefix: str) -> list[str]:
    return list(api.services.artifacts.list(prefix))


def test_an_upload_over_the_storage_quota_is_refused_with_the_figures(api: Any) -> None:
    client, team_id = _team(api, max_storage_bytes=300_000)
    first = _submit(client, layout_only_pt2(200_000), _npz(0))
    assert first.status_code == 201, first.text
    used = _used(api, team_id)
    assert 200_000 < used < 210_000, "the job's stored inputs count"
    refused = _error(_submit(client, layout_only_pt2(200_000), _npz(1)), 507)
    assert refused["code"] == "STORAGE_QUOTA" and refused["field"] == "storage"
    assert "of its 293.0 KiB quota" in refused["message"] and "DELETE /v1/jobs/{id}" in refused["message"]
    assert len(_keys(api, "jobs/")) == 2, "the refused upload stored nothing (only the first job's model and data)"
    small = _submit(client, layout_only_pt2(1_000), _npz(2))
    assert small.status_code == 201, "what still fits is accepted"


def test_the_stored_sizes_are_checked_again_where_the_job_is_recorded(api: Any) -> None:
    """Two uploads can pass the head check together; the team-locked insert still refuses the second."""
    _, team_id = _team(api, max_storage_bytes=1_000)
    inputs = JobInputs(model_key="m", model_sha256=DIGEST, spec={}, data_key="d", data_sha256=DIGEST, inputs_bytes=600)
    create_job(api.services.db, team_id, inputs, max_attempts=1)
    with pytest.raises(StorageQuotaExceeded, match="this job's inputs"):
        again = JobInputs(**{**vars(inputs), "job_id": uuid.uuid4()})
        create_job(api.services.db, team_id, again, max_attempts=1)


def test_datasets_count_against_the_quota_and_can_be_deleted_and_brought_back(api: Any) -> None:
    client, team_id = _team(api, max_datasets=2)
    one, two = (client.post("/v1/datasets", files={"data": ("d.npz", _npz(seed))}) for seed in (10, 11))
    assert (one.status_code, two.status_code) == (201, 201)
    again = client.post("/v1/datasets", files={"data": ("d.npz", _npz(10))})
    assert again.status_code == 200 and again.json()["id"] == one.json()["id"], "the same bytes: no new dataset"
    third = _error(client.post("/v1/datasets", files={"data": ("d.npz", _npz(12))}), 429)
    assert third["code"] == "QUOTA" and "keeps 2 datasets, its limit" in third["message"]

    in_use = _submit(client, MODEL, dataset_id=one.json()["id"])
    assert in_use.status_code == 201, in_use.text
    refused = _error(client.delete(f"/v1/datasets/{one.json()['id']}"), 409)
    assert refused["code"] == "WRONG_STATE" and "1 queued or running jobs" in refused["message"]
    assert client.post(f"/v1/jobs/{in_use.json()['id']}/cancel").status_code == 200

    before = _used(api, team_id)
    assert client.delete(f"/v1/datasets/{one.json()['id']}").status_code == 204
    assert _used(api, team_id) == before - one.json()["size"]
    assert one.json()["id"] not in str(_keys(api, "datasets/")) and len(_keys(api, "datasets/")) == 1
    assert _error(client.get(f"/v1/datasets/{one.json()['id']}"), 404)["field"] == "dataset_id"
    assert _error(_submit(client, MODEL, dataset_id=one.json()["id"]), 404)["field"] == "dataset_id"
    assert _error(client.delete(f"/v1/datasets/{one.json()['id']}"), 404)["code"] == "NOT_FOUND"

    assert client.post("/v1/datasets", files={"data": ("d.npz", _npz(12))}).status_code == 201, "room again"
    assert _error(client.post("/v1/datasets", files={"data": ("d.npz", _npz(10))}), 429)["code"] == "QUOTA"
    assert client.delete(f"/v1/datasets/{two.json()['id']}").status_code == 204
    back = client.post("/v1/datasets", files={"data": ("d.npz", _npz(10))})
    assert back.status_code == 201 and back.json()["id"] == one.json()["id"], "the same content keeps its id"
    assert client.get(f"/v1/datasets/{one.json()['id']}").status_code == 200


def test_a_finished_jobs_files_can_be_deleted_at_once(api: Any) -> None:
    client, team_id = _team(api)
    job_id = _submit(client, MODEL, _npz(3)).json()["id"]
    assert _error(client.delete(f"/v1/jobs/{job_id}"), 409)["code"] == "WRONG_STATE", "not while it may run"
    svc = api.services
    assert claim_job(svc.db, uuid.UUID(job_id), "w", 60)
    key = f"jobs/{job_id}/attempt-1/model.onnx"
    size, sha256 = svc.artifacts.put_stream(key, io.BytesIO(b"onnx" * 1000))
    finish_job(svc.db, uuid.UUID(job_id), "w", 1, METRICS, [NewArtifact("model.onnx", size, sha256, key)])
    assert _used(api, team_id) > 4000

    deleted = client.delete(f"/v1/jobs/{job_id}")
    assert deleted.status_code == 200 and deleted.json()["state"] == "SUCCEEDED"
    assert client.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"] == []
    assert _keys(api, f"jobs/{job_id}/") == [] and _used(api, team_id) == 0
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 200, "deleting again is harmless"
    other, _ = _team(api)
    assert _error(other.delete(f"/v1/jobs/{job_id}"), 404)["code"] == "NOT_FOUND", "another team's job"


def test_failed_and_cancelled_jobs_inputs_are_released_and_results_kept(api: Any) -> None:
    client, team_id = _team(api)
    cancelled, failed, succeeded = (_submit(client, MODEL, _npz(seed)).json()["id"] for seed in (4, 5, 6))
    svc = api.services
    assert client.post(f"/v1/jobs/{cancelled}/cancel").json()["state"] == "CANCELLED"
    for job_id in (failed, succeeded):
        assert claim_job(svc.db, uuid.UUID(job_id), "w", 60)
    log_key = f"jobs/{failed}/attempt-1/log.txt"
    size, sha256 = svc.artifacts.put_stream(log_key, io.BytesIO(b"the log"))
    fail_job(
        svc.db,
        uuid.UUID(failed),
        "w",
        1,
        "BAD_DATA",
        "bad",
        user_error=True,
        artifacts=[NewArtifact("log.txt", size, sha256, log_key)],
    )
    finish_job(svc.db, uuid.UUID(succeeded), "w", 1, METRICS, [])

    released = release_inputs(svc.db, svc.artifacts)
    assert sorted(map(str, released)) == sorted([cancelled, failed])
    for job_id in (cancelled, failed):
        assert _keys(api, f"jobs/{job_id}/inputs/") == []
    assert _keys(api, f"jobs/{failed}/") == [log_key], "the failed job's log stays"
    assert len(_keys(api, f"jobs/{succeeded}/inputs/")) == 2, "a succeeded job keeps its inputs until gc"
    kept = get_job(svc.db, team_id, uuid.UUID(succeeded)).inputs_bytes
    assert kept > 0 and _used(api, team_id) == len(b"the log") + kept
    assert release_inputs(svc.db, svc.artifacts) == [], "nothing twice"


def test_list_teams_shows_storage_and_datasets_in_use(api: Any) -> None:
    client, _ = _team(api, max_storage_bytes=10 << 20, max_datasets=7)
    created = client.post("/v1/datasets", files={"data": ("d.npz", _npz(20))}).json()
    [row] = [row for row in list_teams(api.services.db) if row.max_datasets == 7]
    assert (row.storage_bytes, row.max_storage_bytes, row.datasets) == (created["size"], 10 << 20, 1)
