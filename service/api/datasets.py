"""``/v1/datasets``: training data uploaded once and named by id in many jobs; large files go
straight to the object store in parts (``/v1/datasets/uploads``)."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, request, url_for

from quantlib.data import DataError
from service import errors
from service.api.auth import current_team_id, require_team
from service.api.operations import Answer, Operation, documented
from service.api.schemas import UploadTokenQuery, dataset_out, parse_query
from service.api.services import services
from service.api.submission import upload_dataset
from service.api.uploads import dataset_body_limit, json_body, limit_body, required_file_part
from service.api.validation import check_data
from service.contract import Dataset, DatasetUpload, DatasetUploadCompletion, DatasetUploadRequest
from service.dataset_uploads import abort_upload, finish_upload, start_upload
from service.datasets import delete_dataset, get_dataset
from service.db import Dataset as DatasetRow
from service.quota import refuse_upload_over_quota
from service.server.offload import off_loop

bp = Blueprint("datasets", __name__, url_prefix="/v1/datasets")
bp.before_request(require_team)

DATA_FORM: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string", "contentMediaType": "application/octet-stream"}},
}


@bp.post("")
@documented(
    Operation(
        "Upload a dataset once, for many jobs (deduplicated by sha256)",
        {
            201: Answer("the new dataset", Dataset),
            200: Answer("the team's existing dataset with the same bytes", Dataset),
        },
        (
            errors.InvalidArgument,
            DataError,
            errors.PayloadTooLarge,
            errors.QuotaExceeded,
            errors.StorageQuotaExceeded,
            errors.StorageFull,
            errors.StorageUnavailable,
        ),
        form=DATA_FORM,
    )
)
def create_dataset() -> tuple[dict[str, object], int, dict[str, str]]:
    """Validate and store an ``.npz``; the same bytes again return the existing dataset (200)."""
    svc = services()
    limit_body(dataset_body_limit(svc.settings))
    refuse_upload_over_quota(svc.db, current_team_id(), request.content_length)
    data = required_file_part("data", svc.settings.max_data_bytes)
    off_loop(check_data, data, svc.settings.max_data_bytes)
    return _dataset_answer(*upload_dataset(svc, current_team_id(), data))


def _dataset_answer(dataset: DatasetRow, created: bool) -> tuple[dict[str, object], int, dict[str, str]]:
    """201 and the new dataset, or 200 and the team's existing one with the same bytes; its URL."""
    location = url_for("datasets.get_dataset_by_id", dataset_id=dataset.id)
    return dataset_out(dataset).model_dump(mode="json"), 201 if created else 200, {"Location": location}


@bp.post("/uploads")
@documented(
    Operation(
        "Start a dataset upload straight to the object store, in parts (S3 only; the API never carries the bytes)",
        {201: Answer("the upload: one presigned PUT URL per part", DatasetUpload)},
        (
            errors.InvalidArgument,
            errors.PayloadTooLarge,
            errors.QuotaExceeded,
            errors.StorageQuotaExceeded,
            errors.WrongState,
            errors.StorageUnavailable,
        ),
        description="PUT each part's bytes to its URL (no token), keep each answer's ETag header, then "
        "POST /v1/datasets/uploads/{upload_id}/complete. The worker checks the file's sha256 and content when a "
        "job reads it.",
        body=DatasetUploadRequest,
    )
)
def create_upload() -> tuple[dict[str, object], int]:
    svc = services()
    wanted = json_body(DatasetUploadRequest)
    upload = off_loop(start_upload, svc.db, svc.artifacts, svc.settings, current_team_id(), wanted)
    return upload.model_dump(mode="json"), 201


@bp.post("/uploads/<uuid:upload_id>/complete")
@documented(
    Operation(
        "Complete a dataset upload: its parts become a dataset (deduplicated by sha256)",
        {
            201: Answer("the new dataset", Dataset),
            200: Answer("the team's existing dataset with the same sha256", Dataset),
        },
        (
            errors.InvalidArgument,
            errors.NotFound,
            errors.QuotaExceeded,
            errors.StorageQuotaExceeded,
            errors.StorageUnavailable,
        ),
        body=DatasetUploadCompletion,
    )
)
def complete_upload(upload_id: uuid.UUID) -> tuple[dict[str, object], int, dict[str, str]]:
    svc = services()
    completion = json_body(DatasetUploadCompletion)
    return _dataset_answer(*off_loop(finish_upload, svc.db, svc.artifacts, current_team_id(), upload_id, completion))


@bp.delete("/uploads/<uuid:upload_id>")
@documented(
    Operation(
        "Abort a dataset upload and drop the parts sent",
        {204: Answer("aborted", media=None)},
        (errors.InvalidArgument, errors.NotFound, errors.StorageUnavailable),
        query=UploadTokenQuery,
    )
)
def delete_upload(upload_id: uuid.UUID) -> tuple[str, int]:
    svc = services()
    token = parse_query(UploadTokenQuery, request.args).upload_token
    off_loop(abort_upload, svc.artifacts, current_team_id(), upload_id, token)
    return "", 204


@bp.get("/<uuid:dataset_id>")
@documented(Operation("One dataset", {200: Answer("the dataset", Dataset)}, (errors.NotFound,)))
def get_dataset_by_id(dataset_id: uuid.UUID) -> dict[str, object]:
    return dataset_out(get_dataset(services().db, current_team_id(), dataset_id)).model_dump(mode="json")


@bp.delete("/<uuid:dataset_id>")
@documented(
    Operation(
        "Delete a dataset's file (refused while a queued or running job uses it)",
        {204: Answer("deleted", media=None)},
        (errors.NotFound, errors.WrongState, errors.StorageUnavailable),
    )
)
def delete_dataset_by_id(dataset_id: uuid.UUID) -> tuple[str, int]:
    """Delete the dataset's file (409 while a queued or running job uses it); 204."""
    svc = services()
    delete_dataset(svc.db, svc.artifacts, current_team_id(), dataset_id)
    return "", 204
