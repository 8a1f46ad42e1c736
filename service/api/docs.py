"""The machine-readable API description and a small page for people browsing it."""

from __future__ import annotations

from html import escape

from flask import Blueprint, Response

from service.openapi import openapi_document

bp = Blueprint("docs", __name__)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>qat-service API</title>
<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto}}code{{background:#eee;padding:0 .3em}}
td{{padding:.2em .8em}}</style></head>
<body><h1>qat-service API</h1>
<p>{description} Send <code>Authorization: Bearer &lt;token&gt;</code> with every <code>/v1</code> request.
The full description is <a href="/v1/openapi.json">/v1/openapi.json</a> (OpenAPI 3.1).</p>
<table>{rows}</table></body></html>
"""


@bp.get("/v1/openapi.json")
def openapi_json() -> dict[str, object]:
    return openapi_document()


@bp.get("/")
def index() -> Response:
    """Every operation of the OpenAPI document, one row each."""
    doc = openapi_document()
    rows = "".join(
        f"<tr><td><code>{escape(method.upper())}</code></td><td><code>{escape(path)}</code></td>"
        f"<td>{escape(operation.get('summary', ''))}</td></tr>"
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
    )
    return Response(_PAGE.format(description=escape(doc["info"]["description"]), rows=rows), mimetype="text/html")
