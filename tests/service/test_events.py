"""``GET /v1/jobs/{id}/events``: a real HTTP stream following a job the test drives as a worker would."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from service.artifacts import ArtifactStore, LocalStore
from service.contract import Phase, Progress
from service.jobs import JobInputs, NewArtifact, claim_job, create_job, finish_job, request_cancel, update_progress
from service.teams import PREFIX_LENGTH, authenticate, create_team, revoke_token
from support.metrics import METRICS

DIGEST = "0" * 64


@pytest.fixture
def artifact_store(tmp_path: Path) -> ArtifactStore:
    """The stream never touches artifacts: one store is enough (overrides the local/S3 pair)."""
    return LocalStore(tmp_path / "artifacts")


def read_events(response: requests.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(event, data)`` pairs from a text/event-stream response, as they arrive."""
    event = ""
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield event, json.loads(line.removeprefix("data: "))


def test_stream_follows_a_job_to_its_end(api: Any) -> None:
    db = api.services.db
    issued = create_team(db, f"team-{uuid.uuid4().hex[:8]}")
    team = authenticate(db, issued.token)
    assert team is not None
    inputs = JobInputs(model_key="m", model_sha256=DIGEST, spec={}, data_key="d", data_sha256=DIGEST)
    job_id = create_job(db, team.id, inputs, max_attempts=3).id

    client = api.client(issued.token)
    with client.get(f"/v1/jobs/{job_id}/events", stream=True) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = read_events(response)
        assert next(events) == ("progress", {"state": "QUEUED", "phase": None, "progress": None})

        assert claim_job(db, job_id, "w1", 60)
        assert next(events) == ("progress", {"state": "RUNNING", "phase": None, "progress": None})

        update_progress(db, job_id, "w1", 1, Phase.TRAINING, Progress(step=3, total=10, epoch=1, loss=0.5))
        event, data = next(events)
        assert (event, data["state"], data["phase"]) == ("progress", "RUNNING", "training")
        assert data["progress"]["step"] == 3 and data["progress"]["total"] == 10

        artifact = NewArtifact(name="log.txt", size=1, sha256=DIGEST, storage_key="k")
        finish_job(db, job_id, "w1", 1, METRICS, [artifact])
        assert next(events)[1]["state"] == "SUCCEEDED"
        assert next(events) == ("end", {"state": "SUCCEEDED"})
        assert next(events, None) is None, "the stream closes after the end event"


def test_stream_of_another_teams_job_is_404(api: Any) -> None:
    db = api.services.db
    owner = authenticate(db, create_team(db, f"team-{uuid.uuid4().hex[:8]}").token)
    assert owner is not None
    inputs = JobInputs(model_key="m", model_sha256=DIGEST, spec={}, data_key="d", data_sha256=DIGEST)
    job_id = create_job(db, owner.id, inputs, max_attempts=3).id
    response = api.new_team().get(f"/v1/jobs/{job_id}/events")
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("application/json")


def _queued_job(api: Any) -> tuple[str, uuid.UUID]:
    """A new team's token and a queued job of it."""
    db = api.services.db
    issued = create_team(db, f"team-{uuid.uuid4().hex[:8]}")
    team = authenticate(db, issued.token)
    assert team is not None
    inputs = JobInputs(model_key="m", model_sha256=DIGEST, spec={}, data_key="d", data_sha256=DIGEST)
    return issued.token, create_job(db, team.id, inputs, max_attempts=3).id


def test_a_stream_ends_within_seconds_of_its_token_being_revoked(api: Any) -> None:
    token, job_id = _queued_job(api)
    with api.client(token).get(f"/v1/jobs/{job_id}/events", stream=True) as response:
        events = read_events(response)
        assert next(events)[0] == "progress"
        revoke_token(api.services.db, token[:PREFIX_LENGTH])
        revoked = time.monotonic()
        assert next(events) == ("end", {"state": "QUEUED", "reason": "unauthenticated"})
        assert time.monotonic() - revoked < 5
        assert next(events, None) is None


def test_streams_beyond_the_teams_bound_are_refused_503_and_the_slot_comes_back(make_api: Callable[..., Any]) -> None:
    api = make_api(QAT_MAX_STREAMS_PER_TEAM="3")  # the in-process test server has 8 threads
    token, job_id = _queued_job(api)
    client = api.client(token)
    bound = api.services.settings.max_streams_per_team
    open_streams = [client.get(f"/v1/jobs/{job_id}/events", stream=True) for _ in range(bound)]
    try:
        assert all(r.status_code == 200 for r in open_streams)
        refused = client.get(f"/v1/jobs/{job_id}/events")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "TOO_MANY_STREAMS"
        assert int(refused.headers["Retry-After"]) > 0
        other_token, other_job = _queued_job(api)
        with api.client(other_token).get(f"/v1/jobs/{other_job}/events", stream=True) as other:
            assert other.status_code == 200, "another team still gets a stream"
    finally:
        for response in open_streams:
            response.close()
    deadline = time.monotonic() + 20  # the server notices a gone client at its next keepalive
    while api.services.streams.open_streams() > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    with client.get(f"/v1/jobs/{job_id}/events", stream=True) as again:
        assert again.status_code == 200, "closed streams gave their slots back"


def test_a_reconnect_with_last_event_id_is_told_only_what_changed(api: Any) -> None:
    token, job_id = _queued_job(api)
    client = api.client(token)
    with client.get(f"/v1/jobs/{job_id}/events", stream=True) as first:
        lines = first.iter_lines(decode_unicode=True)
        assert next(lines) == "retry: 2000", "the client is told when to reconnect"
        event_id = next(line for line in lines if line.startswith("id: ")).removeprefix("id: ")
    request_cancel(api.services.db, authenticate(api.services.db, token).id, job_id)
    with client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": event_id}, stream=True) as again:
        cancelled = {"state": "CANCELLED", "phase": None, "progress": None}
        assert list(read_events(again)) == [("progress", cancelled), ("end", {"state": "CANCELLED"})]
