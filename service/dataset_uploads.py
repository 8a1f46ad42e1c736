"""Datasets sent straight to the object store in parts: the API hands out URLs, never carries the bytes.

A client asks for an upload with the file's size and sha256; the API checks the team's
quota, starts an S3 multipart upload whose object carries that size and sha256 as
metadata (set here, so the client cannot change them later) and answers one presigned
PUT URL per part. The client PUTs the parts, then completes the upload with their ETags;
the API joins them, compares the stored size with the declared one and registers the
object as a dataset. Its content is the worker's to check, as for any dataset: when a
job reads it, the worker compares its sha256 with the declared one, then loads it like
any other (``BAD_DATA`` when it is not a dataset). The object's key holds the team id,
so another team's upload id does not complete or abort anything (``NotFound``).
"""

from __future__ import annotations

import math
import uuid
from datetime import timedelta

from service import quota
from service.artifacts import ArtifactStore
from service.contract import (
    MAX_PARTS,
    DatasetUpload,
    DatasetUploadCompletion,
    DatasetUploadRequest,
    UploadPart,
)
from service.datasets import locked_team, register_dataset
from service.db import Dataset, SessionFactory, utcnow, writing
from service.errors import InvalidArgument, PayloadTooLarge
from service.settings import Settings

DEFAULT_PART_BYTES = 64 << 20


def upload_key(team_id: int, upload: uuid.UUID) -> str:
    return f"datasets/{team_id}/{upload}.data"


def start_upload(
    db: SessionFactory, store: ArtifactStore, settings: Settings, team_id: int, request: DatasetUploadRequest
) -> DatasetUpload:
    """Check the size against the limit and the team's quota, then open the upload and sign its part URLs."""
    limit = settings.max_dataset_upload_bytes
    if request.size > limit:
        raise PayloadTooLarge(
            f"a dataset sent in parts may hold at most {quota.human_size(limit)}; this one declares "
            f"{quota.human_size(request.size)}",
            field="size",
        )
    part_size = request.part_size or max(DEFAULT_PART_BYTES, math.ceil(request.size / MAX_PARTS))
    parts = math.ceil(request.size / part_size)
    if parts > MAX_PARTS:
        raise InvalidArgument(
            f"{request.size} bytes in parts of {part_size} make {parts} parts, more than S3's {MAX_PARTS}; "
            f"use part_size >= {math.ceil(request.size / MAX_PARTS)}",
            field="part_size",
        )
    with writing(db) as session:  # the team row locked: the same check register_dataset makes at the end
        team = locked_team(session, team_id)
        quota.check_dataset_room(session, team)
        quota.check_room(session, team, request.size, what=f"this dataset ({quota.human_size(request.size)})")
    upload = uuid.uuid4()
    metadata = {"sha256": request.sha256, "size": str(request.size)}
    token, urls = store.start_upload(upload_key(team_id, upload), parts, settings.upload_url_expiry_s, metadata)
    return DatasetUpload(
        id=upload,
        upload_token=token,
        part_size=part_size,
        parts=[UploadPart(part_number=number, url=url) for number, url in enumerate(urls, start=1)],
        expires_at=utcnow() + timedelta(seconds=settings.upload_url_expiry_s),
    )


def finish_upload(
    db: SessionFactory, store: ArtifactStore, team_id: int, upload: uuid.UUID, completion: DatasetUploadCompletion
) -> tuple[Dataset, bool]:
    """Join the parts and register the object as the team's dataset; ``(dataset, created)`` as for a direct
    upload (the same bytes again return the existing dataset, and the new copy is deleted)."""
    numbers = [part.part_number for part in completion.parts]
    if numbers != list(range(1, len(numbers) + 1)):
        raise InvalidArgument(
            f"parts must be numbered 1..{len(numbers)} in order, each once; got {numbers[:10]}", field="parts"
        )
    key = upload_key(team_id, upload)
    size, metadata = store.finish_upload(key, completion.upload_token, [part.etag for part in completion.parts])
    declared = int(metadata.get("size", -1))
    if size != declared:
        store.delete(key)
        raise InvalidArgument(
            f"the parts hold {size} bytes, but the upload declared {declared}; start a new upload and send the "
            "whole file",
            field="parts",
        )
    try:
        dataset, created = register_dataset(db, team_id, metadata["sha256"], size, key)
    except Exception:
        store.delete(key)
        raise
    if not created:
        store.delete(key)
    return dataset, created


def abort_upload(store: ArtifactStore, team_id: int, upload: uuid.UUID, token: str) -> None:
    """Drop an upload the client gave up on, with the parts it sent."""
    store.abort_upload(upload_key(team_id, upload), token)
