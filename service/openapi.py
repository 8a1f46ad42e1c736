"""``/v1/openapi.json``, built from the pydantic models in :mod:`service.schemas`.

Paths are listed here by hand (a dozen of them); every body, parameter and response
schema is a pydantic model's ``model_json_schema``, the same model that validates the
request or serializes the response. OpenAPI 3.1 schemas are JSON Schema 2020-12, which
is what pydantic emits, so nothing is translated.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from quantlib.config import ConfigError
from quantlib.data import DataError
from quantlib.errors import QatError, SpecError
from quantlib.pt2archive import ModelError
from service import errors
from service.contract import ArtifactList, Dataset, Job, JobPage
from service.schemas import ErrorResponse, HealthOut, JobSpec, ListJobsQuery

REF = "#/components/schemas/{model}"
_INPUT_MODELS: tuple[type[BaseModel], ...] = (JobSpec,)
_OUTPUT_MODELS: tuple[type[BaseModel], ...] = (Job, JobPage, ArtifactList, Dataset, ErrorResponse, HealthOut)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


# what an API answer can carry: the service's errors, and the input errors it checks itself
_API_ERRORS: tuple[type[QatError], ...] = (
    *(e for e in vars(errors).values() if isinstance(e, type) and issubclass(e, errors.ServiceError)),
    ConfigError,
    SpecError,
    DataError,
    ModelError,
)


def _errors(*statuses: int) -> dict[str, Any]:
    codes = {status: sorted({e.code for e in _API_ERRORS if e.status == status}) for status in statuses}
    return {str(status): _json(ErrorResponse, " or ".join(codes[status]) or "error") for status in statuses}


def _path_id(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    return [
        {"name": name, "in": "query", "required": name in schema.get("required", ()), "schema": prop}
        for name, prop in schema["properties"].items()
    ]


_SUBMIT_FORM: dict[str, Any] = {
    "type": "object",
    "required": ["model"],
    "properties": {
        "model": {"type": "string", "contentMediaType": "application/octet-stream", "description": "a .pt2 file"},
        "data": {
            "type": "string",
            "contentMediaType": "application/octet-stream",
            "description": "an .npz with x_train (float32), optional y_train (int64), x_eval, y_eval",
        },
        "dataset_id": {"type": "string", "format": "uuid", "description": "instead of data: an uploaded dataset"},
        "config": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "AMCT-style config.json; absent = every quantizable layer at INT8",
        },
        "spec": {"type": "string", "contentMediaType": "application/json", "contentSchema": _ref(JobSpec)},
    },
}
_DATA_FORM: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string", "contentMediaType": "application/octet-stream"}},
}


def _multipart(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


def _paths() -> dict[str, Any]:
    job_id = _path_id("job_id", "a job id (UUID)")
    idempotency = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "retry-safe submission: the same key and request return the first job",
        "schema": {"type": "string", "maxLength": 255},
    }
    auth = _errors(401, 503)  # every /v1 operation needs the database
    dataset_id = _path_id("dataset_id", "a dataset id (UUID)")
    return {
        "/v1/jobs": {
            "post": {
                "summary": "Submit a quantization job",
                "parameters": [idempotency],
                "requestBody": _multipart(_SUBMIT_FORM),
                "responses": {
                    "201": _json(Job, "the queued job"),
                    "200": _json(Job, "the job an earlier request with this Idempotency-Key created"),
                    **_errors(400, 404, 413, 422, 429, 507),
                    **auth,
                },
            },
            "get": {
                "summary": "List the team's jobs, newest first",
                "parameters": _query_parameters(ListJobsQuery),
                "responses": {"200": _json(JobPage, "one page"), **_errors(400), **auth},
            },
        },
        "/v1/jobs/{job_id}": {
            "get": {
                "summary": "One job",
                "parameters": [job_id],
                "responses": {"200": _json(Job, "the job"), **_errors(404), **auth},
            },
            "delete": {
                "summary": "Delete a finished job's inputs and results (the job stays, listing no artifacts)",
                "parameters": [job_id],
                "responses": {"200": _json(Job, "the job"), **_errors(404, 409), **auth},
            },
        },
        "/v1/jobs/{job_id}/events": {
            "get": {
                "summary": "Follow a job: server-sent events until it ends",
                "description": (
                    "`event: progress` with JSON `{state, phase, progress}` whenever one of them changes "
                    "(the first is the job as it is), then `event: end` with `{state}` at a terminal state. "
                    "The row is polled every 0.5 s; a stream also ends after 10 minutes (reconnect to go on)."
                ),
                "parameters": [job_id],
                "responses": {
                    "200": {
                        "description": "the event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(404),
                    **auth,
                },
            }
        },
        "/v1/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel a queued or running job",
                "parameters": [job_id],
                "responses": {"200": _json(Job, "the job, CANCELLED or CANCELLING"), **_errors(404, 409), **auth},
            }
        },
        "/v1/jobs/{job_id}/artifacts": {
            "get": {
                "summary": "The job's result files",
                "parameters": [job_id],
                "responses": {
                    "200": _json(ArtifactList, "name, size, sha256, download URL"),
                    **_errors(404),
                    **auth,
                },
            }
        },
        "/v1/jobs/{job_id}/artifacts/{name}": {
            "get": {
                "summary": "Download one result file",
                "parameters": [job_id, _path_id("name", "the artifact's name")],
                "responses": {
                    "200": {
                        "description": "the bytes",
                        "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                    },
                    "302": {"description": "redirect to a presigned URL (QAT_DOWNLOAD_REDIRECT)"},
                    **_errors(404),
                    **auth,
                },
            }
        },
        "/v1/jobs/{job_id}/report": {
            "get": {
                "summary": "The job's report as one self-contained HTML page",
                "description": (
                    "The accuracy table (FP32, INT8 simulated, INT8 onnxruntime), per-layer charts (activation "
                    "ranges and clips, weight error, sensitivity), the tuning trials and the final config. Inline "
                    "CSS and SVG only, served under a Content-Security-Policy that forbids scripts and fetches. "
                    "404 NO_REPORT while the job has not succeeded."
                ),
                "parameters": [job_id],
                "responses": {
                    "200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}},
                    **_errors(404),
                    **auth,
                },
            }
        },
        "/v1/datasets": {
            "post": {
                "summary": "Upload a dataset once, for many jobs (deduplicated by sha256)",
                "requestBody": _multipart(_DATA_FORM),
                "responses": {
                    "201": _json(Dataset, "the new dataset"),
                    "200": _json(Dataset, "the team's existing dataset with the same bytes"),
                    **_errors(400, 413, 422, 429, 507),
                    **auth,
                },
            }
        },
        "/v1/datasets/{dataset_id}": {
            "get": {
                "summary": "One dataset",
                "parameters": [dataset_id],
                "responses": {"200": _json(Dataset, "the dataset"), **_errors(404), **auth},
            },
            "delete": {
                "summary": "Delete a dataset's file (refused while a queued or running job uses it)",
                "parameters": [dataset_id],
                "responses": {"204": {"description": "deleted"}, **_errors(404, 409), **auth},
            },
        },
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": _json(HealthOut, "up")}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: database, broker and storage reachable",
                "security": [],
                "responses": {"200": _json(HealthOut, "ready"), "503": _json(HealthOut, "not ready")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {"200": {"description": "text exposition format", "content": {"text/plain": {}}}},
            }
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (built once per process)."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in _INPUT_MODELS]
    models += [(m, "serialization") for m in _OUTPUT_MODELS]
    _, schemas = models_json_schema(models, ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "qat-service",
            "version": "1",
            "description": "Quantization-aware training as a service: submit FP32 models, download INT8 ONNX.",
        },
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
