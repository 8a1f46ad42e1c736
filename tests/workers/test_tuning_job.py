"""A job with ``spec.accuracy`` through the whole embedded deployment: API, dispatcher,
worker and its sandboxed child; the tuner's progress phase and report reach the user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.pool import Pool, finished, running, submit

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # two torch threads on a busy two-core machine are many times slower


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("digits")
    code = f"from quantlib.examples.digits import write_example; write_example({str(out)!r}, epochs=5)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env={**os.environ, **ONE_THREAD})
    return out / "model.pt2", out / "data.npz"


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    with running(Pool(tmp_path_factory.mktemp("pool"), **ONE_THREAD)) as started:
        yield started


def test_tuning_job_publishes_its_trials(digits: tuple[Path, Path], pool: Pool) -> None:
    model, data = digits
    files = {"model": ("model.pt2", model.read_bytes()), "data": ("data.npz", data.read_bytes())}
    bad = pool.post("/v1/jobs", data={"spec": '{"accuracy": {"metric": "top5"}}'}, files=files)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "accuracy.metric", bad.text

    # No QAT model reaches zero output noise, so both trials run and the verdict is "not suitable".
    spec = {"epochs": 1, "accuracy": {"metric": "sqnr", "max_drop": 0, "max_trials": 2}}

    job_id = submit(pool, digits, spec)
    phases = set()
    job = pool.wait_for_job(job_id, lambda j: phases.add(j["phase"]) or finished(j), timeout_s=240)
    assert job["state"] == "SUCCEEDED", job["failure"]
    assert job["spec"]["accuracy"]["max_trials"] == 2

    report = json.loads(pool.get(f"/v1/jobs/{job_id}/artifacts/report.json").content)
    tuning = report["tuning"]
    assert not tuning["met"] and tuning["verdict"].startswith("not suitable for QAT: best drop")
    assert [t["index"] for t in tuning["trials"]] == [0, 1] and len(tuning["trials"][1]["float_layers"]) == 1
    assert len(tuning["sensitivity"]) == 6 and report["files"]["config"] == "config.json"
    assert "tuning" in phases, phases  # the worker relays the tuner's phase to the job row
