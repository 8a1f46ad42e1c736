"""The API as a process: `qat serve`, no torch, refusing an old schema, its OpenAPI document."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from openapi_spec_validator import validate

from bench.served import QAT, free_port, served_api
from service.api.app import create_app
from service.api.openapi import openapi_document
from service.errors import SchemaOutOfDate
from service.settings import Settings


@pytest.fixture
def sqlite_env(migrated_sqlite_template: Path, tmp_path: Path) -> dict[str, str]:
    """``QAT_*`` variables for a migrated SQLite database and local artifacts under ``tmp_path``."""
    shutil.copyfile(migrated_sqlite_template, tmp_path / "qat.db")
    return {
        "QAT_DATABASE_URL": f"sqlite:///{tmp_path / 'qat.db'}",
        "QAT_BROKER_URL": f"filesystem://{tmp_path / 'broker'}",
        "QAT_ARTIFACTS": str(tmp_path / "artifacts"),
    }


def test_api_process_never_imports_torch(sqlite_env: dict[str, str], tmp_path: Path) -> None:
    """Build the app and submit a job through it (a zip stands in for the model) in a fresh interpreter."""
    code = f"""
import io, json, sys, zipfile
import numpy as np
from service.api.app import create_app
from service.settings import Settings
from service.teams import create_team
app = create_app(Settings.from_env({sqlite_env!r}))
token = create_team(app.extensions["qat"].db, "ml").token
model, data = io.BytesIO(), io.BytesIO()
with zipfile.ZipFile(model, "w") as archive:
    archive.writestr("archive/archive_format", "pt2")
    archive.writestr("archive/models/model.json", "{{}}")
np.savez(data, x_train=np.zeros((2, 3), np.float32))
client = app.test_client()
headers = {{"Authorization": "Bearer " + token}}
form = {{"model": (io.BytesIO(model.getvalue()), "m.pt2"), "data": (io.BytesIO(data.getvalue()), "d.npz"),
         "config": '{{"batch_num": 2}}', "spec": '{{"epochs": 1, "batch_size": 4}}'}}
created = client.post("/v1/jobs", data=form, headers=headers)
assert created.status_code == 201, created.get_data(as_text=True)
for path in ("/v1/jobs", "/readyz", "/metrics", "/v1/openapi.json", "/"):
    assert client.get(path, headers=headers).status_code == 200, path
assert "torch" not in sys.modules, "the API process imported torch"
"""
    run = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_qat_serve_runs_the_app_under_gevent(sqlite_env: dict[str, str], tmp_path: Path) -> None:
    with served_api(sqlite_env, tmp_path / "serve.log") as url:
        health = requests.get(f"{url}/healthz", timeout=5)
        assert health.json() == {"status": "ok", "checks": {}}
        assert requests.get(f"{url}/v1/jobs", timeout=5).status_code == 401
    assert "qat API on http://127.0.0.1:" in (tmp_path / "serve.log").read_text()


def test_refuses_to_start_on_an_old_schema(tmp_path: Path) -> None:
    settings = Settings.from_env({"QAT_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}, cwd=tmp_path)
    with pytest.raises(SchemaOutOfDate, match="qat db upgrade"):
        create_app(settings)
    serve = subprocess.run(
        [str(QAT), "serve", "--port", str(free_port())],
        env={**_base_env(), "QAT_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode == 2 and "qat db upgrade" in serve.stderr


def test_openapi_document_is_valid_and_complete(sqlite_env: dict[str, str]) -> None:
    app = create_app(Settings.from_env(sqlite_env))
    document: dict[str, Any] = app.test_client().get("/v1/openapi.json").get_json()
    validate(document)
    assert document == openapi_document(app)
    documented = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, f"{method} {path} is not in the OpenAPI document"
    spec_schema = document["components"]["schemas"]["JobSpec"]
    assert {"epochs", "batch_size", "lr", "optimizer", "loss", "device", "priority", "max_runtime_s"} <= set(
        spec_schema["properties"]
    )
    page = app.test_client().get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "/v1/jobs/{job_id}/artifacts/{name}" in page.get_data(as_text=True)
    swagger = app.test_client().get("/docs")
    assert swagger.status_code == 200 and "script-src 'self'" in swagger.headers["Content-Security-Policy"]
    assets = re.findall(r'(?:src|href)="(/docs/[^"]+)"', swagger.get_data(as_text=True))
    assert assets and all(app.test_client().get(asset).status_code == 200 for asset in assets), "served locally"


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("QAT_")}
