"""``GET /v1/jobs/{id}/report`` and ``qat report`` on the shared digits job, rendered by chromium."""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from service.client import ApiError, ChecksumMismatch, Client
from support.client_service import Finished, Service
from support.headless import WINDOW, blank_screenshot, dump_dom, png_size, screenshot


def report_url(service: Service, job_id: str) -> str:
    return f"{service.url}/v1/jobs/{job_id}/report"


def test_api_serves_the_report_as_a_locked_down_page_that_renders(
    service: Service, finished: Finished, tmp_path: Path
) -> None:
    job_id = finished.job["id"]
    response = httpx.get(report_url(service, job_id), headers={"Authorization": f"Bearer {service.token}"})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/html")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    with Client(service.url, service.token) as client:
        listed = {artifact.name: artifact for artifact in client.artifacts(job_id)}
    assert hashlib.sha256(response.content).hexdigest() == listed["report.html"].sha256
    assert response.content == (finished.folder / "report.html").read_bytes()

    page = tmp_path / "served.html"
    page.write_bytes(response.content)
    dom = dump_dom(page)
    assert '<section id="accuracy">' in dom and '<section id="layers">' in dom and dom.count("<svg") == 2
    assert "INT8 deploy (onnxruntime)" in dom and "stem.0" in dom
    png = screenshot(page, tmp_path / "served.png")
    assert png_size(png) == WINDOW and len(png) > 10 * len(blank_screenshot(tmp_path))


def test_qat_report_downloads_opens_and_status_links_it(service: Service, finished: Finished, tmp_path: Path) -> None:
    job_id = finished.job["id"]
    target = tmp_path / "sub" / "report.html"
    run = service.cli("report", job_id, "--output", target, "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"path": str(target), "url": report_url(service, job_id)}
    assert target.read_bytes() == (finished.folder / "report.html").read_bytes()

    # --open hands the file's URI to the web browser; $BROWSER stands in for one here.
    opened = tmp_path / "opened.txt"
    browser = f"{sys.executable} -c \"import pathlib, sys; pathlib.Path('{opened}').write_text(sys.argv[1])\" %s"
    env = {"QAT_URL": service.url, "QAT_TOKEN": service.token, "BROWSER": browser}
    run = service.cli("report", job_id, "--output", target, "--open", env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(target) and opened.read_text() == target.as_uri()

    for command in ("status", "wait"):
        shown = service.cli(command, job_id)
        assert shown.returncode == 0, shown.stderr
        assert report_url(service, job_id) in shown.stdout and f"qat report {job_id} --open" in shown.stdout


def test_no_report_until_a_job_succeeds_and_none_for_other_teams(service: Service, digits: tuple[Path, Path]) -> None:
    model, data = digits
    with Client(service.url, service.token) as client:
        job = client.submit(model, data=data, spec={"epochs": 200, "batch_size": 8})  # runs until cancelled
        with pytest.raises(ApiError) as early:
            client.report(job.id)
        assert (early.value.code, early.value.status, early.value.field) == ("NO_REPORT", 404, "job_id")
        assert "its report appears when it succeeds" in early.value.message
        client.cancel(job.id)
        assert client.wait(job.id, poll_s=0.2, timeout_s=60).state == "CANCELLED"
        with pytest.raises(ApiError, match="CANCELLED: only succeeded jobs have a report") as cancelled:
            client.report(job.id)
        assert cancelled.value.code == "NO_REPORT"
        with pytest.raises(ApiError) as unknown:
            client.report(str(uuid.uuid4()))
        assert unknown.value.code == "NOT_FOUND"

    missing = service.cli("report", str(uuid.uuid4()))
    assert missing.returncode == 2 and missing.stderr.startswith("error [NOT_FOUND]")


def test_report_of_another_team_or_without_token_is_refused(service: Service, finished: Finished) -> None:
    url = report_url(service, finished.job["id"])
    other = service.deployment.create_team(f"report-other-{uuid.uuid4().hex[:8]}")
    refused = httpx.get(url, headers={"Authorization": f"Bearer {other}"})
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "NOT_FOUND"
    anonymous = httpx.get(url)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "UNAUTHENTICATED"


@contextmanager
def corrupted(path: Path) -> Iterator[None]:
    """``path`` with its first byte flipped (same size) for the duration, then as it was."""
    original = path.read_bytes()
    path.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])
    try:
        yield
    finally:
        path.write_bytes(original)


def test_client_refuses_a_report_that_fails_its_sha256(service: Service, finished: Finished) -> None:
    job_id = finished.job["id"]
    stored = next((service.deployment.root / "artifacts" / "jobs" / job_id).glob("attempt-*/report.html"))
    with corrupted(stored), Client(service.url, service.token) as client:
        with pytest.raises(ChecksumMismatch, match="report.html"):
            client.report(job_id)
