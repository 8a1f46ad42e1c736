"""The HTTP API through a real HTTP server in the test process on PostgreSQL and SQLite, local and S3 stores."""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import requests

from service.artifacts import S3Store
from service.jobs import NewArtifact, claim_job, finish_job
from service.teams import create_team, revoke_token
from support.layout_only_pt2 import layout_only_pt2
from support.metrics import METRICS

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])
LOCAL_ONLY = pytest.mark.parametrize("artifact_store", ["local"], indirect=True)
S3_ONLY = pytest.mark.parametrize("artifact_store", ["s3"], indirect=True)


@pytest.fixture(scope="session")
def model_pt2() -> bytes:
    """A real ``torch.export.save`` archive of a one-layer model (the server never loads torch)."""
    import torch

    program = torch.export.export(torch.nn.Linear(4, 2).eval(), (torch.randn(1, 4),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def data_npz() -> bytes:
    rng = np.random.default_rng(0)
    return npz(x_train=rng.standard_normal((8, 4), dtype=np.float32), y_train=np.arange(8, dtype=np.int64) % 2)


Submit = Callable[..., requests.Response]


@pytest.fixture
def submit(model_pt2: bytes, data_npz: bytes) -> Submit:
    """POSTs a job; keyword arguments replace or (with ``None``) drop form parts."""

    def post(client: requests.Session, headers: dict[str, str] | None = None, **parts: Any) -> requests.Response:
        defaults: dict[str, Any] = {
            "model": ("model.pt2", model_pt2),
            "data": ("data.npz", data_npz),
            "spec": (None, json.dumps({"epochs": 1, "batch_size": 8})),
        }
        files = {k: v for k, v in {**defaults, **parts}.items() if v is not None}
        return client.post("/v1/jobs", files=files, headers=headers or {})

    return post


def error_of(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "field"}
    return error


# ----------------------------------------------------------------- on every backend/store


def test_submit_inspect_list_cancel(api: Any, submit: Submit) -> None:
    client = api.new_team()
    created = submit(client)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["state"] == "QUEUED" and job["spec"]["batch_size"] == 8 and job["data_sha256"]
    assert created.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert client.get(f"/v1/jobs/{job['id']}").json() == job
    listed = client.get("/v1/jobs").json()
    assert [j["id"] for j in listed["jobs"]] == [job["id"]] and listed["next_page_token"] is None
    # the inputs are really in the store, under the job's prefix
    keys = list(api.services.artifacts.list(f"jobs/{job['id']}/inputs/"))
    assert keys == [f"jobs/{job['id']}/inputs/data.npz", f"jobs/{job['id']}/inputs/model.pt2"]

    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "CANCELLED"
    assert error_of(client.post(f"/v1/jobs/{job['id']}/cancel"), 409)["code"] == "WRONG_STATE"
    assert client.get("/v1/jobs", params={"state": "CANCELLED"}).json()["jobs"][0]["id"] == job["id"]
    assert client.get("/v1/jobs", params={"state": "QUEUED"}).json()["jobs"] == []


def test_cancel_running_job_is_cancelling(api: Any, submit: Submit) -> None:
    client = api.new_team()
    job_id = submit(client).json()["id"]
    assert claim_job(api.services.db, uuid.UUID(job_id), "worker-1", 60)
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["state"] == "CANCELLING"


def test_artifacts_listed_and_downloaded(make_api: Callable[..., Any], submit: Submit) -> None:
    """No worker exists yet: play its part with the store's claim/finish path, then download over HTTP.

    Streamed by the API (redirects off), so its integrity headers are checked too."""
    api = make_api(QAT_DOWNLOAD_REDIRECT="false")
    client = api.new_team()
    job_id = submit(client).json()["id"]
    payloads = {"model.onnx": b"\x08\x07onnx" * 50_000, "report.json": b'{"top1": 0.9}'}
    svc = api.services
    assert claim_job(svc.db, uuid.UUID(job_id), "worker-1", 60)
    artifacts = []
    for name, payload in payloads.items():
        key = f"jobs/{job_id}/results/{name}"
        size, sha256 = svc.artifacts.put_stream(key, io.BytesIO(payload))
        artifacts.append(NewArtifact(name=name, size=size, sha256=sha256, storage_key=key))
    finish_job(svc.db, uuid.UUID(job_id), "worker-1", 1, METRICS, artifacts)

    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "SUCCEEDED" and job["metrics"] == METRICS.model_dump(mode="json")
    assert job["metrics"]["accuracy"]["fp32"]["sqnr_db"] == "inf", "JSON has no infinity"
    listed = client.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"]
    assert [a["name"] for a in listed] == sorted(payloads)
    for item in listed:
        download = client.get(item["url"].removeprefix(api.url))
        assert download.status_code == 200
        assert download.content == payloads[item["name"]]
        assert hashlib.sha256(download.content).hexdigest() == item["sha256"] == download.headers["X-Content-SHA256"]
        assert item["size"] == len(payloads[item["name"]])
    assert error_of(client.get(f"/v1/jobs/{job_id}/artifacts/nope.bin"), 404)["field"] == "name"
    assert error_of(client.post(f"/v1/jobs/{job_id}/cancel"), 409)["code"] == "WRONG_STATE"


# ------------------------------------------------------------------- on both databases


@LOCAL_ONLY
def test_team_isolation(api: Any, submit: Submit, data_npz: bytes) -> None:
    team_a, team_b = api.new_team(), api.new_team()
    job_id = submit(team_a).json()["id"]
    dataset_id = team_a.post("/v1/datasets", files={"data": ("d.npz", data_npz)}).json()["id"]
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/artifacts", f"/v1/jobs/{job_id}/artifacts/model.onnx"):
        assert error_of(team_b.get(path), 404)["code"] == "NOT_FOUND"
    assert error_of(team_b.post(f"/v1/jobs/{job_id}/cancel"), 404)["code"] == "NOT_FOUND"
    assert error_of(team_b.get(f"/v1/datasets/{dataset_id}"), 404)["code"] == "NOT_FOUND"
    assert error_of(submit(team_b, data=None, dataset_id=(None, dataset_id)), 404)["field"] == "dataset_id"
    assert team_b.get("/v1/jobs").json()["jobs"] == []
    assert team_a.get(f"/v1/jobs/{job_id}").json()["state"] == "QUEUED"


@LOCAL_ONLY
def test_idempotency_key(api: Any, submit: Submit) -> None:
    client = api.new_team()
    key = {"Idempotency-Key": "retry-me-1"}
    first = submit(client, headers=key)
    again = submit(client, headers=key)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = submit(client, headers=key, spec=(None, json.dumps({"epochs": 3, "batch_size": 8})))
    assert error_of(other, 422)["code"] == "IDEMPOTENCY_MISMATCH"
    # the retries' uploads were deleted again: only the first job's inputs remain
    assert {k.split("/")[1] for k in api.services.artifacts.list("jobs/")} == {first.json()["id"]}
    assert len(client.get("/v1/jobs").json()["jobs"]) == 1
    assert error_of(submit(client, headers={"Idempotency-Key": "bad key\u00e9"}), 400)["field"] == "Idempotency-Key"


@LOCAL_ONLY
def test_pagination_newest_first(api: Any, submit: Submit) -> None:
    client = api.new_team()
    ids = [submit(client).json()["id"] for _ in range(5)]
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"page_size": 2, **({"page_token": token} if token else {})}
        page = client.get("/v1/jobs", params=params).json()
        seen += [job["id"] for job in page["jobs"]]
        pages += 1
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == ids[::-1] and pages == 3
    assert error_of(client.get("/v1/jobs", params={"page_token": "garbage"}), 400)["field"] == "page_token"
    assert error_of(client.get("/v1/jobs", params={"page_size": 0}), 400)["field"] == "page_size"
    assert error_of(client.get("/v1/jobs", params={"page_size": "many"}), 400)["field"] == "page_size"
    assert error_of(client.get("/v1/jobs", params={"state": "DONE"}), 400)["field"] == "state"
    assert error_of(client.get("/v1/jobs", params={"colour": "red"}), 400)["field"] == "colour"


@LOCAL_ONLY
def test_datasets_dedup_and_reuse(api: Any, submit: Submit, data_npz: bytes) -> None:
    client = api.new_team()
    first = client.post("/v1/datasets", files={"data": ("d.npz", data_npz)})
    assert first.status_code == 201, first.text
    dataset = first.json()
    assert dataset["sha256"] == hashlib.sha256(data_npz).hexdigest() and dataset["size"] == len(data_npz)
    again = client.post("/v1/datasets", files={"data": ("copy.npz", data_npz)})
    assert again.status_code == 200 and again.json()["id"] == dataset["id"]
    assert len(list(api.services.artifacts.list("datasets/"))) == 1
    assert client.get(f"/v1/datasets/{dataset['id']}").json() == dataset
    job = submit(client, data=None, dataset_id=(None, dataset["id"]))
    assert job.status_code == 201 and job.json()["dataset_id"] == dataset["id"] and job.json()["data_sha256"] is None
    assert error_of(client.get(f"/v1/datasets/{uuid.uuid4()}"), 404)["code"] == "NOT_FOUND"
    bad = client.post("/v1/datasets", files={"data": ("d.npz", npz(x_train=np.zeros((2, 3), np.float64)))})
    assert error_of(bad, 422) == {"code": "BAD_DATA", "message": bad.json()["error"]["message"], "field": "x_train"}


@S3_ONLY
def test_a_dataset_sent_in_parts_straight_to_s3(api: Any) -> None:
    """The API signs one URL per part and joins them; it never carries the bytes. A declared size the parts
    do not have is refused; another team's upload cannot be completed or aborted; an aborted one is gone."""
    client, intruder = api.new_team(), api.new_team()
    body = os.urandom((5 << 20) + 777)  # two parts of S3's smallest size
    digest = hashlib.sha256(body).hexdigest()

    def start(size: int) -> dict[str, Any]:
        answer = client.post("/v1/datasets/uploads", json={"size": size, "sha256": digest, "part_size": 5 << 20})
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def send(upload: dict[str, Any]) -> dict[str, Any]:
        parts = []
        for part in upload["parts"]:
            start_at = (part["part_number"] - 1) * upload["part_size"]
            put = requests.put(part["url"], data=body[start_at : start_at + upload["part_size"]], timeout=30)
            assert put.status_code == 200, put.text
            parts.append({"part_number": part["part_number"], "etag": put.headers["ETag"]})
        return {"upload_token": upload["upload_token"], "parts": parts}

    upload = start(len(body))
    assert [part["part_number"] for part in upload["parts"]] == [1, 2]
    assert all("Authorization" not in part["url"] and "X-Amz-Signature" in part["url"] for part in upload["parts"])
    completion = send(upload)
    path = f"/v1/datasets/uploads/{upload['id']}"
    assert error_of(intruder.post(f"{path}/complete", json=completion), 404)["code"] == "NOT_FOUND"
    gone = intruder.delete(path, params={"upload_token": upload["upload_token"]})
    assert error_of(gone, 404)["code"] == "NOT_FOUND"
    shuffled = {**completion, "parts": completion["parts"][::-1]}
    assert error_of(client.post(f"{path}/complete", json=shuffled), 400)["field"] == "parts"
    done = client.post(f"{path}/complete", json=completion)
    assert done.status_code == 201, done.text
    dataset = done.json()
    assert dataset["sha256"] == digest and dataset["size"] == len(body)
    [key] = list(api.services.artifacts.list("datasets/"))
    assert b"".join(api.services.artifacts.open_stream(key)) == body

    again = start(len(body))  # the same bytes again: the same dataset, the copy removed
    repeated = client.post(f"/v1/datasets/uploads/{again['id']}/complete", json=send(again))
    assert repeated.status_code == 200 and repeated.json()["id"] == dataset["id"]
    assert len(list(api.services.artifacts.list("datasets/"))) == 1

    short = start(len(body) + 1)
    refused = client.post(f"/v1/datasets/uploads/{short['id']}/complete", json=send(short))
    assert error_of(refused, 400)["field"] == "parts" and "declared" in refused.json()["error"]["message"]
    aborted = start(len(body))
    assert client.delete(f"/v1/datasets/uploads/{aborted['id']}", params={"upload_token": aborted["upload_token"]})
    stale = {"upload_token": aborted["upload_token"], "parts": [{"part_number": 1, "etag": "sent before"}]}
    assert error_of(client.post(f"/v1/datasets/uploads/{aborted['id']}/complete", json=stale), 404)
    assert len(list(api.services.artifacts.list("datasets/"))) == 1


@LOCAL_ONLY
def test_datasets_in_parts_need_s3_and_their_limits_name_the_field(api: Any) -> None:
    client = api.new_team()
    refused = client.post("/v1/datasets/uploads", json={"size": 10, "sha256": "a" * 64})
    assert error_of(refused, 409)["field"] == "size" and "S3 artifact store" in refused.json()["error"]["message"]
    too_big = client.post("/v1/datasets/uploads", json={"size": 1 << 50, "sha256": "a" * 64})
    assert error_of(too_big, 413)["field"] == "size"
    too_many = client.post("/v1/datasets/uploads", json={"size": 100 << 30, "sha256": "a" * 64, "part_size": 5 << 20})
    assert error_of(too_many, 400)["field"] == "part_size"
    assert error_of(client.post("/v1/datasets/uploads", json={"size": 10, "sha256": "xyz"}), 400)["field"] == "sha256"
    assert error_of(client.post("/v1/datasets/uploads", data="{"), 400)["field"] == "Content-Type"


@LOCAL_ONLY
def test_quota_is_429(api: Any, submit: Submit) -> None:
    client = api.new_team(max_queued=1)
    first = submit(client).json()["id"]
    assert error_of(submit(client), 429)["code"] == "QUOTA"
    assert {k.split("/")[1] for k in api.services.artifacts.list("jobs/")} == {first}, "refused uploads are deleted"


# ------------------------------------------------------------ input checks (one backend)


@SQLITE_ONLY
@LOCAL_ONLY
@pytest.mark.parametrize(
    ("parts", "status", "code", "field"),
    [
        ({"config": (None, '{"version": 1, "conv1": {"retrain_enable": true, "colour": 1}}')}, 422, "BAD_CONFIG", None),
        ({"config": (None, '{"batch_num": 7}')}, 422, "BAD_CONFIG", "batch_num"),
        ({"config": (None, "{not json")}, 422, "BAD_CONFIG", "config"),
        (  # INT4 on the default target, onnxruntime-cpu, which has no int4 kernels
            {"config": (None, '{"version": 1, "fc": {"retrain_weight_config": {"dst_type": "INT4"}}}')},
            422,
            "BAD_CONFIG",
            "fc.retrain_weight_config.dst_type",
        ),
        ({"spec": (None, '{"accuracy": {"weight_bits_budget": 6.0}}')}, 422, "BAD_SPEC", "accuracy.weight_bits_budget"),
        ({"spec": (None, '{"epochs": 1, "warmup": 3}')}, 422, "BAD_SPEC", "warmup"),
        ({"spec": (None, '{"batch_size": 0}')}, 422, "BAD_SPEC", "batch_size"),
        ({"spec": (None, "[1]")}, 422, "BAD_SPEC", "spec"),
        ({"model": ("model.pt2", b"not a zip archive")}, 400, "INVALID_ARGUMENT", "model"),
        ({"model": None}, 400, "INVALID_ARGUMENT", "model"),
        ({"data": None}, 400, "INVALID_ARGUMENT", "data"),
        ({"dataset_id": (None, str(uuid.uuid4()))}, 400, "INVALID_ARGUMENT", "data"),
        ({"data": None, "dataset_id": (None, "not-a-uuid")}, 400, "INVALID_ARGUMENT", "dataset_id"),
        ({"data": ("d.npz", b"PK\x03\x04 broken")}, 422, "BAD_DATA", "data"),
        (
            {"data": ("d.npz", npz(x_train=np.zeros((2, 3), np.float32), y_train=np.zeros(3, np.int64)))},
            422,
            "BAD_DATA",
            "y_train",
        ),
        ({"data": ("d.npz", npz(x_train=np.zeros((2, 3), np.float32), labels=np.zeros(2)))}, 422, "BAD_DATA", "labels"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(
    api: Any, submit: Submit, parts: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    error = error_of(submit(api.new_team(), **parts), status)
    assert error["code"] == code
    if field is not None:
        assert error["field"] == field
    assert not list(api.services.artifacts.list("jobs/")), "a refused submission stores nothing"


@SQLITE_ONLY
@LOCAL_ONLY
def test_unknown_config_key_names_it(api: Any, submit: Submit) -> None:
    config = {"fc": {"retrain_enable": True, "retrain_data_config": {"algo": "ulq_quantize", "clip_mx": 3.0}}}
    error = error_of(submit(api.new_team(), config=("config.json", json.dumps(config))), 422)
    assert "clip_mx" in error["message"] and "clip_mx" in (error["field"] or "")


@SQLITE_ONLY
@LOCAL_ONLY
def test_calibration_limit(api: Any, submit: Submit) -> None:
    client = api.new_team()
    over = submit(client, config=(None, '{"batch_num": 7}'), spec=(None, '{"batch_size": 8}'))
    assert "50" in error_of(over, 422)["message"]
    assert submit(client, config=(None, '{"batch_num": 6}'), spec=(None, '{"batch_size": 8}')).status_code == 201


@SQLITE_ONLY
@LOCAL_ONLY
def test_too_large_is_413(make_api: Callable[..., Any], submit: Submit, model_pt2: bytes) -> None:
    api = make_api(QAT_MAX_MODEL_BYTES="2KiB", QAT_MAX_DATA_BYTES="2KiB", QAT_MAX_CONFIG_BYTES="1KiB")
    client = api.new_team()
    assert len(model_pt2) > 2048
    assert error_of(submit(client), 413)["field"] == "model"
    huge_config = (None, json.dumps({"version": 1, "pad": "x" * 4000}))
    tiny_pt2 = layout_only_pt2()
    assert error_of(submit(client, model=("m.pt2", tiny_pt2), config=huge_config), 413)["field"] == "config"
    # a declared body over the endpoint's limit is refused from its Content-Length alone
    body = b"\0" * (4 << 20)
    headers = {"Content-Type": "multipart/form-data; boundary=x"}
    assert error_of(client.post("/v1/jobs", data=body, headers=headers), 413)["field"] == "body"
    # a chunked body (no Content-Length) is cut off while streaming
    chunked = client.post("/v1/jobs", data=iter([b"\0" * (1 << 20)] * 8), headers=headers)
    assert error_of(chunked, 413)["code"] == "TOO_LARGE"


@SQLITE_ONLY
@LOCAL_ONLY
def test_authentication(api: Any) -> None:
    assert error_of(api.client(None).get("/v1/jobs"), 401)["code"] == "UNAUTHENTICATED"
    assert error_of(api.client("qat_0123456789ab_guess").get("/v1/jobs"), 401)["field"] == "Authorization"
    basic = api.client(None)
    basic.headers["Authorization"] = "Basic dXNlcjpwdw=="
    assert basic.get("/v1/datasets/" + str(uuid.uuid4())).status_code == 401
    issued = create_team(api.services.db, f"team-{uuid.uuid4().hex[:8]}")
    assert api.client(issued.token).get("/v1/jobs").status_code == 200
    revoke_token(api.services.db, issued.prefix)
    assert error_of(api.client(issued.token).get("/v1/jobs"), 401)["code"] == "UNAUTHENTICATED"


@SQLITE_ONLY
@LOCAL_ONLY
def test_unknown_routes_and_methods_are_json(api: Any) -> None:
    assert error_of(api.client(None).get("/v2/nothing"), 404)["code"] == "NOT_FOUND"
    assert error_of(api.client(None).delete("/healthz"), 405)["code"] == "METHOD_NOT_ALLOWED"
    client = api.new_team()
    assert error_of(client.get("/v1/jobs/not-a-uuid"), 404)["code"] == "NOT_FOUND"
    assert error_of(client.post("/v1/jobs", json={"model": "x"}), 400)["field"] == "Content-Type"


# ------------------------------------------------------------------- operations endpoints


def test_health_ready_and_metrics(api: Any, submit: Submit) -> None:
    probe = api.client(None)
    assert probe.get("/healthz").json()["status"] == "ok"
    ready = probe.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}
    submit(api.new_team())
    metrics = probe.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["Content-Type"].startswith("text/plain")
    assert 'qat_jobs{state="QUEUED"} 1.0' in metrics.text
    assert "qat_queue_depth 1.0" in metrics.text
    assert 'qat_http_requests_total{endpoint="/v1/jobs",method="POST",status="201"} 1.0' in metrics.text
    assert "qat_http_request_duration_seconds_bucket" in metrics.text


@SQLITE_ONLY
@S3_ONLY
def test_readyz_reports_unreachable_storage(make_api: Callable[..., Any], s3_endpoint: str, submit: Submit) -> None:
    api = make_api(store=S3Store("qat-no-such-bucket", endpoint_url=s3_endpoint))
    refused = submit(api.new_team())
    assert refused.status_code == 503 and refused.json()["error"] == {
        "code": "STORAGE_UNAVAILABLE",
        "message": "the artifact store is unreachable right now; retry in a few seconds",
        "field": None,
    }
    ready = api.client(None).get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable" and body["checks"] == {
        "database": "ok",
        "broker": "ok",
        "storage": "unavailable",
    }
    assert "qat-no-such-bucket" not in ready.text and s3_endpoint.split("//")[1] not in ready.text, (
        "no address to strangers"
    )


@SQLITE_ONLY
@S3_ONLY
def test_download_redirects_to_presigned_url(
    make_api: Callable[..., Any], submit: Submit, s3_endpoint: str, s3_bucket: str
) -> None:
    """The default on S3; signed for the address clients use (here ``localhost`` for the API's 127.0.0.1)."""
    public = s3_endpoint.replace("127.0.0.1", "localhost")
    api = make_api(store=S3Store(s3_bucket, "some/prefix", s3_endpoint, public_endpoint_url=public))
    client = api.new_team()
    job_id = submit(client).json()["id"]
    svc = api.services
    key = f"jobs/{job_id}/results/model.onnx"
    size, sha256 = svc.artifacts.put_stream(key, io.BytesIO(b"onnx bytes"))
    assert claim_job(svc.db, uuid.UUID(job_id), "w", 60)
    finish_job(svc.db, uuid.UUID(job_id), "w", 1, METRICS, [NewArtifact("model.onnx", size, sha256, key)])
    redirect = client.get(f"/v1/jobs/{job_id}/artifacts/model.onnx", allow_redirects=False)
    assert redirect.status_code == 302 and "X-Amz-Signature" in redirect.headers["Location"]
    assert redirect.headers["Location"].startswith(f"{public}/")
    assert requests.get(redirect.headers["Location"], timeout=10).content == b"onnx bytes"
