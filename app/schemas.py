"""Marshmallow schemas: what comes in and what goes out (and /openapi.json)."""

import base64
from datetime import UTC, datetime

import marshmallow as ma
from marshmallow import fields, validate

from . import states as S


class TaskSchema(ma.Schema):
    id = fields.Integer(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(["import", "export"]))
    status = fields.String(required=True, validate=validate.OneOf(S.ALL))
    filename = fields.String(allow_none=True)
    created_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime(allow_none=True)
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    last_row = fields.Integer(metadata={"description": "data rows consumed so far"})
    rows_imported = fields.Integer()
    error_count = fields.Integer()
    max_errors = fields.Integer()
    bytes_total = fields.Integer()
    bytes_done = fields.Integer()
    progress = fields.Float(metadata={"description": "0 to 1; exactly 1 when COMPLETED"})
    rows_per_second = fields.Float(allow_none=True)
    eta_seconds = fields.Float(allow_none=True)
    error = fields.String(allow_none=True)
    header = fields.List(fields.String(), allow_none=True)
    options = fields.Dict(allow_none=True)
    paused_at = fields.DateTime(allow_none=True)
    requested_at = fields.DateTime(
        allow_none=True, metadata={"description": "when the last action was accepted"}
    )


class ErrorBodySchema(ma.Schema):
    code = fields.Integer(required=True)
    message = fields.String(required=True)
    status = fields.String(metadata={"description": "the task's status, when it is the reason"})


class ErrorSchema(ma.Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


class PageArgs(ma.Schema):
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    cursor = fields.String(load_default=None, metadata={"description": "opaque; from `next`"})


class TaskListArgs(PageArgs):
    status = fields.String(load_default=None, validate=validate.OneOf(S.ALL))


class EntryListArgs(PageArgs):
    task_id = fields.Integer(load_default=None)


class TaskListSchema(ma.Schema):
    tasks = fields.List(fields.Nested(TaskSchema), required=True)
    next = fields.String(allow_none=True, required=True)


class EntrySchema(ma.Schema):
    id = fields.Integer(required=True)
    task_id = fields.Integer(required=True)
    row_number = fields.Integer(required=True)
    data = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class EntryListSchema(ma.Schema):
    entries = fields.List(fields.Nested(EntrySchema), required=True)
    next = fields.String(allow_none=True, required=True)


class RowErrorSchema(ma.Schema):
    row_number = fields.Integer(required=True)
    line_number = fields.Integer(required=True)
    raw = fields.String(required=True)
    reason = fields.String(required=True)


class RowErrorListSchema(ma.Schema):
    errors = fields.List(fields.Nested(RowErrorSchema), required=True)
    next = fields.String(allow_none=True, required=True)


class HealthSchema(ma.Schema):
    database = fields.String(required=True)
    broker = fields.String(required=True)
    workers = fields.Integer(required=True)


class UploadForm(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    has_header = fields.Boolean(load_default=True)
    delimiter = fields.String(
        load_default=",",
        validate=[
            validate.Length(equal=1, error="must be one character"),
            validate.NoneOf(['"', "\r", "\n"], error="cannot be a quote or a line break"),
        ],
    )
    encoding = fields.String(load_default="utf-8", validate=validate.Length(1, 40))
    max_errors = fields.Integer(load_default=1000, validate=validate.Range(min=0))


class UploadFiles(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    file = fields.Raw(
        required=True,
        metadata={"type": "string", "format": "binary"},
        error_messages={"required": "no file part: send the CSV as multipart field 'file'"},
    )


def encode_cursor(key: int) -> str:
    return base64.urlsafe_b64encode(str(key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Return the key inside a cursor; ValueError if it is not one of ours."""
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        return int(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, UnicodeError) as exc:
        raise ValueError("invalid cursor") from exc


def iso(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)
