"""Datasets: training data a team uploads once and names in many jobs by ``dataset_id``.

Rows are deduplicated by content per team: uploading the same bytes again returns the
existing dataset, and the caller deletes the second copy it just stored. A deleted
dataset loses its file and stops counting against the team's storage; its row stays,
since finished jobs name it, and the same bytes uploaded again bring it back under the
same id.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import quota
from service.artifacts import ArtifactStore
from service.db import Dataset, Job, JobState, SessionFactory, Team, reading, utcnow, writing
from service.errors import NotFound, WrongState

_PENDING = (JobState.QUEUED, JobState.RUNNING, JobState.CANCELLING)


def register_dataset(
    db: SessionFactory, team_id: int, sha256: str, size: int, storage_key: str
) -> tuple[Dataset, bool]:
    """Record stored data for the team; return ``(dataset, created)``, reusing a same-content one.

    ``QuotaExceeded`` (count) or ``StorageQuotaExceeded`` (bytes) when a new dataset does
    not fit; the caller then deletes what it stored.
    """
    try:
        with writing(db) as session:
            team = locked_team(session, team_id)
            existing = _by_content(session, team_id, sha256)
            if existing is not None and existing.deleted_at is None:
                return existing, False
            quota.check_dataset_room(session, team)
            quota.check_room(session, team, size, what=f"this dataset ({quota.human_size(size)})")
            if existing is not None:  # deleted before: the same content is back under its old id
                existing.deleted_at, existing.size, existing.storage_key = None, size, storage_key
                return existing, True
            dataset = Dataset(team_id=team_id, sha256=sha256, size=size, storage_key=storage_key)
            session.add(dataset)
            return dataset, True
    except IntegrityError:
        # the same content was registered concurrently: that row is the dataset
        with reading(db) as session:
            existing = _by_content(session, team_id, sha256)
        if existing is None:
            raise
        return existing, False


def get_dataset(db: SessionFactory, team_id: int, dataset_id: uuid.UUID) -> Dataset:
    """The team's dataset; ``NotFound`` if it does not exist, was deleted or is another team's."""
    with reading(db) as session:
        dataset = _live(session, team_id, dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id}", field="dataset_id")
    return dataset


def delete_dataset(db: SessionFactory, store: ArtifactStore, team_id: int, dataset_id: uuid.UUID) -> None:
    """Delete the team's dataset's file; ``WrongState`` while a queued or running job still reads it.

    The row is marked first (under the team's lock, which job creation also takes, so no
    new job can pick the dataset meanwhile), then the file goes; a file left by a crash in
    between is an orphan ``qat admin gc`` removes.
    """
    with writing(db) as session:
        locked_team(session, team_id)
        dataset = _live(session, team_id, dataset_id)
        if dataset is None:
            raise NotFound(f"no dataset {dataset_id}", field="dataset_id")
        users = session.scalar(
            select(func.count()).select_from(Job).where(Job.dataset_id == dataset_id, Job.state.in_(_PENDING))
        )
        if users:
            raise WrongState(
                f"dataset {dataset_id} is the data of {users} queued or running jobs; delete it once they end "
                "(or cancel them)",
                field="dataset_id",
            )
        dataset.deleted_at = utcnow()
        key = dataset.storage_key
    store.delete(key)


def locked_team(session: Session, team_id: int) -> Team:
    """The team's row, locked until the transaction ends: dataset and job creation serialise on it."""
    team = session.scalar(select(Team).where(Team.id == team_id).with_for_update())
    if team is None:
        raise NotFound(f"no team with id {team_id}", field="team")
    return team


def _live(session: Session, team_id: int, dataset_id: uuid.UUID) -> Dataset | None:
    query = select(Dataset).where(Dataset.id == dataset_id, Dataset.team_id == team_id, Dataset.deleted_at.is_(None))
    return session.scalar(query)


def _by_content(session: Session, team_id: int, sha256: str) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.team_id == team_id, Dataset.sha256 == sha256))
