"""Turning validated uploads into stored inputs and a queued job (or a dataset).

Inputs are stored under fresh keys (``jobs/<new id>/inputs/...``) before any row exists,
so a failed or duplicate submission deletes exactly what it stored. The Idempotency-Key
fingerprint covers content hashes and the normalized spec/config, so a retried upload
of the same files matches even though its bytes were stored a second time.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO

from quantlib.config import QuantConfig
from service import datasets
from service.api.schemas import JobSpec
from service.api.services import Services
from service.artifacts import ArtifactStore
from service.db import Dataset, Job
from service.jobs import JobInputs, create_job, find_or_create_job, request_fingerprint


@dataclass(frozen=True)
class Submission:
    """A validated ``POST /v1/jobs``: exactly one of ``data`` and ``dataset_id`` is set."""

    model: IO[bytes]
    spec: JobSpec
    config: QuantConfig | None
    data: IO[bytes] | None = None
    dataset_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Stored:
    key: str
    size: int
    sha256: str


@dataclass
class _Staging:
    """Uploads stored so far for one request; :func:`_staging` deletes them unless kept."""

    artifacts: ArtifactStore
    keys: list[str] = field(default_factory=list)
    keep: bool = False

    def put(self, key: str, stream: IO[bytes]) -> Stored:
        self.keys.append(key)
        size, sha256 = self.artifacts.put_stream(key, stream)
        return Stored(key, size, sha256)


@contextmanager
def _staging(artifacts: ArtifactStore) -> Iterator[_Staging]:
    staging = _Staging(artifacts)
    try:
        yield staging
    finally:
        if not staging.keep:
            for key in staging.keys:
                artifacts.delete(key)


def submit_job(svc: Services, team_id: int, submission: Submission, idempotency_key: str | None) -> tuple[Job, bool]:
    """Store the inputs and queue the job; return ``(job, created)`` (``False``: an idempotent retry)."""
    job_id = uuid.uuid4()
    prefix = f"jobs/{job_id}/inputs"
    config = submission.config.to_file_dict() if submission.config else None
    spec = submission.spec.model_dump(mode="json")
    with _staging(svc.artifacts) as staging:
        model = staging.put(f"{prefix}/model.pt2", submission.model)
        data = staging.put(f"{prefix}/data.npz", submission.data) if submission.data else None
        config_file = staging.put(f"{prefix}/config.json", io.BytesIO(json.dumps(config).encode())) if config else None
        inputs = JobInputs(
            job_id=job_id,
            model_key=model.key,
            model_sha256=model.sha256,
            data_key=data.key if data else None,
            data_sha256=data.sha256 if data else None,
            dataset_id=submission.dataset_id,
            config_key=config_file.key if config_file else None,
            spec=spec,
            priority=submission.spec.priority,
            inputs_bytes=sum(stored.size for stored in (model, data, config_file) if stored),
        )
        if idempotency_key is None:
            job, created = create_job(svc.db, team_id, inputs, max_attempts=svc.settings.max_attempts), True
        else:
            fingerprint = request_fingerprint(
                {
                    "model": model.sha256,
                    "data": inputs.data_sha256,
                    "dataset_id": submission.dataset_id,
                    "config": config,
                    "spec": spec,
                }
            )
            job, created = find_or_create_job(
                svc.db, team_id, idempotency_key, fingerprint, inputs, max_attempts=svc.settings.max_attempts
            )
        staging.keep = created
    return job, created


def upload_dataset(svc: Services, team_id: int, data: IO[bytes]) -> tuple[Dataset, bool]:
    """Store a validated ``.npz`` once per content; return ``(dataset, created)``."""
    with _staging(svc.artifacts) as staging:
        stored = staging.put(f"datasets/{team_id}/{uuid.uuid4()}.npz", data)
        dataset, created = datasets.register_dataset(svc.db, team_id, stored.sha256, stored.size, stored.key)
        staging.keep = created
    return dataset, created
