"""Exports: matching imported rows into a CSV file, and its download."""

import time

import marshmallow as ma
from flask import Response, current_app, request, send_file
from marshmallow import fields, validate

from app.core import states as S
from app.core.dispatch import enqueue
from app.core.storage import StorageError, StorageUnavailable
from app.kinds.exports import expiry, outfile
from app.kinds.exports import job as exports
from app.kinds.exports.plan import PlanError, parse_date
from app.web import limits
from app.web.api import Blueprint, store, task_dict, task_links
from app.web.auth import signed
from app.web.errors import ApiError
from app.web.schemas import MAX_ID, TaskSchema

blp = Blueprint("exports", __name__, description="Export imported rows to a CSV file")
EXPORT_LINKS = ("get_task", "pause", "resume", "terminate", "download", "download_link")

_DATE = "a date, YYYY-MM-DD or MM/DD/YYYY"


class DateField(fields.String):
    """`YYYY-MM-DD` or `MM/DD/YYYY`, loaded as `YYYY-MM-DD`."""

    def _deserialize(self, value, attr, data, **kwargs):
        iso = parse_date(super()._deserialize(value, attr, data, **kwargs))
        if iso is None:
            raise ma.ValidationError(f"not {_DATE}: {value!r}")
        return iso


class ExportRequestSchema(ma.Schema):
    """What to export; every key optional (none: every imported row)."""

    task_id = fields.Integer(
        strict=True,  # a JSON integer: not 2.5, "2" or true
        load_default=None,
        allow_none=True,
        validate=validate.Range(0, MAX_ID),
        metadata={"description": "only the rows of this import"},
    )
    column = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(1, 255),
        metadata={"description": "a column holding dates, filtered by from/to"},
    )
    start = DateField(
        data_key="from",
        load_default=None,
        allow_none=True,
        metadata={"description": f"first date kept (inclusive): {_DATE}"},
    )
    end = DateField(
        data_key="to",
        load_default=None,
        allow_none=True,
        metadata={"description": f"last date kept (inclusive): {_DATE}"},
    )

    raw = fields.Boolean(
        load_default=False,
        metadata={
            "description": "write cells exactly as imported; by default a cell starting "
            "with =, +, -, @, tab or CR (a plain number excepted) gets a leading ' so "
            "that spreadsheets show it as text"
        },
    )

    @ma.validates_schema
    def _range(self, data, **_):
        start, end = data.get("start"), data.get("end")
        if (start or end) and not data.get("column"):
            raise ma.ValidationError("needed with from/to: the column they filter", "column")
        if start and end and start > end:
            raise ma.ValidationError(f"from {start} is after to {end}", "from")


@blp.before_request
def _json_only():
    """A body that is not JSON is refused, not read as no filter (curl -d sends a form)."""
    if (
        request.endpoint == "exports.create_export"
        and request.content_length
        and not (request.is_json)
    ):
        raise ApiError(400, "send the filters as JSON (Content-Type: application/json)")


@blp.route("/exports", methods=["POST"])
@limits.starts_task
@blp.arguments(ExportRequestSchema, required=False)
@blp.response(
    202,
    TaskSchema,
    headers={"Location": {"required": True, "schema": {"type": "string"}}},
)
@blp.alt_response(400, schema="Error", description="bad request; no task is created")
@blp.alt_response(409, schema="Error", description="the import's rows were removed")
@blp.doc(responses={202: {"links": task_links("id", EXPORT_LINKS)}})
def create_export(args):
    """Export the matching imported rows to a CSV file, in the background."""
    try:
        task_id = exports.create(
            store(),
            args["task_id"],
            args["column"],
            args["start"],
            args["end"],
            args["raw"],
            client=limits.client(),
            max_columns=current_app.config["EXPORT_MAX_COLUMNS"],
        )
    except PlanError as exc:
        raise ApiError(exc.code, exc.message, exc.status) from None
    enqueue(task_id)
    return task_dict(store().get(task_id)), 202, {"Location": f"/tasks/{task_id}"}


@blp.route("/tasks/<int:task_id>/download")
@blp.doc(
    responses={
        "200": {
            "description": "the CSV file, as an attachment named export-<id>.csv",
            "content": {"text/csv": {"schema": {"type": "string", "format": "binary"}}},
        }
    }
)
@blp.alt_response(404, schema="Error", description="no such export, or REVOKED")
@blp.alt_response(409, schema="Error", description="not COMPLETED yet")
@blp.alt_response(410, schema="Error", description="expired: past `expires_at`")
@blp.alt_response(503, schema="Error", description="object storage failed; try again")
@signed
def download(task_id):
    """The finished CSV file of a COMPLETED export."""
    task = store().get(task_id)
    if task is None:
        raise ApiError(404, f"task {task_id} not found")
    if task.kind != "export":
        raise ApiError(404, f"task {task_id} is an import: only an export has a file")
    if task.status == S.REVOKED:
        raise ApiError(404, f"export {task_id} was terminated: its file is removed", task.status)
    if task.status != S.COMPLETED:
        raise ApiError(409, f"export {task_id} is {task.status}, not COMPLETED", task.status)
    if time.time() >= expiry.expiry(task, current_app.config):
        raise ApiError(410, f"export {task_id} expired (EXPORT_TTL_HOURS): export again")
    try:
        found = outfile.open_download(current_app.config, task)
    except StorageUnavailable as exc:
        raise ApiError(503, f"object storage failed: {exc}; try again") from None
    except StorageError:
        found = None
    if found is None:
        raise ApiError(404, f"the file of export {task_id} is missing")
    name = f"export-{task_id}.csv"
    if found.path is not None:
        response = send_file(
            found.path, mimetype="text/csv", as_attachment=True, download_name=name
        )
    else:  # an object: streamed through, in 1 MB pieces (resumed if a read drops)
        response = Response(_chunks(found.stream), mimetype="text/csv")
        response.content_length = found.size
        response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"  # rows of every uploader: never kept
    return response


def _chunks(stream, size: int = 1 << 20):
    with stream:
        while chunk := stream.read(size):
            yield chunk
