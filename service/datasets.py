"""Datasets: training data a team uploads once and names in many jobs by ``dataset_id``.

Rows are deduplicated by content per team: uploading the same bytes again returns the
existing dataset, and the caller deletes the second copy it just stored.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db import Dataset, SessionFactory, reading, writing
from service.errors import NotFound


def register_dataset(
    db: SessionFactory, team_id: int, sha256: str, size: int, storage_key: str
) -> tuple[Dataset, bool]:
    """Record stored data for the team; return ``(dataset, created)``, reusing a same-content one."""
    try:
        with writing(db) as session:
            existing = _by_content(session, team_id, sha256)
            if existing is not None:
                return existing, False
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
    """The team's dataset; ``NotFound`` if it does not exist or is another team's."""
    with reading(db) as session:
        dataset = session.scalar(select(Dataset).where(Dataset.id == dataset_id, Dataset.team_id == team_id))
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id}", field="dataset_id")
    return dataset


def _by_content(session: Session, team_id: int, sha256: str) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.team_id == team_id, Dataset.sha256 == sha256))
