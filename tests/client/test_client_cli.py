"""The ``qat`` client commands against a real deployment: outputs, ``--json`` and exit codes."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from service.client import Client
from service.contract import Phase
from support.client_service import Finished, Service
from workers.local_deployment import free_port

EXPECTED = {
    "model_int8.onnx",
    "model_fake_quant.onnx",
    "record.txt",
    "record.json",
    "config.json",
    "report.json",
    "report.html",
    "log.txt",
}


def test_submit_wait_download_gets_a_verified_int8_model(finished: Finished) -> None:
    assert finished.job["state"] == "SUCCEEDED"
    assert finished.job["spec"]["epochs"] == 1 and finished.job["spec"]["device"] == "auto"
    downloaded = {Path(path).name for path in finished.job["downloaded"]}
    assert EXPECTED <= downloaded
    assert not list(finished.folder.glob("*.part"))
    accuracy = finished.job["metrics"]["accuracy"]
    assert accuracy["int8_onnxruntime"]["top1"] > 0.8
    report = json.loads((finished.folder / "report.json").read_text())
    assert report["device"] == "cpu", "auto: this worker has no GPU"


def test_status_list_and_wait_show_the_finished_job(service: Service, finished: Finished) -> None:
    job_id = finished.job["id"]
    status = service.cli("status", job_id, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "SUCCEEDED"
    human = service.cli("status", job_id)
    assert human.returncode == 0
    assert "SUCCEEDED" in human.stdout and "FP32 vs INT8" in human.stdout and "INT8 deploy" in human.stdout
    speed = json.loads(status.stdout)["metrics"]["speed"]
    assert speed["batch_sizes"][0] == 1 and len(speed["latency_ratio"]) == len(speed["batch_sizes"])
    assert "FP32 latency (batch 1)" in " ".join(human.stdout.split()), "the speed line under the table"

    listed = service.cli("list", "--json", "--state", "succeeded")
    assert listed.returncode == 0
    assert job_id in [job["id"] for job in json.loads(listed.stdout)["jobs"]]
    assert job_id in service.cli("list").stdout

    waited = service.cli("wait", job_id, "--json")
    assert waited.returncode == 0 and json.loads(waited.stdout)["state"] == "SUCCEEDED"


def test_download_verifies_and_logs_print_log_txt(service: Service, finished: Finished, tmp_path: Path) -> None:
    job_id = finished.job["id"]
    run = service.cli("download", job_id, tmp_path / "again", "--json")
    assert run.returncode == 0, run.stderr
    files = [Path(path) for path in json.loads(run.stdout)["files"]]
    assert {path.name for path in files} == {path.name for path in finished.folder.iterdir()}
    for path in files:
        assert path.read_bytes() == (finished.folder / path.name).read_bytes()

    logs = service.cli("logs", job_id)
    assert logs.returncode == 0
    assert logs.stdout.encode() == (finished.folder / "log.txt").read_bytes()


def test_cancel_then_wait_exits_1(service: Service, digits: tuple[Path, Path]) -> None:
    model, data = digits
    submitted = service.cli("submit", model, "--data", data, "--epochs", 200, "--batch-size", 8, "--json")
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]
    cancelled = service.cli("cancel", job_id, "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["state"] in ("CANCELLING", "CANCELLED")
    waited = service.cli("wait", job_id, "--json", timeout_s=60)
    assert waited.returncode == 1, waited.stderr
    assert json.loads(waited.stdout)["state"] == "CANCELLED"


def test_a_training_job_shows_its_eta_in_qat_status_and_the_python_client(
    service: Service, digits: tuple[Path, Path]
) -> None:
    """The server writes ``eta_s``; the client once read ``eta`` and never showed one."""
    model, data = digits
    submitted = service.cli("submit", model, "--data", data, "--epochs", 200, "--batch-size", 8, "--json")
    job_id = json.loads(submitted.stdout)["id"]
    try:
        with Client(service.url, service.token) as client:
            deadline = time.monotonic() + 120
            job = client.get(job_id)
            while not (job.progress and job.progress.eta_s) and time.monotonic() < deadline and not job.done:
                time.sleep(0.3)
                job = client.get(job_id)
            assert job.phase == Phase.TRAINING and job.progress is not None and job.progress.eta_s, job
        human = service.cli("status", job_id)
        assert human.returncode == 0 and "ETA " in human.stdout, human.stdout
    finally:
        service.cli("cancel", job_id)
        service.cli("wait", job_id, timeout_s=60)


def test_rejected_config_exits_2_with_the_api_error(
    service: Service, digits: tuple[Path, Path], tmp_path: Path
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"version": 2}))
    model, data = digits
    run = service.cli("submit", model, "--data", data, "--config", config)
    assert run.returncode == 2
    assert run.stderr.startswith("error [BAD_CONFIG] ") and "version" in run.stderr


def test_usage_errors_exit_2(service: Service, digits: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = digits
    spec = tmp_path / "spec.json"
    spec.write_text("{}")
    both = service.cli("submit", model, "--data", data, "--spec", spec, "--epochs", 1)
    assert both.returncode == 2 and "--spec" in both.stderr
    assert service.cli("submit", tmp_path / "missing.pt2", "--data", data).returncode == 2
    no_token = service.cli("list", env={"QAT_URL": service.url, "QAT_CONFIG": str(tmp_path / "none.toml")})
    assert no_token.returncode == 2 and "QAT_TOKEN" in no_token.stderr
    bad_token = service.cli("list", "--token", "not-a-token")
    assert bad_token.returncode == 2 and "UNAUTHENTICATED" in bad_token.stderr


def test_unknown_job_exits_2_with_not_found(service: Service) -> None:
    for command in ("status", "wait", "cancel", "logs"):
        run = service.cli(command, str(uuid.uuid4()))
        assert run.returncode == 2, (command, run.stderr)
        assert run.stderr.startswith("error [NOT_FOUND] "), (command, run.stderr)


def test_unreachable_server_exits_3_naming_the_url(service: Service) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    run = service.cli("status", str(uuid.uuid4()), "--url", url)
    assert run.returncode == 3
    assert f"cannot reach the qat service at {url}" in run.stderr


def test_url_and_token_come_from_the_config_file(service: Service, finished: Finished, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'url = "{service.url}"\ntoken = "{service.token}"\n')
    run = service.cli("status", finished.job["id"], "--json", env={"QAT_CONFIG": str(config)})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["id"] == finished.job["id"]


def test_a_full_quota_exits_4_so_scripts_can_retry_later(service: Service, digits: tuple[Path, Path]) -> None:
    team = json.loads(service.deployment.qat("admin", "create-team", "quota-tests", "--max-queued", "1", "--json"))
    env = {"QAT_URL": service.url, "QAT_TOKEN": team["token"]}
    model, data = digits
    runs = [service.cli("submit", model, "--data", data, "--epochs", 200, "--json", env=env) for _ in range(3)]
    for run in runs:
        if run.returncode == 0:
            service.cli("cancel", json.loads(run.stdout)["id"], env=env)
    refused = [run for run in runs if run.returncode != 0]
    assert refused and all(run.returncode == 4 for run in refused), [(r.returncode, r.stderr) for r in runs]
    assert refused[0].stderr.startswith("error [QUOTA] ")
