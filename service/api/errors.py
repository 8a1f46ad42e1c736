"""Every failure becomes ``{"error": {"code", "message", "field"}}`` with its error class's status.

Bad input is always a 4xx: the service's own errors, quantlib's input errors (config, spec, data, model)
and werkzeug's HTTP errors (unknown route, body too large) are mapped here. Anything
else is a bug: it is logged with its traceback and answered with a bare 500 INTERNAL,
so no internals leak to callers.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, jsonify
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from quantlib.errors import QatError
from service.errors import DatabaseUnavailable, PayloadTooLarge

RETRY_AFTER_S = 5


def error_response(code: str, message: str, field: str | None, status: int) -> Response:
    response = jsonify(error={"code": code, "message": message, "field": field})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="qat"'
    if status == 503:  # a dependency is down: clients and load balancers back off, then retry
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _known(error: QatError) -> Response:
    status = error.status
    if status < 500:
        return error_response(error.code, error.message, error.field, status)
    # the service's own fault: the details (endpoint, bucket, key) go to the log only
    current_app.logger.warning("request failed: %s", error)
    public = error.public_message
    return error_response(error.code, public or error.message, None if public else error.field, status)


def _http(error: HTTPException) -> Response:
    if isinstance(error, RequestEntityTooLarge):
        return _known(PayloadTooLarge("the request body is larger than this service accepts", field="body"))
    code = (error.name or "HTTP_ERROR").upper().replace(" ", "_")
    return error_response(code, error.description or code, None, error.code or 500)


def _database(error: OperationalError) -> Response:
    # the driver's text names hosts and ports: it goes to the log, not to callers
    current_app.logger.warning("database unavailable: %s", error.orig)
    message = f"the job database is unreachable right now (it may be restarting); retry in {RETRY_AFTER_S} s"
    return error_response(DatabaseUnavailable.code, message, None, DatabaseUnavailable.status)


def _internal(error: Exception) -> Response:
    current_app.logger.exception("unhandled error", exc_info=error)
    return error_response("INTERNAL", "internal error; it has been logged, try again later", None, 500)


def register_error_handlers(app: Flask) -> None:
    """Install the handlers; more specific classes win, so ``Exception`` only sees true bugs."""
    app.register_error_handler(QatError, _known)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(OperationalError, _database)
    app.register_error_handler(Exception, _internal)
