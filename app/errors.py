"""One JSON error shape, mapped in one place: {"error": {"code", "message", "status"?}}."""

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A client-visible error; `status` names the task state when that is the reason."""

    def __init__(self, code: int, message: str, status: str | None = None):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def error_response(code: int, message: str, status: str | None = None):
    body = {"code": code, "message": message}
    if status is not None:
        body["status"] = status
    return jsonify(error=body), code


def _validation_message(messages) -> str:
    """Flatten marshmallow's {location: {field: [msg]}} into one sentence."""
    parts = []

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            parts.append(f"{prefix}: {' '.join(value)}")
        else:
            parts.append(f"{prefix}: {value}")

    for location_messages in (messages or {}).values():
        walk("", location_messages)
    return "; ".join(parts) or "invalid request"


def http_error(exc: HTTPException):
    """Map any HTTPException (including smorest's 422) to the shared shape."""
    code = exc.code or 500
    data = getattr(exc, "data", None) or {}
    if "messages" in data:  # argument validation: a malformed request
        return error_response(400, _validation_message(data["messages"]))
    message = data.get("message") or exc.description or exc.name
    if code == 413:
        message = "upload too large: " + str(message)
    response, code = error_response(code, message)
    for name, value in exc.get_headers():  # e.g. Allow on a 405
        if name.lower() != "content-type":
            response.headers[name] = value
    return response, code


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.code, exc.message, exc.status)

    app.register_error_handler(HTTPException, http_error)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal error")
