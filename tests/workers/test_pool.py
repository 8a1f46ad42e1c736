"""Jobs through the real pool: HTTP in, dispatcher, Celery worker, sandboxed child, HTTP out.

Hostile models are in tests/security (test_pt2_loader.py, test_untrusted_models.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from support.fault_servers import wait_until
from support.pool import Pool, finished, job_processes, running, submit
from workers.protocol import WAITING_NAME

LAYER = {
    "retrain_enable": True,
    "retrain_data_config": {"algo": "ulq_quantize", "dst_type": "INT8"},
    "retrain_weight_config": {"algo": "arq_retrain", "channel_wise": True, "dst_type": "INT8"},
}
LONG_SPEC = {"epochs": 200, "batch_size": 8}


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """The embedded deployment with one worker, as deployed: each job's child started ahead of it."""
    with running(Pool(tmp_path_factory.mktemp("pool"), QAT_CHILD_START_AHEAD="true")) as started:
        yield started


def test_job_succeeds_and_its_int8_model_scores_what_was_reported(digits: tuple[Path, Path], pool: Pool) -> None:
    job_id = submit(pool, digits, {"epochs": 1})
    job = pool.wait_for_job(job_id, finished)
    assert job["state"] == "SUCCEEDED", job["failure"]
    assert job["attempt"] == 1

    listed = {a["name"]: a for a in pool.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"]}
    expected = {"model_int8.onnx", "model_fake_quant.onnx", "record.txt", "record.json", "config.json"}
    assert expected | {"report.json", "report.html", "log.txt"} == set(listed)
    onnx_bytes = pool.get(f"/v1/jobs/{job_id}/artifacts/model_int8.onnx").content
    assert hashlib.sha256(onnx_bytes).hexdigest() == listed["model_int8.onnx"]["sha256"]
    stored = list((pool.root / "artifacts" / "jobs" / job_id).glob("attempt-1/model_int8.onnx"))
    assert stored, "results are stored under the attempt's own prefix"

    eval_data = np.load(digits[1])
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: eval_data["x_eval"]})[0]
    top1 = float((logits.argmax(1) == eval_data["y_eval"]).mean())
    reported = job["metrics"]["accuracy"]["int8_onnxruntime"]["top1"]
    assert abs(top1 - reported) < 1e-9
    assert top1 > 0.8

    timings = job["metrics"]["timings_s"]
    assert {"queue_wait", "download", "pipeline", "loading", "calibrating", "training", "exporting", "upload"} <= set(
        timings
    )
    wall = datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["created_at"])
    print(f"\nend-to-end {wall.total_seconds():.2f} s; phases (s):", json.dumps(timings))

    log = pool.get(f"/v1/jobs/{job_id}/artifacts/log.txt").text
    seen = log.split("environment variables:", 1)[1].splitlines()[0].split()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" in seen
    assert not [name for name in seen if name.startswith(("QAT_", "AWS_"))], seen
    report = json.loads(pool.get(f"/v1/jobs/{job_id}/artifacts/report.json").content)
    assert report["files"]["deploy_model"] == "model_int8.onnx"
    assert report["threads"] == 1, "the worker slot's one thread (QAT_CHILD_THREADS), not one per core"


def test_config_naming_a_missing_layer_fails_as_the_users_bad_config(digits: tuple[Path, Path], pool: Pool) -> None:
    config = {"version": 1, "batch_num": 1, "no_such.layer": LAYER}
    job = pool.wait_for_job(submit(pool, digits, {"epochs": 1}, config), finished)
    assert job["state"] == "FAILED"
    assert job["failure"]["code"] == "BAD_CONFIG" and job["failure"]["user_error"] is True
    assert "no_such.layer" in job["failure"]["message"]
    [log] = pool.get(f"/v1/jobs/{job['id']}/artifacts").json()["artifacts"]
    assert log["name"] == "log.txt"
    text = pool.get(f"/v1/jobs/{job['id']}/artifacts/log.txt").text
    assert "no_such.layer" in text, "the failed job's log shows the child's error"
    assert hashlib.sha256(text.encode()).hexdigest() == log["sha256"]


def test_data_that_does_not_fit_the_model_fails_as_the_users_bad_data(
    digits: tuple[Path, Path], pool: Pool, tmp_path: Path
) -> None:
    """The API checks the data against the program's inputs but cannot run the model: a label past its
    outputs passes it, and the worker names the problem."""
    model, _ = digits
    wrong = tmp_path / "wrong.npz"
    rng = np.random.default_rng(0)
    np.savez(wrong, x_train=rng.normal(size=(40, 1, 8, 8)).astype(np.float32), y_train=np.full(40, 12, np.int64))
    job = pool.wait_for_job(submit(pool, (model, wrong), {"epochs": 1}), finished)
    assert job["state"] == "FAILED"
    assert job["failure"]["code"] == "BAD_DATA" and job["failure"]["user_error"] is True, job["failure"]
    assert "label 12, but the model has 10 outputs" in job["failure"]["message"], job["failure"]


def test_cancel_stops_a_running_job_and_keeps_nothing(digits: tuple[Path, Path], pool: Pool) -> None:
    job_id = submit(pool, digits, LONG_SPEC)
    training = pool.wait_for_job(job_id, lambda job: job["phase"] == "training" or finished(job))
    assert training["state"] == "RUNNING" and training["progress"]["total"] > 0
    assert pool.post(f"/v1/jobs/{job_id}/cancel").json()["state"] == "CANCELLING"
    job = pool.wait_for_job(job_id, finished, timeout_s=15)
    assert job["state"] == "CANCELLED"
    assert pool.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"] == []
    assert not list((pool.root / "artifacts" / "jobs" / job_id).glob("attempt-*"))


def test_job_over_its_max_runtime_fails_with_timeout(digits: tuple[Path, Path], pool: Pool) -> None:
    job = pool.wait_for_job(submit(pool, digits, {**LONG_SPEC, "max_runtime_s": 3}), finished, timeout_s=60)
    assert job["state"] == "FAILED"
    assert job["failure"]["code"] == "TIMEOUT" and job["failure"]["user_error"] is True
    assert "max_runtime_s" in job["failure"]["message"]


def test_each_job_takes_the_child_started_ahead_of_it_and_the_next_one_waits(
    digits: tuple[Path, Path], pool: Pool
) -> None:
    """Started before its job, used by that job alone, and replaced while the job runs."""
    worker = pool.processes["worker-0"][0].pid
    wait_until(lambda: len(job_processes(worker, WAITING_NAME)) == 1, "a child waiting for the next job")
    [ahead] = job_processes(worker, WAITING_NAME)

    job = pool.wait_for_job(submit(pool, digits, {"epochs": 1}), finished)

    assert job["state"] == "SUCCEEDED", job["failure"]
    assert not Path(f"/proc/{ahead}").exists(), "the child started ahead ran this job and ended with it"
    wait_until(lambda: len(job_processes(worker, WAITING_NAME)) == 1, "the next job's child")
    assert job_processes(worker, WAITING_NAME) != [ahead] and job_processes(worker) == []
    log = pool.get(f"/v1/jobs/{job['id']}/artifacts/log.txt").text
    assert log.count("environment variables:") == 1, "one child ran the job"
