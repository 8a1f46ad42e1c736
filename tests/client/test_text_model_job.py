"""A text model with two named integer inputs as a real job: checked against the program at
submission, then calibrated, fine-tuned, exported and scored by a sandboxed worker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from service.client import ApiError, Client
from support.client_service import Service
from support.zoo import ZOO

BERT = next(entry for entry in ZOO if entry.name == "bert")


@pytest.fixture(scope="module")
def bert_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return BERT.write_job(tmp_path_factory.mktemp("bert"))


def test_a_bert_job_with_token_ids_and_a_mask_runs_and_deploys_them(
    service: Service, bert_job: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = bert_job
    run = service.cli(
        "submit",
        model,
        "--data",
        data,
        "--epochs",
        1,
        "--batch-size",
        16,
        "--wait",
        "--download",
        tmp_path,
        "--json",
        timeout_s=300,
    )
    assert run.returncode == 0, f"{run.stderr}\n--- worker\n{service.deployment.log('worker')[-3000:]}"
    assert json.loads(run.stdout)["state"] == "SUCCEEDED"
    report = json.loads((tmp_path / "report.json").read_text())
    assert list(report["dataset"]["inputs"]) == ["input_ids", "attention_mask"]
    assert report["deploy_vs_simulated"]["agreement"] >= 0.999
    deploy = onnx.load(str(tmp_path / "model_int8.onnx"))
    assert [i.name for i in deploy.graph.input] == ["input_ids", "attention_mask"]


def test_inputs_that_do_not_fit_the_program_are_refused_at_submission(
    service: Service, bert_job: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = bert_job
    arrays = {key: value for key, value in np.load(data).items() if not key.endswith("attention_mask")}
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)  # type: ignore[arg-type]
    with Client(service.url, service.token) as client:
        before = len(list(client.list()))
        with pytest.raises(ApiError) as refused:
            client.submit(model, data=bad)
        assert (refused.value.code, refused.value.status, refused.value.field) == (
            "BAD_DATA",
            422,
            "x_train.attention_mask",
        )
        assert "int64, shape (N, 16)" in refused.value.message
        assert len(list(client.list())) == before
