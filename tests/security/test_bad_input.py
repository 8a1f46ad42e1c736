"""A corpus of bad requests: each is refused with a 4xx that names the field, and leaves nothing behind.

One table, one test: every row is sent to the same real API server (in the test process, SQLite, a
local artifact store), the answer's status, code and field are checked, and the database and
the store must be exactly as they were before the request. tests/service/test_api.py
covers further cases (listed in its ``test_bad_input_is_a_4xx_naming_the_field`` table,
``test_team_isolation``, ``test_authentication`` and ``test_too_large_is_413``); none is
repeated here. Inputs that only a worker can judge fail the job as the user's error:
labels beyond the model's outputs (test_worker_judged_input.py), config layers the model
lacks and data that does not fit it (tests/workers/test_pool.py).
"""

from __future__ import annotations

import io
import json
import pickle
import resource
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from sqlalchemy import func, select

from service.api.app import create_app
from service.db import Artifact, Dataset, IdempotencyKey, Job, reading
from service.settings import Settings
from support.api_server import ApiServer
from support.hostile_files import (
    npy_claiming,
    npz,
    npz_bomb,
    npz_corrupt_deflate,
    npz_lying_shape,
    pt2_bomb,
    zip_of,
    zip_stating_directory,
)

# small limits, so the over-limit cases stay cheap; bombs unpack far beyond them
LIMITS = {"QAT_MAX_MODEL_BYTES": "8MiB", "QAT_MAX_DATA_BYTES": "8MiB", "QAT_MAX_CONFIG_BYTES": "1MiB"}
BOMB_BYTES = 1 << 30
LAYER = "fc"
X = np.zeros((8, 4), np.float32)
Y = np.arange(8, dtype=np.int64) % 2


def model_bytes() -> bytes:
    """A real ``torch.export`` archive of a one-layer model (whose only layer is ``fc``)."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    buffer = io.BytesIO()
    torch.export.save(torch.export.export(Net().eval(), (torch.randn(1, 4),)), buffer)
    return buffer.getvalue()


MODEL = model_bytes()
DATA = npz(x_train=X, y_train=Y)


def spec(text: str) -> dict[str, Any]:
    return {"spec": (None, text)}


def config(value: Any) -> dict[str, Any]:
    return {"config": (None, value if isinstance(value, str) else json.dumps(value))}


def layer(**sections: Any) -> dict[str, Any]:
    """A config whose one layer entry holds ``sections`` (``data``/``weight`` are merged into defaults)."""
    entry: dict[str, Any] = {"retrain_enable": True}
    if "data" in sections:
        entry["retrain_data_config"] = {"algo": "ulq_quantize", **sections.pop("data")}
    if "weight" in sections:
        entry["retrain_weight_config"] = {"algo": "arq_retrain", **sections.pop("weight")}
    entry.update(sections)
    return config({"version": 1, "batch_num": 1, LAYER: entry})


def data(payload: bytes) -> dict[str, Any]:
    return {"data": ("data.npz", payload)}


def model(payload: bytes) -> dict[str, Any]:
    return {"model": ("model.pt2", payload)}


# what a zip of millions of empty entries states in its end record, without its megabytes
HUGE_DIRECTORY = zip_stating_directory(65_535, 400 << 20)


@dataclass(frozen=True)
class Bad:
    """One bad request and the answer it must get.

    ``parts`` replace (or, as ``None``, drop) parts of a valid ``POST`` to ``path``;
    ``path`` may name ``{own_job}``, ``{other_job}`` or ``{other_dataset}``;
    ``auth`` replaces the team's ``Authorization`` header (``None``: no header).
    """

    name: str
    status: int
    code: str
    field: str | None
    parts: dict[str, Any] = field(default_factory=dict)
    method: str = "POST"
    path: str = "/v1/jobs"
    headers: dict[str, str] = field(default_factory=dict)
    auth: str | None = "team"
    says: str = ""


CASES = [
    # ---- the spec: malformed JSON, wrong types, out-of-range values
    Bad("spec truncated JSON", 422, "BAD_SPEC", "spec", spec('{"epochs": 1,'), says="not valid JSON"),
    Bad("spec is null", 422, "BAD_SPEC", "spec", spec("null"), says="object"),
    Bad("spec NaN", 422, "BAD_SPEC", "spec", spec('{"lr": NaN}'), says="NaN"),
    Bad("spec float overflows to inf", 422, "BAD_SPEC", "spec", spec('{"lr": 1e999}'), says="too large"),
    Bad("spec 5000-digit integer", 422, "BAD_SPEC", "spec", spec('{"seed": ' + "7" * 5000 + "}")),
    Bad("spec nested 100k deep", 422, "BAD_SPEC", "spec", spec("[" * 100_000 + "]" * 100_000), says="nested"),
    Bad("seed beyond 64 bits", 422, "BAD_SPEC", "seed", spec('{"seed": 18446744073709551616}')),
    Bad("epochs negative", 422, "BAD_SPEC", "epochs", spec('{"epochs": -1}')),
    Bad("epochs a list", 422, "BAD_SPEC", "epochs", spec('{"epochs": [1]}')),
    Bad("lr zero", 422, "BAD_SPEC", "lr", spec('{"lr": 0}')),
    Bad("lr a word", 422, "BAD_SPEC", "lr", spec('{"lr": "fast"}')),
    Bad("optimizer unknown", 422, "BAD_SPEC", "optimizer", spec('{"optimizer": "rmsprop"}')),
    Bad("loss unknown", 422, "BAD_SPEC", "loss", spec('{"loss": "hinge"}')),
    Bad("device unknown", 422, "BAD_SPEC", "device", spec('{"device": "tpu"}'), says="cuda"),
    Bad("priority over 9", 422, "BAD_SPEC", "priority", spec('{"priority": 10}')),
    Bad("max_runtime_s zero", 422, "BAD_SPEC", "max_runtime_s", spec('{"max_runtime_s": 0}')),
    Bad(
        "max_runtime_s beyond any rlimit",
        422,
        "BAD_SPEC",
        "max_runtime_s",
        spec('{"max_runtime_s": 4611686018427387904}'),
    ),
    Bad("lr absurd", 422, "BAD_SPEC", "lr", spec('{"lr": 1e300}')),
    Bad("epochs true", 422, "BAD_SPEC", "epochs", spec('{"epochs": true}')),
    Bad("epochs a string", 422, "BAD_SPEC", "epochs", spec('{"epochs": "1"}')),
    Bad("lr true", 422, "BAD_SPEC", "lr", spec('{"lr": true}')),
    Bad("freeze_bn not a bool", 422, "BAD_SPEC", "freeze_bn", spec('{"freeze_bn": "maybe"}')),
    Bad("spec file not UTF-8", 400, "INVALID_ARGUMENT", "spec", {"spec": ("spec.json", b'{"lr": "\xff"}')}),
    Bad("batch_size alone over 50 images", 422, "BAD_CONFIG", "batch_num", spec('{"batch_size": 51}'), says="50"),
    # ---- the config: every seed field with invalid values
    Bad("config is an array", 422, "BAD_CONFIG", "config", config("[]")),
    Bad("config NaN clip", 422, "BAD_CONFIG", "config", config('{"fc": {"retrain_data_config": {"clip_max": NaN}}}')),
    Bad("version 2", 422, "BAD_CONFIG", "version", config({"version": 2})),
    Bad("version a string", 422, "BAD_CONFIG", "version", config({"version": "1"})),
    Bad("version true", 422, "BAD_CONFIG", "version", config({"version": True})),
    Bad("batch_num zero", 422, "BAD_CONFIG", "batch_num", config({"batch_num": 0})),
    Bad("batch_num fractional", 422, "BAD_CONFIG", "batch_num", config({"batch_num": 1.5})),
    Bad("batch_num a string", 422, "BAD_CONFIG", "batch_num", config({"batch_num": "1"})),
    Bad("batch_num null", 422, "BAD_CONFIG", "batch_num", config({"batch_num": None})),
    Bad("layer entry a number", 422, "BAD_CONFIG", LAYER, config({LAYER: 3})),
    Bad(
        "layer unknown section",
        422,
        "BAD_CONFIG",
        f"{LAYER}.retrain_bias_config",
        config({LAYER: {"retrain_bias_config": {}}}),
        says="allowed keys",
    ),
    Bad("retrain_enable a word", 422, "BAD_CONFIG", f"{LAYER}.retrain_enable", layer(retrain_enable="yes")),
    Bad("retrain_enable 1", 422, "BAD_CONFIG", f"{LAYER}.retrain_enable", layer(retrain_enable=1)),
    Bad("data config an array", 422, "BAD_CONFIG", f"{LAYER}.retrain_data_config", layer(retrain_data_config=[])),
    Bad("data algo arq", 422, "BAD_CONFIG", f"{LAYER}.retrain_data_config.algo", layer(data={"algo": "arq_retrain"})),
    Bad("clip_max zero", 422, "BAD_CONFIG", f"{LAYER}.retrain_data_config.clip_max", layer(data={"clip_max": 0})),
    Bad("clip_max a string", 422, "BAD_CONFIG", f"{LAYER}.retrain_data_config.clip_max", layer(data={"clip_max": "3"})),
    Bad("clip_min positive", 422, "BAD_CONFIG", f"{LAYER}.retrain_data_config.clip_min", layer(data={"clip_min": 0.5})),
    Bad(
        "fixed_min a string",
        422,
        "BAD_CONFIG",
        f"{LAYER}.retrain_data_config.fixed_min",
        layer(data={"fixed_min": "false"}),
    ),
    Bad(
        "fixed_min with clip_min",
        422,
        "BAD_CONFIG",
        f"{LAYER}.retrain_data_config",
        layer(data={"fixed_min": True, "clip_min": -1.0}),
        says="remove one",
    ),
    Bad(
        "data dst_type INT16",
        422,
        "BAD_CONFIG",
        f"{LAYER}.retrain_data_config.dst_type",
        layer(data={"dst_type": "INT16"}),
    ),
    Bad(
        "data dst_type lower case",
        422,
        "BAD_CONFIG",
        f"{LAYER}.retrain_data_config.dst_type",
        layer(data={"dst_type": "int8"}),
    ),
    Bad(
        "weight algo ulq",
        422,
        "BAD_CONFIG",
        f"{LAYER}.retrain_weight_config.algo",
        layer(weight={"algo": "ulq_quantize"}),
    ),
    Bad(
        "channel_wise a string",
        422,
        "BAD_CONFIG",
        f"{LAYER}.retrain_weight_config.channel_wise",
        layer(weight={"channel_wise": "true"}),
    ),
    Bad(
        "weight dst_type FP16",
        422,
        "BAD_CONFIG",
        f"{LAYER}.retrain_weight_config.dst_type",
        layer(weight={"dst_type": "FP16"}),
    ),
    # ---- the model file
    Bad("model empty", 400, "INVALID_ARGUMENT", "model", model(b""), says="empty"),
    Bad("model truncated", 400, "INVALID_ARGUMENT", "model", model(MODEL[: len(MODEL) // 2])),
    Bad("model a pickle named .pt2", 400, "INVALID_ARGUMENT", "model", model(pickle.dumps({"w": [1.0]}))),
    Bad(
        "model a zip but not torch.export",
        400,
        "INVALID_ARGUMENT",
        "model",
        model(zip_of({"weights.bin": b"\0" * 64})),
        says="archive_format",
    ),
    Bad("model zip bomb", 413, "TOO_LARGE", "model", model(pt2_bomb(BOMB_BYTES)), says="unpacks"),
    Bad("model zip of a huge directory", 422, "BAD_MODEL", "model", model(HUGE_DIRECTORY), says="at most 200000"),
    Bad("data zip of a huge directory", 422, "BAD_DATA", "data", data(HUGE_DIRECTORY), says="directory"),
    # ---- the data file
    Bad("data truncated", 422, "BAD_DATA", "data", data(DATA[: len(DATA) // 2])),
    Bad("data a .npy not an .npz", 422, "BAD_DATA", "data", data(np.lib.format.magic(1, 0) + b"\0" * 32)),
    Bad("data zip bomb", 413, "TOO_LARGE", "data", data(npz_bomb(BOMB_BYTES)), says="unpacks"),
    Bad(
        "data header claims 364 TiB", 422, "BAD_DATA", "x_train", data(npz_lying_shape((10**7, 10**7))), says="declares"
    ),
    Bad("data header claims 4 GB", 422, "BAD_DATA", "x_train", data(npz_lying_shape((10**5, 10**4)))),
    Bad("bare .npy claiming 40 GiB", 422, "BAD_DATA", "data", data(npy_claiming((10 * 2**30,))), says="single .npy"),
    Bad("npz with a corrupt deflate stream", 422, "BAD_DATA", "x_train", data(npz_corrupt_deflate())),
    Bad(
        "dataset npz with a corrupt deflate stream",
        422,
        "BAD_DATA",
        "x_train",
        data(npz_corrupt_deflate()),
        path="/v1/datasets",
    ),
    Bad(
        "dataset bare .npy claiming 40 GiB",
        422,
        "BAD_DATA",
        "data",
        data(npy_claiming((10 * 2**30,))),
        path="/v1/datasets",
    ),
    Bad(
        "x_train in Fortran order",
        422,
        "BAD_DATA",
        "x_train",
        data(npz(x_train=np.asfortranarray(np.zeros((8, 4), np.float32)))),
        says="ascontiguousarray",
    ),
    Bad("x_train NaN", 422, "BAD_DATA", "x_train", data(npz(x_train=np.full((8, 4), np.nan, np.float32))), says="NaN"),
    Bad(
        "x_train beyond float16's range",
        422,
        "BAD_DATA",
        "x_train",
        data(npz(x_train=np.where(np.eye(8, 4, dtype=bool), np.float32(3e38), np.float32(0)))),
        says="normalise",
    ),
    Bad("x_eval Inf", 422, "BAD_DATA", "x_eval", data(npz(x_train=X, x_eval=np.full((2, 4), np.inf, np.float32)))),
    Bad("label negative", 422, "BAD_DATA", "y_train", data(npz(x_train=X, y_train=Y - 1)), says="negative"),
    Bad("labels float64", 422, "BAD_DATA", "y_train", data(npz(x_train=X, y_train=Y.astype(np.float64)))),
    Bad("x_train int16", 422, "BAD_DATA", "x_train", data(npz(x_train=X.astype(np.int16)))),
    Bad(
        "x_eval lacks an input",
        422,
        "BAD_DATA",
        "x_eval.b",
        data(npz(**{"x_train.a": X, "x_train.b": X, "x_eval.a": X})),
    ),
    Bad("x_train one-dimensional", 422, "BAD_DATA", "x_train", data(npz(x_train=np.zeros(8, np.float32)))),
    Bad("x_train empty", 422, "BAD_DATA", "x_train", data(npz(x_train=np.zeros((0, 4), np.float32)))),
    Bad(
        "x_eval of another shape", 422, "BAD_DATA", "x_eval", data(npz(x_train=X, x_eval=np.zeros((2, 5), np.float32)))
    ),
    Bad("y_eval without x_eval", 422, "BAD_DATA", "y_eval", data(npz(x_train=X, y_train=Y, y_eval=Y))),
    Bad("labels for one split only", 422, "BAD_DATA", "y_eval", data(npz(x_train=X, y_train=Y, x_eval=X))),
    Bad(
        "x_train of objects",
        422,
        "BAD_DATA",
        "x_train",
        data(npz(x_train=np.array([{"a": 1}] * 8, dtype=object))),
        says="pickle",
    ),
    # ---- datasets endpoint
    Bad("dataset zip bomb", 413, "TOO_LARGE", "data", data(npz_bomb(BOMB_BYTES)), path="/v1/datasets"),
    Bad(
        "dataset NaN",
        422,
        "BAD_DATA",
        "x_train",
        data(npz(x_train=np.full((2, 4), np.nan, np.float32))),
        path="/v1/datasets",
    ),
    Bad(
        "dataset without a file",
        400,
        "INVALID_ARGUMENT",
        "data",
        {"data": None, "note": (None, "hi")},
        path="/v1/datasets",
    ),
    # ---- form and transport
    Bad(
        "multipart with a wrong boundary",
        400,
        "INVALID_ARGUMENT",
        "model",
        headers={"Content-Type": "multipart/form-data; boundary=nothere"},
    ),
    Bad("dataset_id in unicode", 400, "INVALID_ARGUMENT", "dataset_id", {"data": None, "dataset_id": (None, "数据集")}),
    Bad(
        "Idempotency-Key of 256 characters",
        400,
        "INVALID_ARGUMENT",
        "Idempotency-Key",
        headers={"Idempotency-Key": "k" * 256},
    ),
    # ---- tokens
    Bad("bearer without a token", 401, "UNAUTHENTICATED", "Authorization", auth="Bearer ", method="GET"),
    Bad(
        "token with non-ASCII bytes",
        401,
        "UNAUTHENTICATED",
        "Authorization",
        auth="Bearer qat_\xe9\xe9\xe9",
        method="GET",
    ),
    Bad("token of 10 kB", 401, "UNAUTHENTICATED", "Authorization", auth="Bearer qat_" + "a" * 10_000, method="GET"),
    Bad(
        "token in the query string",
        401,
        "UNAUTHENTICATED",
        "Authorization",
        auth=None,
        method="GET",
        path="/v1/jobs?access_token=qat_0123456789ab",
    ),
    Bad("no token on a submission", 401, "UNAUTHENTICATED", "Authorization", auth=None),
    # ---- other teams' ids and names that try to escape
    Bad("another team's job events", 404, "NOT_FOUND", "job_id", method="GET", path="/v1/jobs/{other_job}/events"),
    Bad(
        "another team's job log",
        404,
        "NOT_FOUND",
        "job_id",
        method="GET",
        path="/v1/jobs/{other_job}/artifacts/log.txt",
    ),
    Bad(
        "another team's dataset by id",
        404,
        "NOT_FOUND",
        "dataset_id",
        {"data": None, "dataset_id": (None, "{other_dataset}")},
    ),
    Bad(
        "artifact name with ..",
        404,
        "NOT_FOUND",
        "name",
        method="GET",
        path="/v1/jobs/{own_job}/artifacts/..%2F..%2F..%2Fetc%2Fpasswd",
    ),
    Bad(
        "artifact name in unicode",
        404,
        "NOT_FOUND",
        "name",
        method="GET",
        path="/v1/jobs/{own_job}/artifacts/模型.onnx",
    ),
    Bad("page_size a million", 400, "INVALID_ARGUMENT", "page_size", method="GET", path="/v1/jobs?page_size=1000000"),
    Bad("state in lower case", 400, "INVALID_ARGUMENT", "state", method="GET", path="/v1/jobs?state=queued"),
]


@dataclass
class World:
    """A server with a team making the requests, and another team's job and dataset to reach for."""

    api: Any
    team: requests.Session
    ids: dict[str, str]
    root: Path

    def state(self) -> tuple[dict[str, int], list[str]]:
        """Row counts and every stored key: a refused request must change neither."""
        with reading(self.api.services.db) as session:
            counts = {t.__name__: session.scalar(select(func.count()).select_from(t)) or 0 for t in TABLES}
        return counts, list(self.api.services.artifacts.list(""))


TABLES = (Job, Dataset, Artifact, IdempotencyKey)


def post_job(client: requests.Session, parts: dict[str, Any], **kwargs: Any) -> requests.Response:
    base = {"model": ("model.pt2", MODEL), "data": ("data.npz", DATA), "spec": (None, '{"epochs": 1, "batch_size": 8}')}
    files = {k: v for k, v in {**base, **parts}.items() if v is not None}
    return client.post("/v1/jobs", files=files, **kwargs)


@pytest.fixture(scope="module")
def world(migrated_sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One server for the whole table (each row checks its own before/after state)."""
    root = tmp_path_factory.mktemp("corpus")
    shutil.copyfile(migrated_sqlite_template, root / "qat.db")
    env = {
        "QAT_DATABASE_URL": f"sqlite:///{root / 'qat.db'}",
        "QAT_BROKER_URL": f"filesystem://{root / 'broker'}",
        "QAT_ARTIFACTS": str(root / "artifacts"),
        **LIMITS,
    }
    api = ApiServer(create_app(Settings.from_env(env)))
    other = api.new_team()
    other_job = post_job(other, {})
    other_dataset = other.post("/v1/datasets", files={"data": ("d.npz", DATA)})
    team = api.new_team()
    own_job = post_job(team, {})
    assert other_job.status_code == other_dataset.status_code == own_job.status_code == 201
    ids = {
        "other_job": other_job.json()["id"],
        "other_dataset": other_dataset.json()["id"],
        "own_job": own_job.json()["id"],
    }
    yield World(api, team, ids, root)
    api.close()


def fill(text: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        text = text.replace(f"{{{name}}}", value)
    return text


def send(world: World, case: Bad) -> requests.Response:
    client = world.api.client(None)
    if case.auth == "team":
        client.headers["Authorization"] = world.team.headers["Authorization"]
    elif case.auth is not None:
        client.headers["Authorization"] = case.auth.encode("latin-1")  # type: ignore[assignment]
    path = fill(case.path, world.ids)
    parts = {k: (v[0], fill(v[1], world.ids)) if v and isinstance(v[1], str) else v for k, v in case.parts.items()}
    if case.method == "GET":
        return client.get(path, headers=case.headers)
    if path == "/v1/jobs":
        return post_job(client, parts, headers=case.headers)
    base = {"data": ("data.npz", DATA)}
    files = {k: v for k, v in {**base, **parts}.items() if v is not None}
    if "boundary=nothere" in case.headers.get("Content-Type", ""):
        return client.post(path, data=b"--other\r\n\r\n", headers=case.headers)
    return client.post(path, files=files, headers=case.headers)


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 40 and len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_request_is_a_4xx_naming_the_field_and_leaves_nothing(world: World, case: Bad) -> None:
    before = world.state()
    response = send(world, case)
    assert response.status_code == case.status, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == case.code, error
    assert error["field"] == case.field, error
    assert case.says in error["message"], error
    assert len(error["message"]) > 20, "a message a person can act on"
    assert world.state() == before, "a refused request left rows or stored objects behind"


def test_bombs_are_refused_without_inflating_them(world: World) -> None:
    """Inflating either bomb takes 1 GiB; the refusal must come from the zip directory alone."""
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    for parts in (model(pt2_bomb(BOMB_BYTES)), data(npz_bomb(BOMB_BYTES))):
        assert post_job(world.team, parts).status_code == 413
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10) - peak_before
    assert grown < BOMB_BYTES // 4, f"peak memory grew by {grown >> 20} MiB"


def test_upload_file_names_never_become_paths(world: World) -> None:
    """Client file names are ignored: inputs are stored under keys the service chooses."""
    names = {"model": "../../../../evil.pt2", "data": "..\\..\\données-数据.npz"}
    parts = {"model": (names["model"], MODEL), "data": (names["data"], DATA)}
    created = post_job(world.team, parts)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    assert [k for k in world.api.services.artifacts.list("") if job_id in k] == [
        f"jobs/{job_id}/inputs/data.npz",
        f"jobs/{job_id}/inputs/model.pt2",
    ]
    assert not [p for p in world.root.parent.rglob("*") if "evil" in p.name or "数据" in p.name]
