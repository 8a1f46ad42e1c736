"""``/v1/datasets``: training data uploaded once and named by id in many jobs."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, request, url_for

from quantlib.data import DataError
from service import errors
from service.api.auth import current_team_id, require_team
from service.api.operations import Answer, Operation, documented
from service.api.schemas import dataset_out
from service.api.services import services
from service.api.submission import upload_dataset
from service.api.uploads import dataset_body_limit, limit_body, required_file_part
from service.api.validation import check_data
from service.contract import Dataset
from service.datasets import delete_dataset, get_dataset
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
    dataset, created = upload_dataset(svc, current_team_id(), data)
    location = url_for("datasets.get_dataset_by_id", dataset_id=dataset.id)
    return dataset_out(dataset).model_dump(mode="json"), 201 if created else 200, {"Location": location}


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
