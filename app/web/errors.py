"""One JSON error shape, mapped in one place: {"error": {"code", "message", "status"?}}."""

import errno
import logging
import sqlite3

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


# No room: a full disk, a file size limit (RLIMIT_FSIZE), a quota.
NO_ROOM = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def no_room(exc: BaseException) -> bool:
    """True for an error that means the server ran out of storage (disk or database)."""
    if isinstance(exc, OSError):
        return exc.errno in NO_ROOM
    orig = getattr(exc, "orig", None)  # a SQLAlchemy DBAPIError
    if isinstance(orig, sqlite3.Error):
        return getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return getattr(orig, "sqlstate", None) == "53100"  # PostgreSQL disk_full


class ApiError(Exception):
    """A client-visible error; `status` names the task state when that is the reason."""

    def __init__(
        self, code: int, message: str, status: str | None = None, retry_after: int | None = None
    ):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
        self.retry_after = retry_after  # seconds, for a 429 or 503


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
            parts.append(f"{prefix}: {' '.join(value)}" if prefix else " ".join(value))
        else:
            parts.append(f"{prefix}: {value}" if prefix else str(value))

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
        response, code = error_response(exc.code, exc.message, exc.status)
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response, code

    app.register_error_handler(HTTPException, http_error)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if no_room(exc):
            log.error("out of storage: %s", exc)
            return error_response(507, "insufficient storage: the server has no room now")
        log.exception("unhandled error")
        return error_response(500, "internal error")
