"""A team's storage quota: the bytes of its live job inputs, job artifacts and datasets, and a dataset count.

Checked twice. From the request head, before any body byte is read, with the declared
``Content-Length`` (:func:`refuse_upload_over_quota`), so an upload that cannot fit is
not even received. And in the transaction that records the stored files, with their
real sizes (:func:`check_room`, :func:`check_dataset_room`), under the lock on the team
row that job creation already takes, so concurrent uploads cannot together slip past
it. What counts is freed by deleting datasets or jobs' files (``DELETE`` on either),
by the prompt removal of failed and cancelled jobs' inputs, and by ``qat admin gc``.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db import Artifact, Dataset, Job, SessionFactory, Team, reading
from service.errors import QuotaExceeded, StorageQuotaExceeded

HOW_TO_FREE = (
    "delete datasets (DELETE /v1/datasets/{id}) or finished jobs' files (DELETE /v1/jobs/{id}), "
    "or ask an administrator for more (`qat admin set-team --max-storage`)"
)


def storage_used(session: Session, team_id: int) -> int:
    """Bytes the team's live files take in the artifact store."""
    inputs = select(func.coalesce(func.sum(Job.inputs_bytes), 0)).where(Job.team_id == team_id)
    artifacts = (
        select(func.coalesce(func.sum(Artifact.size), 0))
        .join(Job, Artifact.job_id == Job.id)
        .where(Job.team_id == team_id)
    )
    datasets = select(func.coalesce(func.sum(Dataset.size), 0)).where(
        Dataset.team_id == team_id, Dataset.deleted_at.is_(None)
    )
    return sum(int(session.scalar(query) or 0) for query in (inputs, artifacts, datasets))


def datasets_kept(session: Session, team_id: int) -> int:
    query = select(func.count()).select_from(Dataset).where(Dataset.team_id == team_id, Dataset.deleted_at.is_(None))
    return int(session.scalar(query) or 0)


def refuse_upload_over_quota(db: SessionFactory, team_id: int, declared: int | None) -> None:
    """Refuse from the head an upload whose declared size cannot fit (the body may be smaller, never larger)."""
    if not declared:
        return
    with reading(db) as session:
        team = session.get(Team, team_id)
        if team is not None:
            check_room(session, team, declared, what=f"this upload ({human_size(declared)} declared)")


def check_room(session: Session, team: Team, adding: int, *, what: str = "these files") -> None:
    """``StorageQuotaExceeded`` when ``adding`` more bytes would take the team over its quota."""
    used = storage_used(session, team.id)
    if used + adding > team.max_storage_bytes:
        raise StorageQuotaExceeded(
            f"team {team.name!r} stores {human_size(used)} of its {human_size(team.max_storage_bytes)} quota, "
            f"so {what} would not fit; {HOW_TO_FREE}",
            field="storage",
        )


def check_dataset_room(session: Session, team: Team) -> None:
    """``QuotaExceeded`` when the team already keeps as many datasets as it may."""
    kept = datasets_kept(session, team.id)
    if kept >= team.max_datasets:
        raise QuotaExceeded(
            f"team {team.name!r} keeps {kept} datasets, its limit; delete one (DELETE /v1/datasets/{{id}}) "
            "or ask an administrator for more (`qat admin set-team --max-datasets`)",
            field="datasets",
        )


def human_size(count: int) -> str:
    """Bytes for people: ``1.5 GiB``, ``512 MiB``, ``37 bytes``."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift:
            return f"{count / (1 << shift):.1f} {unit}"
    return f"{count} bytes"
