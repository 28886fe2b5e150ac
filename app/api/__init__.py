"""The JSON API: flask-smorest blueprints, one per area, documented in /openapi.json."""

import time

import orjson
from flask import Flask, current_app, request, url_for
from flask_smorest import Api as _Api
from flask_smorest import Blueprint as _Blueprint
from webargs.flaskparser import FlaskParser

from .. import errors
from ..errors import ApiError
from ..schemas import ErrorSchema, decode_cursor, encode_cursor, iso
from ..store import Store


class Parser(FlaskParser):
    DEFAULT_VALIDATION_STATUS = 400  # a malformed request is a 400, not a 422


class Blueprint(_Blueprint):
    ARGUMENTS_PARSER = Parser()


class Api(_Api):
    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error):
        return errors.http_error(error)


def store() -> Store:
    return current_app.extensions["store"]


def page_cursor(args: dict) -> int | None:
    """The key a page starts after, from the opaque `cursor` argument."""
    if not args.get("cursor"):
        return None
    try:
        return decode_cursor(args["cursor"])
    except ValueError:
        raise ApiError(400, "cursor: not a cursor this server made") from None


def next_link(items: list, args: dict, key, **path_args) -> str | None:
    """The relative path of the next page, keeping the filters; None on the last page."""
    if len(items) < args["limit"]:
        return None
    query = {k: v for k, v in args.items() if v is not None and k != "cursor"}
    query.update(path_args)
    return url_for(request.endpoint, cursor=encode_cursor(key(items[-1])), **query)


def task_dict(t, now: float | None = None, paused_at: float | None = None) -> dict:
    """A task as the API shows it, with its derived progress, speed and ETA."""
    now = time.time() if now is None else now
    if t.kind == "export":
        total = t.rows_total or 0
        progress = (t.rows_imported / total) if total else 0.0
    else:
        progress = (t.bytes_done / t.bytes_total) if t.bytes_total else 0.0
    if t.status == "COMPLETED":
        progress = 1.0
    rate = eta = None
    if t.status == "PROCESSING" and t.run_started_at and t.heartbeat_at:
        elapsed = max(t.heartbeat_at - t.run_started_at, 1e-3)
        rate = (t.last_row - t.run_start_row) / elapsed
        if t.kind == "export":
            left = max((t.rows_total or 0) - t.rows_imported, 0)
            eta = left / rate if rate > 0 else None
        else:
            byte_rate = (t.bytes_done - t.run_start_bytes) / elapsed
            eta = (t.bytes_total - t.bytes_done) / byte_rate if byte_rate > 0 else None
    return {
        "id": t.id,
        "kind": t.kind,
        "status": t.status,
        "filename": t.filename,
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
        "started_at": iso(t.started_at),
        "finished_at": iso(t.finished_at),
        "last_row": t.last_row,
        "rows_imported": t.rows_imported,
        "error_count": t.error_count,
        "max_errors": t.max_errors,
        "bytes_total": t.bytes_total,
        "bytes_done": t.bytes_done,
        "progress": min(progress, 1.0),
        "rows_per_second": rate,
        "eta_seconds": eta,
        "error": t.error,
        "header": orjson.loads(t.header) if t.header else None,
        "options": orjson.loads(t.options) if t.options else None,
        "paused_at": iso(paused_at),
        "requested_at": iso(t.requested_at),
    }


def init_app(app: Flask) -> None:
    from . import entries, health, tasks, uploads

    api = Api(app)
    for module in (uploads, tasks, entries, health):
        api.register_blueprint(module.blp)
    app.extensions["api"] = api
