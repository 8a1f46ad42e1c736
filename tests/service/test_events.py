"""``GET /v1/jobs/{id}/events``: a real HTTP stream following a job the test drives as a worker would."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from service import store
from service.storage import ArtifactStore, LocalStore
from service.store import JobInputs, NewArtifact, Phase, Progress
from service.teams import authenticate, create_team

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
    job_id = store.create_job(db, team.id, inputs, max_attempts=3).id

    client = api.client(issued.token)
    with client.get(f"/v1/jobs/{job_id}/events", stream=True) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = read_events(response)
        assert next(events) == ("progress", {"state": "QUEUED", "phase": None, "progress": None})

        assert store.claim_job(db, job_id, "w1", 60)
        assert next(events) == ("progress", {"state": "RUNNING", "phase": None, "progress": None})

        store.update_progress(db, job_id, "w1", 1, Phase.TRAINING, Progress(step=3, total=10, epoch=1, loss=0.5))
        event, data = next(events)
        assert (event, data["state"], data["phase"]) == ("progress", "RUNNING", "training")
        assert data["progress"]["step"] == 3 and data["progress"]["total"] == 10

        artifact = NewArtifact(name="log.txt", size=1, sha256=DIGEST, storage_key="k")
        store.finish_job(db, job_id, "w1", 1, {}, [artifact])
        assert next(events)[1]["state"] == "SUCCEEDED"
        assert next(events) == ("end", {"state": "SUCCEEDED"})
        assert next(events, None) is None, "the stream closes after the end event"


def test_stream_of_another_teams_job_is_404(api: Any) -> None:
    db = api.services.db
    owner = authenticate(db, create_team(db, f"team-{uuid.uuid4().hex[:8]}").token)
    assert owner is not None
    inputs = JobInputs(model_key="m", model_sha256=DIGEST, spec={}, data_key="d", data_sha256=DIGEST)
    job_id = store.create_job(db, owner.id, inputs, max_attempts=3).id
    response = api.new_team().get(f"/v1/jobs/{job_id}/events")
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("application/json")
