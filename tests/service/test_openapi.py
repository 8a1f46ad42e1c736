"""The OpenAPI document is read off the routes, and every status it lists is one the route answers.

Each documented (method, path, status) has a request here that provokes it from a real
API server (SQLite, a moto S3 bucket; a PostgreSQL database dropped under a running
server for the 503s); the set of provoked triples must equal the document's. With
schemathesis' status check (``tests/security/test_openapi_fuzz.py``: every answer is a
documented one) the two directions are covered.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import requests
from flask import Blueprint, Flask

from quantlib.report import REPORT_HTML
from service.api.app import BLUEPRINTS, create_app
from service.api.openapi import documented_routes, openapi_document, openapi_path
from service.artifacts import LocalStore
from service.db.migrate import upgrade
from service.jobs import NewArtifact, claim_job, finish_job
from service.settings import Settings
from support.api_server import ApiServer
from support.layout_only_pt2 import layout_only_pt2
from support.metrics import METRICS


def on_sqlite_and_s3(test: Callable[..., None]) -> Callable[..., None]:
    """One real setup is enough: SQLite, and S3 because only a store with presigned URLs redirects."""
    return pytest.mark.parametrize("backend", ["sqlite"])(
        pytest.mark.parametrize("artifact_store", ["s3"], indirect=True)(test)
    )


MODEL = layout_only_pt2()
SPEC = json.dumps({"epochs": 1, "batch_size": 8})


def npz(seed: int) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    np.savez(buffer, x_train=rng.standard_normal((8, 4), dtype=np.float32))
    return buffer.getvalue()


@dataclass
class World:
    """Servers and rows to provoke answers from: one team's queued and finished jobs, a dataset."""

    api: ApiServer
    streamed: ApiServer  # downloads streamed, not redirected
    small: ApiServer  # 2 KiB upload limits
    local: ApiServer  # local artifacts: no uploads in parts
    team: requests.Session
    queued: str
    finished: str
    deletable: str  # finished too
    dataset: str
    busy_dataset: str

    def anonymous(self) -> requests.Session:
        return self.api.client(None)

    def submit(self, client: requests.Session | None = None, **parts: Any) -> requests.Response:
        files = {"model": ("m.pt2", MODEL), "data": ("d.npz", npz(0)), "spec": (None, SPEC), **parts}
        return (client or self.team).post("/v1/jobs", files={k: v for k, v in files.items() if v is not None})


def _finish(api: ApiServer, job_id: str) -> None:
    svc = api.services
    assert claim_job(svc.db, uuid.UUID(job_id), "worker-1", 60)
    rows = []
    for name, payload in {REPORT_HTML: b"<html></html>", "model_int8.onnx": b"onnx"}.items():
        key = f"jobs/{job_id}/results/{name}"
        size, sha256 = svc.artifacts.put_stream(key, io.BytesIO(payload))
        rows.append(NewArtifact(name=name, size=size, sha256=sha256, storage_key=key))
    finish_job(svc.db, uuid.UUID(job_id), "worker-1", 1, METRICS, rows)


@pytest.fixture
def world(make_api: Callable[..., ApiServer], tmp_path: Path) -> World:
    api = make_api()
    team = api.new_team()
    submit = World(api, api, api, api, team, "", "", "", "", "").submit
    queued, finished, deletable = (submit().json()["id"] for _ in range(3))
    _finish(api, finished)
    _finish(api, deletable)
    dataset = team.post("/v1/datasets", files={"data": ("d.npz", npz(1))}).json()["id"]
    busy = team.post("/v1/datasets", files={"data": ("d.npz", npz(2))}).json()["id"]
    assert submit(data=None, dataset_id=(None, busy)).status_code == 201
    streamed = make_api(QAT_DOWNLOAD_REDIRECT="false")
    small = make_api(QAT_MAX_MODEL_BYTES="2KiB", QAT_MAX_DATA_BYTES="2KiB")
    local = make_api(store=LocalStore(tmp_path / "local-artifacts"))
    return World(api, streamed, small, local, team, queued, finished, deletable, dataset, busy)


def _start_upload(team: requests.Session, body: bytes) -> dict[str, Any]:
    answer = team.post("/v1/datasets/uploads", json={"size": len(body), "sha256": hashlib.sha256(body).hexdigest()})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _complete(team: requests.Session, upload: dict[str, Any], body: bytes) -> requests.Response:
    put = requests.put(upload["parts"][0]["url"], data=body, timeout=30)
    parts = [{"part_number": 1, "etag": put.headers["ETag"]}]
    return team.post(
        f"/v1/datasets/uploads/{upload['id']}/complete", json={"upload_token": upload["upload_token"], "parts": parts}
    )


def _sent_in_parts(team: requests.Session, body: bytes) -> requests.Response:
    return _complete(team, _start_upload(team, body), body)


def _full_when_completed(team: requests.Session, body: bytes) -> requests.Response:
    """An upload started while the team had room, completed once another dataset took it."""
    upload = _start_upload(team, body)
    assert team.post("/v1/datasets", files={"data": ("d.npz", npz(uuid.uuid4().int % 1000))}).status_code == 201
    return _complete(team, upload, body)


def _no_dataset_room(team: requests.Session) -> requests.Response:
    assert team.post("/v1/datasets", files={"data": ("d.npz", npz(5))}).status_code == 201
    return team.post("/v1/datasets/uploads", json=UPLOAD)


def _aborted(team: requests.Session) -> requests.Response:
    upload = _start_upload(team, b"abandoned")
    return team.delete(f"/v1/datasets/uploads/{upload['id']}", params={"upload_token": upload["upload_token"]})


def _twice(w: World) -> requests.Response:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    files = {"model": ("m.pt2", MODEL), "data": ("d.npz", npz(3)), "spec": (None, SPEC)}
    assert w.team.post("/v1/jobs", files=files, headers=key).status_code == 201
    return w.team.post("/v1/jobs", files=files, headers=key)


def _over_model_limit(w: World) -> requests.Response:
    client = w.small.client(w.team.headers["Authorization"].removeprefix("Bearer "))
    return client.post("/v1/jobs", files={"model": ("m.pt2", layout_only_pt2(4096)), "data": ("d.npz", npz(0))})


def _over_data_limit(w: World) -> requests.Response:
    client = w.small.client(w.team.headers["Authorization"].removeprefix("Bearer "))
    return client.post("/v1/datasets", files={"data": ("d.npz", b"\0" * 4096)})


def _second(request: Callable[[requests.Session], requests.Response], team: requests.Session) -> requests.Response:
    """The same request twice for a team whose quota allows one: the second answer."""
    assert request(team).status_code == 201
    return request(team)


MISSING = str(uuid.uuid4())
UPLOAD = {"size": 10, "sha256": "a" * 64}
Provoke = Callable[[World], requests.Response]
# (method, path, status) -> a request that gets that answer; 401 and 503 are generic (below)
PROVOKE: dict[tuple[str, str, int], Provoke] = {
    ("POST", "/v1/jobs", 201): lambda w: w.submit(),
    ("POST", "/v1/jobs", 200): _twice,
    ("POST", "/v1/jobs", 400): lambda w: w.submit(data=None),
    ("POST", "/v1/jobs", 404): lambda w: w.submit(data=None, dataset_id=(None, MISSING)),
    ("POST", "/v1/jobs", 413): _over_model_limit,
    ("POST", "/v1/jobs", 422): lambda w: w.submit(spec=(None, json.dumps({"epochs": "many"}))),
    ("POST", "/v1/jobs", 429): lambda w: _second(lambda team: w.submit(team), w.api.new_team(max_queued=1)),
    ("POST", "/v1/jobs", 507): lambda w: w.submit(w.api.new_team(max_storage_bytes=100)),
    ("GET", "/v1/jobs", 200): lambda w: w.team.get("/v1/jobs"),
    ("GET", "/v1/jobs", 400): lambda w: w.team.get("/v1/jobs?page_size=0"),
    ("GET", "/v1/jobs/{job_id}", 200): lambda w: w.team.get(f"/v1/jobs/{w.queued}"),
    ("GET", "/v1/jobs/{job_id}", 404): lambda w: w.team.get(f"/v1/jobs/{MISSING}"),
    ("DELETE", "/v1/jobs/{job_id}", 200): lambda w: w.team.delete(f"/v1/jobs/{w.deletable}"),
    ("DELETE", "/v1/jobs/{job_id}", 404): lambda w: w.team.delete(f"/v1/jobs/{MISSING}"),
    ("DELETE", "/v1/jobs/{job_id}", 409): lambda w: w.team.delete(f"/v1/jobs/{w.queued}"),
    ("GET", "/v1/jobs/{job_id}/events", 200): lambda w: w.team.get(f"/v1/jobs/{w.finished}/events"),
    ("GET", "/v1/jobs/{job_id}/events", 404): lambda w: w.team.get(f"/v1/jobs/{MISSING}/events"),
    ("POST", "/v1/jobs/{job_id}/cancel", 200): lambda w: w.team.post(f"/v1/jobs/{w.queued}/cancel"),
    ("POST", "/v1/jobs/{job_id}/cancel", 404): lambda w: w.team.post(f"/v1/jobs/{MISSING}/cancel"),
    ("POST", "/v1/jobs/{job_id}/cancel", 409): lambda w: w.team.post(f"/v1/jobs/{w.finished}/cancel"),
    ("GET", "/v1/jobs/{job_id}/artifacts", 200): lambda w: w.team.get(f"/v1/jobs/{w.finished}/artifacts"),
    ("GET", "/v1/jobs/{job_id}/artifacts", 404): lambda w: w.team.get(f"/v1/jobs/{MISSING}/artifacts"),
    ("GET", "/v1/jobs/{job_id}/artifacts/{name}", 200): lambda w: w.streamed.client(
        w.team.headers["Authorization"].removeprefix("Bearer ")
    ).get(f"/v1/jobs/{w.finished}/artifacts/model_int8.onnx"),
    ("GET", "/v1/jobs/{job_id}/artifacts/{name}", 302): lambda w: w.team.get(
        f"/v1/jobs/{w.finished}/artifacts/model_int8.onnx", allow_redirects=False
    ),
    ("GET", "/v1/jobs/{job_id}/artifacts/{name}", 404): lambda w: w.team.get(f"/v1/jobs/{w.finished}/artifacts/x"),
    ("GET", "/v1/jobs/{job_id}/report", 200): lambda w: w.team.get(f"/v1/jobs/{w.finished}/report"),
    ("GET", "/v1/jobs/{job_id}/report", 404): lambda w: w.team.get(f"/v1/jobs/{w.queued}/report"),
    ("POST", "/v1/datasets", 201): lambda w: w.team.post("/v1/datasets", files={"data": ("d.npz", npz(4))}),
    ("POST", "/v1/datasets", 200): lambda w: w.team.post("/v1/datasets", files={"data": ("d.npz", npz(1))}),
    ("POST", "/v1/datasets", 400): lambda w: w.team.post("/v1/datasets", files={"other": ("d.npz", npz(4))}),
    ("POST", "/v1/datasets", 413): _over_data_limit,
    ("POST", "/v1/datasets", 422): lambda w: w.team.post("/v1/datasets", files={"data": ("d.npz", b"not an npz")}),
    ("POST", "/v1/datasets", 429): lambda w: _second(
        lambda team: team.post("/v1/datasets", files={"data": ("d.npz", npz(uuid.uuid4().int % 1000))}),
        w.api.new_team(max_datasets=1),
    ),
    ("POST", "/v1/datasets", 507): lambda w: w.api.new_team(max_storage_bytes=100).post(
        "/v1/datasets", files={"data": ("d.npz", npz(4))}
    ),
    ("POST", "/v1/datasets/uploads", 201): lambda w: w.team.post("/v1/datasets/uploads", json=UPLOAD),
    ("POST", "/v1/datasets/uploads", 400): lambda w: w.team.post("/v1/datasets/uploads", json={**UPLOAD, "size": 0}),
    ("POST", "/v1/datasets/uploads", 409): lambda w: w.local.client(
        w.team.headers["Authorization"].removeprefix("Bearer ")
    ).post("/v1/datasets/uploads", json=UPLOAD),
    ("POST", "/v1/datasets/uploads", 413): lambda w: w.team.post(
        "/v1/datasets/uploads", json={**UPLOAD, "size": 1 << 50}
    ),
    ("POST", "/v1/datasets/uploads", 429): lambda w: _no_dataset_room(w.api.new_team(max_datasets=1)),
    ("POST", "/v1/datasets/uploads", 507): lambda w: w.api.new_team(max_storage_bytes=5).post(
        "/v1/datasets/uploads", json=UPLOAD
    ),
    ("POST", "/v1/datasets/uploads/{upload_id}/complete", 201): lambda w: _sent_in_parts(w.team, b"new bytes"),
    ("POST", "/v1/datasets/uploads/{upload_id}/complete", 200): lambda w: _second(
        lambda team: _sent_in_parts(team, b"same bytes"), w.team
    ),
    ("POST", "/v1/datasets/uploads/{upload_id}/complete", 400): lambda w: w.team.post(
        f"/v1/datasets/uploads/{MISSING}/complete",
        json={"upload_token": "t", "parts": [{"part_number": 2, "etag": "e"}]},
    ),
    ("POST", "/v1/datasets/uploads/{upload_id}/complete", 404): lambda w: w.team.post(
        f"/v1/datasets/uploads/{MISSING}/complete",
        json={"upload_token": "t", "parts": [{"part_number": 1, "etag": "e"}]},
    ),
    ("POST", "/v1/datasets/uploads/{upload_id}/complete", 429): lambda w: _full_when_completed(
        w.api.new_team(max_datasets=1), b"x" * 100
    ),
    ("POST", "/v1/datasets/uploads/{upload_id}/complete", 507): lambda w: _full_when_completed(
        w.api.new_team(max_storage_bytes=1000),
        b"x" * 700,  # fits alone; with the ~400-byte dataset, not
    ),
    ("DELETE", "/v1/datasets/uploads/{upload_id}", 204): lambda w: _aborted(w.team),
    ("DELETE", "/v1/datasets/uploads/{upload_id}", 400): lambda w: w.team.delete(f"/v1/datasets/uploads/{MISSING}"),
    ("DELETE", "/v1/datasets/uploads/{upload_id}", 404): lambda w: w.team.delete(
        f"/v1/datasets/uploads/{MISSING}", params={"upload_token": "t"}
    ),
    ("GET", "/v1/datasets/{dataset_id}", 200): lambda w: w.team.get(f"/v1/datasets/{w.dataset}"),
    ("GET", "/v1/datasets/{dataset_id}", 404): lambda w: w.team.get(f"/v1/datasets/{MISSING}"),
    ("DELETE", "/v1/datasets/{dataset_id}", 204): lambda w: w.team.delete(f"/v1/datasets/{w.dataset}"),
    ("DELETE", "/v1/datasets/{dataset_id}", 404): lambda w: w.team.delete(f"/v1/datasets/{MISSING}"),
    ("DELETE", "/v1/datasets/{dataset_id}", 409): lambda w: w.team.delete(f"/v1/datasets/{w.busy_dataset}"),
    ("GET", "/healthz", 200): lambda w: w.anonymous().get("/healthz"),
    ("GET", "/readyz", 200): lambda w: w.anonymous().get("/readyz"),
    ("GET", "/metrics", 200): lambda w: w.anonymous().get("/metrics"),
    ("GET", "/v1/openapi.json", 200): lambda w: w.anonymous().get("/v1/openapi.json"),
    ("GET", "/", 200): lambda w: w.anonymous().get("/"),
    ("GET", "/docs", 200): lambda w: w.anonymous().get("/docs"),
    ("GET", "/docs/init.js", 200): lambda w: w.anonymous().get("/docs/init.js"),
    ("GET", "/docs/assets/{name}", 200): lambda w: w.anonymous().get("/docs/assets/swagger-ui-bundle.js"),
    ("GET", "/docs/assets/{name}", 404): lambda w: w.anonymous().get("/docs/assets/core.py"),
}


def _concrete(path: str, w: World) -> str:
    concrete = path.replace("{job_id}", w.finished).replace("{dataset_id}", w.dataset).replace("{name}", "x")
    return concrete.replace("{upload_id}", MISSING)


def documented(document: dict[str, Any]) -> set[tuple[str, str, int]]:
    return {
        (method.upper(), path, int(status))
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for status in operation["responses"]
    }


@on_sqlite_and_s3
def test_every_documented_status_is_one_the_route_answers(world: World, new_pg_database: Callable[[], str]) -> None:
    document = world.team.get("/v1/openapi.json").json()
    wanted = documented(document)
    generic = {t for t in wanted if t[2] in (401, 503) and t[1].startswith("/v1/") and t[1] != "/v1/openapi.json"}
    assert wanted - generic - {("GET", "/readyz", 503)} == set(PROVOKE), "PROVOKE and the document disagree"
    for (method, path, status), provoke in PROVOKE.items():
        answer = provoke(world)
        assert answer.status_code == status, f"{method} {path}: wanted {status}, got {answer.status_code} {answer.text}"
    for method, path, status in sorted(generic):
        if status == 401:
            answer = world.anonymous().request(method, _concrete(path, world))
            assert answer.status_code == 401, f"{method} {path}: {answer.status_code}"
    _database_gone(world, new_pg_database, sorted(t for t in generic if t[2] == 503))


def _database_gone(world: World, new_pg_database: Callable[[], str], routes: list[tuple[str, str, int]]) -> None:
    """A server whose PostgreSQL database is dropped answers 503 on every /v1 route, and /readyz 503."""
    url = new_pg_database()
    upgrade(url)
    env = {"QAT_DATABASE_URL": url, "QAT_BROKER_URL": "filesystem:///tmp/unused", "QAT_ARTIFACTS": "/tmp/unused"}
    server = ApiServer(create_app(Settings.from_env(env), store=world.api.services.artifacts))
    try:
        client = server.new_team()
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        for method, path, _ in routes:
            answer = client.request(method, _concrete(path, world))
            assert answer.status_code == 503, f"{method} {path} with the database gone: {answer.status_code}"
        assert server.client(None).get("/readyz").status_code == 503
    finally:
        server.close()


def test_a_route_without_a_declared_operation_cannot_reach_the_document() -> None:
    app = Flask(__name__)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    undeclared = Blueprint("undeclared", __name__)
    undeclared.add_url_rule("/v1/secret", "secret", lambda: "")
    app.register_blueprint(undeclared)
    with pytest.raises(LookupError, match="/v1/secret"):
        openapi_document(app)


@on_sqlite_and_s3
def test_paths_come_from_the_url_map(world: World) -> None:
    app = world.api.app
    routes = {(openapi_path(rule), method) for rule, method, _ in documented_routes(app)}
    document = world.team.get("/v1/openapi.json").json()
    assert routes == {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    assert ("/v1/jobs/{job_id}/artifacts/{name}", "GET") in routes
