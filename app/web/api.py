"""The JSON API: flask-smorest blueprints, one per area, documented in /openapi.json."""

import time

import orjson
from apispec import BasePlugin
from flask import Flask, current_app, request, url_for
from flask_smorest import Api as _Api
from flask_smorest import Blueprint as _Blueprint
from flask_smorest.spec.plugins import integerconverter2paramschema
from webargs.flaskparser import FlaskParser
from werkzeug.datastructures import CombinedMultiDict
from werkzeug.routing import IntegerConverter, Rule

from app.core.store import Store
from app.web import auth, errors
from app.web.errors import ApiError
from app.web.schemas import MAX_ID, ErrorSchema, decode_cursor, encode_cursor, iso


class Parser(FlaskParser):
    DEFAULT_VALIDATION_STATUS = 400  # a malformed request is a 400, not a 422
    __location_map__ = {**FlaskParser.__location_map__, "multipart": "load_multipart"}

    def load_multipart(self, req, schema):
        """Files and form fields of a multipart body as one mapping (one requestBody)."""
        return self._makeproxy(CombinedMultiDict([req.files, req.form]), schema)


class Blueprint(_Blueprint):
    ARGUMENTS_PARSER = Parser()
    DEFAULT_LOCATION_CONTENT_TYPE_MAPPING = {
        **_Blueprint.DEFAULT_LOCATION_CONTENT_TYPE_MAPPING,
        "multipart": "multipart/form-data",
    }

    public = staticmethod(auth.public)  # documented with no security by ContractPlugin


class TaskIdConverter(IntegerConverter):
    """`<int:...>` in this app is a task id: past tasks.id's range it is a 404, not SQL."""

    def __init__(self, url_map, fixed_digits=0, min=None, max=MAX_ID, signed=False):
        super().__init__(url_map, fixed_digits, min, max, signed)


class ContractPlugin(BasePlugin):
    """Operation ids from the view names; security from the views' marks (see app/auth.py)."""

    def __init__(self, app: Flask):
        self.app, self.ids = app, set()

    def operation_helper(self, path=None, operations=None, rule=None, **kwargs):
        view = self.app.view_functions.get(rule.endpoint) if rule is not None else None
        for method, operation in (operations or {}).items():
            if "operationId" not in operation and rule is not None and rule.endpoint:
                name = rule.endpoint.rsplit(".", 1)[-1]
                if name in self.ids or len(operations) > 1:
                    name = f"{rule.endpoint.replace('.', '_')}_{method}"
                operation["operationId"] = name
            self.ids.add(operation.get("operationId", ""))
            if getattr(view, "public", False):
                operation["security"] = []
            elif getattr(view, "signed", False):
                operation["security"] = [{"bearerAuth": []}, {"signedLink": []}]
            if operation.get("security") != []:  # 401 when API_TOKEN is set
                operation.setdefault("responses", {})["401"] = "BEARER_REQUIRED"


class Api(_Api):
    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error):
        return errors.http_error(error)

    def _register_responses(self):
        super()._register_responses()
        self.spec.components.response(
            "BEARER_REQUIRED",
            {
                "description": "API_TOKEN is set and the request lacks `Authorization: Bearer`",
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": "Error"}},
            },
        )
        self.spec.components.security_scheme(
            "bearerAuth",
            {
                "type": "http",
                "scheme": "bearer",
                "description": "required on every endpoint but the public ones "
                "when the server has API_TOKEN set",
            },
        )
        self.spec.components.security_scheme(
            "signedLink",
            {
                "type": "apiKey",
                "in": "query",
                "name": "sig",
                "description": "instead of the token: the `sig` of a link from "
                f"POST /tasks/{{task_id}}/download_link, valid {auth.LINK_SECONDS} s",
            },
        )


def store() -> Store:
    return current_app.extensions["store"]


def page_cursor(args: dict) -> int | tuple[int, int] | None:
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


IMPORT_LINKS = ("get_task", "list_errors", "list_entries", "pause", "resume", "terminate")


def task_links(id_field: str, operation_ids=IMPORT_LINKS) -> dict:
    """OpenAPI links from a response carrying a task to what can be done with that task."""
    task_id = {"task_id": f"$response.body#/{id_field}"}
    return {
        op.title().replace("_", ""): {"operationId": op, "parameters": task_id}
        for op in operation_ids
    }


def task_dict(t, now: float | None = None, paused_at: float | None = None) -> dict:
    """A task as the API shows it, with its derived progress, speed and ETA."""
    now = time.time() if now is None else now
    options = orjson.loads(t.options) if t.options else None
    filename, rows_total = t.filename, None
    if t.kind == "export":
        # rows_total is final once the header is written (bytes_done > 0); before, a
        # date-filtered export is still counting. last_row = rows_imported = rows written.
        rows_total = t.rows_total if t.bytes_done else None
        progress = (t.rows_imported / rows_total) if rows_total else 0.0
        options = {k: v for k, v in (options or {}).items() if k != "snapshot"}
        filename = f"export-{t.id}.csv"  # the download's name
    else:
        progress = (t.bytes_done / t.bytes_total) if t.bytes_total else 0.0
    if t.status == "COMPLETED":
        progress = 1.0
    elif t.status == "REVOKED":
        progress = None  # none of its rows remain: no progress to speak of
    rate = eta = None
    # A heartbeat older than HEARTBEAT_TIMEOUT_S (on the database's clock when the
    # row carries it) means no run is alive: no rate, no ETA.
    clock = getattr(t, "db_now", None) or now
    live = t.heartbeat_at and clock - t.heartbeat_at <= current_app.config["HEARTBEAT_TIMEOUT_S"]
    if t.status == "PROCESSING" and t.run_started_at and live:
        elapsed = max(t.heartbeat_at - t.run_started_at, 1e-3)
        rate = (t.last_row - t.run_start_row) / elapsed
        if t.kind == "export":
            left = max((rows_total or 0) - t.rows_imported, 0)
            eta = left / rate if rate > 0 and rows_total is not None else None
        else:
            byte_rate = (t.bytes_done - t.run_start_bytes) / elapsed
            eta = (t.bytes_total - t.bytes_done) / byte_rate if byte_rate > 0 else None
    return {
        "id": t.id,
        "kind": t.kind,
        "status": t.status,
        "filename": filename,
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
        "started_at": iso(t.started_at),
        "finished_at": iso(t.finished_at),
        "last_row": t.last_row,
        "rows_imported": t.rows_imported,
        "rows_rolled_back": t.rows_rolled_back,
        "error_count": t.error_count,
        "max_errors": t.max_errors,
        "bytes_total": t.bytes_total,
        "bytes_done": t.bytes_done,
        "progress": None if progress is None else min(progress, 1.0),
        "rows_per_second": rate,
        "eta_seconds": eta,
        "error": t.error,
        "header": orjson.loads(t.header) if t.header else None,
        "options": options,
        "rows_total": rows_total,
        "paused_at": iso(paused_at),
        "requested_at": iso(t.requested_at),
    }


def init_app(app: Flask) -> None:
    from app import kinds
    from app.web import health, links, tasks

    app.url_map.converters["int"] = TaskIdConverter  # before any route is added
    app.config.setdefault("API_SPEC_OPTIONS", {"security": [{"bearerAuth": []}]})
    api = Api(app, spec_kwargs={"extra_plugins": [ContractPlugin(app)]})
    api.register_converter(TaskIdConverter, integerconverter2paramschema)
    for blueprint in [tasks.blp, links.blp, health.blp]:
        api.register_blueprint(blueprint)
    for kind in kinds.load():
        for blueprint in kind.blueprints():
            api.register_blueprint(blueprint)
    document_page_and_spec(api)
    app.extensions["api"] = api


def document_page_and_spec(api: Api) -> None:
    """GET / (the page), GET /metrics and GET /openapi.json are served outside the
    blueprints."""
    api.spec.path(
        rule=Rule("/"),
        operations={
            "get": {
                "operationId": "page",
                "summary": "The dashboard: upload form, live task table and actions.",
                "tags": ["page"],
                "security": [],
                "responses": {"200": {"description": "the page", "content": {"text/html": {}}}},
            }
        },
    )
    api.spec.path(
        rule=Rule("/metrics"),
        operations={
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics from the database (token unless METRICS_PUBLIC=1).",
                "tags": ["metrics"],
                "responses": {
                    "200": {
                        "description": "Prometheus text format, names prefixed taskctl_",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": "BEARER_REQUIRED",
                },
            }
        },
    )
    api.spec.path(
        rule=Rule("/openapi.json"),
        operations={
            "get": {
                "operationId": "openapi",
                "summary": "This OpenAPI 3 description, generated from the code.",
                "tags": ["page"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "the description",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    )
