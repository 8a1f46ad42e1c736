"""``/v1/openapi.json``, read off the app's routes and the pydantic models they speak.

Paths and methods come from ``app.url_map``; what each operation answers comes from the
:class:`~service.api.operations.Operation` declared on its view function; every body,
parameter and response schema is a pydantic model's ``model_json_schema``, the same model
that validates the request or serializes the response. OpenAPI 3.1 schemas are JSON
Schema 2020-12, which is what pydantic emits, so nothing is translated.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from werkzeug.routing import Rule

from quantlib.errors import QatError
from service.api.operations import Operation, operation_of
from service.api.schemas import ErrorResponse, HealthOut, JobSpec
from service.contract import (
    ArtifactList,
    Dataset,
    DatasetUpload,
    DatasetUploadCompletion,
    DatasetUploadRequest,
    Job,
    JobPage,
)

REF = "#/components/schemas/{model}"
_INPUT_MODELS: tuple[type[BaseModel], ...] = (JobSpec, DatasetUploadRequest, DatasetUploadCompletion)
_OUTPUT_MODELS: tuple[type[BaseModel], ...] = (
    Job,
    JobPage,
    ArtifactList,
    Dataset,
    DatasetUpload,
    ErrorResponse,
    HealthOut,
)
# werkzeug's converters as OpenAPI parameter schemas
_CONVERTERS = {"uuid": {"type": "string", "format": "uuid"}}
_NOT_DOCUMENTED = {"static"}
# a werkzeug rule's variable: <name> or <converter:name> (or <converter(args):name>)
_VARIABLE = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
_EXTENSION = "qat.openapi"


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _errors(errors: tuple[type[QatError], ...]) -> dict[str, Any]:
    codes: dict[int, set[str]] = defaultdict(set)
    for error in errors:
        codes[error.status].add(error.code)
    return {
        str(status): {
            "description": " or ".join(sorted(codes[status])),
            "content": {"application/json": {"schema": ref(ErrorResponse)}},
        }
        for status in sorted(codes)
    }


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    return [
        {"name": name, "in": "query", "required": name in schema.get("required", ()), "schema": prop}
        for name, prop in schema["properties"].items()
    ]


def openapi_path(rule: Rule) -> str:
    """``/v1/jobs/<uuid:job_id>`` as OpenAPI writes it: ``/v1/jobs/{job_id}``."""
    return _VARIABLE.sub(lambda m: "{" + m["name"] + "}", rule.rule)


def _path_parameters(rule: Rule, operation: Operation) -> list[dict[str, Any]]:
    return [
        {
            "name": m["name"],
            "in": "path",
            "required": True,
            "schema": dict(operation.path.get(m["name"], _CONVERTERS.get(m["converter"], {"type": "string"}))),
        }
        for m in _VARIABLE.finditer(rule.rule)
    ]


def _operation(rule: Rule, operation: Operation) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for status, answer in sorted(operation.answers.items()):
        entry: dict[str, Any] = {"description": answer.description}
        if answer.media is not None:
            schema = ref(answer.model) if answer.model is not None else {"type": "string"}
            entry["content"] = {answer.media: {"schema": schema}}
        answers[str(status)] = entry
    parameters = _path_parameters(rule, operation) + [dict(header) for header in operation.headers]
    if operation.query is not None:
        parameters += _query_parameters(operation.query)
    out: dict[str, Any] = {"summary": operation.summary, "responses": {**answers, **_errors(operation.all_errors)}}
    if operation.description:
        out["description"] = operation.description
    if parameters:
        out["parameters"] = parameters
    if operation.form is not None:
        out["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": dict(operation.form)}}}
    if operation.body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(operation.body)}}}
    if operation.public:
        out["security"] = []
    return out


def documented_routes(app: Flask) -> list[tuple[Rule, str, Operation]]:
    """Every (rule, method, operation) of ``app``; a route without a declaration is a bug here."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in _NOT_DOCUMENTED:
            continue
        operation = operation_of(app.view_functions[rule.endpoint])
        if operation is None:
            raise LookupError(f"route {rule.rule} ({rule.endpoint}) has no @documented operation")
        found += [(rule, method, operation) for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})]
    return found


def _paths(app: Flask) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = defaultdict(dict)
    for rule, method, operation in documented_routes(app):
        paths[openapi_path(rule)][method.lower()] = _operation(rule, operation)
    return dict(paths)


def openapi_document(app: Flask) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document of ``app`` (built once per app)."""
    if _EXTENSION in app.extensions:
        cached: dict[str, Any] = app.extensions[_EXTENSION]
        return cached
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in _INPUT_MODELS]
    models += [(m, "serialization") for m in _OUTPUT_MODELS]
    _, schemas = models_json_schema(models, ref_template=REF)
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "qat-service",
            "version": "1",
            "description": "Quantization-aware training as a service: submit FP32 models, download INT8 ONNX.",
        },
        "security": [{"bearer": []}],
        "paths": _paths(app),
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    app.extensions[_EXTENSION] = document
    return document
