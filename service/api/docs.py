"""The machine-readable API description, and pages for people browsing it.

``/docs`` is Swagger UI, served from the ``swagger-ui-py`` package's files: no CDN, so it
works on a network that reaches nothing but this service. Its page loads only this
origin's scripts (the CSP forbids inline code and every other origin).
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import swagger_ui
from flask import Blueprint, Response, current_app, send_from_directory

from service.api.openapi import openapi_document
from service.api.operations import Answer, Operation, documented
from service.errors import NotFound

bp = Blueprint("docs", __name__)

SWAGGER_UI = Path(swagger_ui.__file__).parent / "static"
# the files the page loads; nothing else of the package is served
SWAGGER_ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"})
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'"
)

_INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>qat-service API</title>
<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto}}code{{background:#eee;padding:0 .3em}}
td{{padding:.2em .8em}}</style></head>
<body><h1>qat-service API</h1>
<p>{description} Send <code>Authorization: Bearer &lt;token&gt;</code> with every <code>/v1</code> request.
The full description is <a href="/v1/openapi.json">/v1/openapi.json</a> (OpenAPI 3.1); browse and try it
at <a href="/docs">/docs</a>.</p>
<table>{rows}</table></body></html>
"""

_SWAGGER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>qat-service API: Swagger UI</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script></body></html>
"""

_SWAGGER_INIT = """window.onload = function () {
  window.ui = SwaggerUIBundle({url: "/v1/openapi.json", dom_id: "#swagger-ui", deepLinking: true});
};
"""

_PAGE = {200: Answer("the page", media="text/html")}


@bp.get("/v1/openapi.json")
@documented(Operation("This document", {200: Answer("OpenAPI 3.1")}, public=True))
def openapi_json() -> dict[str, object]:
    return openapi_document(current_app)


@bp.get("/")
@documented(Operation("Every operation, one row each", _PAGE, public=True))
def index() -> Response:
    doc = openapi_document(current_app)
    rows = "".join(
        f"<tr><td><code>{escape(method.upper())}</code></td><td><code>{escape(path)}</code></td>"
        f"<td>{escape(operation.get('summary', ''))}</td></tr>"
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
    )
    return Response(_INDEX.format(description=escape(doc["info"]["description"]), rows=rows), mimetype="text/html")


@bp.get("/docs")
@documented(Operation("Swagger UI on this document, served from the package", _PAGE, public=True))
def swagger_page() -> Response:
    return Response(_SWAGGER_PAGE, mimetype="text/html", headers={"Content-Security-Policy": DOCS_CSP})


@bp.get("/docs/init.js")
@documented(Operation("Swagger UI's start script", {200: Answer("JavaScript", media="text/javascript")}, public=True))
def swagger_init() -> Response:
    return Response(_SWAGGER_INIT, mimetype="text/javascript")


@bp.get("/docs/assets/<name>")
@documented(
    Operation(
        "Swagger UI's files",
        {200: Answer("the file: CSS, JavaScript or PNG", media="*/*")},
        (NotFound,),
        path={"name": {"type": "string", "enum": sorted(SWAGGER_ASSETS)}},
        public=True,
    )
)
def swagger_asset(name: str) -> Response:
    if name not in SWAGGER_ASSETS:
        raise NotFound(f"no docs asset {name!r}", field="name")
    return send_from_directory(SWAGGER_UI, name, max_age=3600)
