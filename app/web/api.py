"""The JSON API: flask-smorest blueprints, one per area, documented in /openapi.json."""

import time

import orjson
from apispec import BasePlugin
from flask import Flask, current_app, request, url_for
from flask_smorest import Api as _Api
from flask_smorest import Blueprint as _Blueprint
from flask_smorest.spec.plugins import integerconverter2paramschema
from webargs.flaskparser import FlaskParser
from webargs.multidictproxy import MultiDictProxy
from werkzeug.datastructures import CombinedMultiDict
from werkzeug.routing import IntegerConverter, Rule

from app.core import states as S
from app.core.runner import KINDS
from app.core.store import Store
from app.web import auth, errors, guard
from app.web.errors import ApiError
from app.web.schemas import MAX_ID, ErrorSchema, decode_cursor, encode_cursor, iso


class Parser(FlaskParser):
    DEFAULT_VALIDATION_STATUS = 400  # a malformed request is a 400, not a 422
    __location_map__ = {**FlaskParser.__location_map__, "multipart": "load_multipart"}

    def _raw_load_json(self, req):
        try:
            return super()._raw_load_json(req)
        except RecursionError:  # stdlib json on a body nested thousands deep
            raise ApiError(400, "the JSON body is nested too deeply") from None

    def load_multipart(self, req, schema):
        """Files and form fields of a multipart body as one mapping (one requestBody)."""
        both = CombinedMultiDict([req.files, req.form])
        return MultiDictProxy(both, schema, known_multi_fields=tuple(self.KNOWN_MULTI_FIELDS))


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
            responses = operation.setdefault("responses", {})
            if operation.get("security") != []:  # 401 when API_TOKEN is set
                responses["401"] = "BEARER_REQUIRED"
            # app/web/guard.py and app/web/limits.py answer these on any path.
            responses.setdefault("400", "BAD_REQUEST_OR_HOST")
            if method.upper() not in guard.SAFE_METHODS:
                responses["403"] = "CROSS_ORIGIN"
                if not getattr(view, "rate_exempt", False):
                    responses["429"] = "TOO_MANY_REQUESTS"


class Api(_Api):
    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error):
        return errors.http_error(error)


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


def within_budget(items: list, size) -> tuple[list, bool]:
    """The first items whose `size(item)` (about their JSON bytes) fit PAGE_MAX_BYTES,
    at least one; and whether the page stopped early for it (then `next` continues)."""
    budget, used = current_app.config["PAGE_MAX_BYTES"], 0
    for i, item in enumerate(items):
        used += size(item)
        if used > budget and i > 0:
            return items[:i], True
    return items, False


def next_link(items: list, args: dict, key, cut: bool = False, **path_args) -> str | None:
    """The relative path of the next page, keeping the filters; None on the last page.

    A page is full at `limit` items, or `cut` short by its byte budget."""
    if not items or (len(items) < args["limit"] and not cut):
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


def task_dict(
    t, now: float | None = None, paused_at: float | None = None, header: bool = True
) -> dict:
    """A task as the API shows it: the generic fields, then its kind's (Job.present).

    Lists leave out `header` (it can be thousands of names): GET /tasks/<id> has it.
    """
    now = time.time() if now is None else now
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
        byte_rate = (t.bytes_done - t.run_start_bytes) / elapsed
        eta = (t.bytes_total - t.bytes_done) / byte_rate if byte_rate > 0 else None
    shown = {
        "id": t.id,
        "kind": t.kind,
        "status": t.status,
        "actions": S.actions(t.status),
        "filename": t.filename,
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
        "header": orjson.loads(t.header) if t.header and header else None,
        "options": orjson.loads(t.options) if t.options else None,
        "paused_at": iso(paused_at),
        "requested_at": iso(t.requested_at),
    }
    if not header:
        del shown["header"]
    return KINDS[t.kind].present(t, shown, current_app.config)


def init_app(app: Flask) -> None:
    from app import kinds
    from app.web import health, links, tasks

    app.url_map.converters["int"] = TaskIdConverter  # before any route is added
    app.config.setdefault("API_SPEC_OPTIONS", {"security": [{"bearerAuth": []}]})
    api = Api(app, spec_kwargs={"extra_plugins": [ContractPlugin(app)]})
    document_security(api)
    api.register_converter(TaskIdConverter, integerconverter2paramschema)
    for blueprint in [tasks.blp, links.blp, health.blp]:
        api.register_blueprint(blueprint)
    for kind in kinds.load():
        for blueprint in kind.blueprints():
            api.register_blueprint(blueprint)
    document_page_and_spec(api)
    app.extensions["api"] = api


def document_security(api: Api) -> None:
    """The shared error responses and the two ways to authenticate, as OpenAPI components."""
    api.spec.components.response(
        "BEARER_REQUIRED",
        {
            "description": "API_TOKEN is set and the request lacks `Authorization: Bearer`",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": "Error"}},
        },
    )
    error = {"content": {"application/json": {"schema": "Error"}}}
    api.spec.components.response(
        "BAD_REQUEST_OR_HOST",
        {"description": "malformed request, or a Host not in ALLOWED_HOSTS", **error},
    )
    api.spec.components.response(
        "CROSS_ORIGIN",
        {"description": "from another origin (Origin, Sec-Fetch-Site: cross-site)", **error},
    )
    api.spec.components.response(
        "TOO_MANY_REQUESTS",
        {
            "description": "over RATE_LIMIT or MAX_ACTIVE_TASKS_PER_CLIENT for this client",
            "headers": {"Retry-After": {"schema": {"type": "integer"}, "required": True}},
            **error,
        },
    )
    api.spec.components.security_scheme(
        "bearerAuth",
        {
            "type": "http",
            "scheme": "bearer",
            "description": "required on every endpoint but the public ones "
            "when the server has API_TOKEN set",
        },
    )
    api.spec.components.security_scheme(
        "signedLink",
        {
            "type": "apiKey",
            "in": "query",
            "name": "sig",
            "description": "instead of the token: the `sig` of a link from "
            f"POST /tasks/{{task_id}}/download_link, valid {auth.LINK_SECONDS} s",
        },
    )


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
