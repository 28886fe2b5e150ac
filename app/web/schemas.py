"""Marshmallow schemas: what comes in and what goes out (and /openapi.json)."""

import re

import marshmallow as ma
from flask_smorest.fields import Upload
from marshmallow import fields, validate

from app import kinds
from app.core import states as S
from app.core.database import iso  # noqa: F401  (the API's one time format)
from app.core.runner import KINDS

kinds.load()  # every kind's Job, for the kinds and fields a task can have

MAX_ID = 2**31 - 1  # tasks.id is a 32-bit integer on PostgreSQL
MAX_BIGINT = 2**63 - 1
# A cursor is the last key of a page in hex. The patterns admit exactly the keys that
# fit the column (32-bit task ids, 64-bit row ids): every string they match is valid.
_TASK_HEX, _ROW_HEX = r"[0-9a-f]{1,7}|[0-7][0-9a-f]{7}", r"[0-9a-f]{1,15}|[0-7][0-9a-f]{15}"
TASK_CURSOR = rf"^({_TASK_HEX})$"
ROW_CURSOR = rf"^({_ROW_HEX})$"
# An entry across tasks: "<task_id>.<row_number>" (the key of csv_entries).
ENTRY_CURSOR = rf"^((?:{_TASK_HEX})\.)?({_ROW_HEX})$"


def _count(description: str | None = None) -> fields.Integer:
    metadata = {"description": description} if description else {}
    return fields.Integer(required=True, validate=validate.Range(min=0), metadata=metadata)


def _time(description: str) -> fields.DateTime:
    return fields.DateTime(required=True, allow_none=True, metadata={"description": description})


class BaseTaskSchema(ma.Schema):
    """The fields every task has; each kind adds its own (Job.task_fields)."""

    id = fields.Integer(required=True, metadata={"description": "opaque task id"})
    kind = fields.String(required=True, validate=validate.OneOf(list(KINDS)))
    status = fields.String(required=True, validate=validate.OneOf(S.ALL))
    actions = fields.List(
        fields.String(validate=validate.OneOf(S.ACTIONS)),
        required=True,
        metadata={
            "description": "the actions that would change the task now, from the state "
            "table (e.g. PROCESSING: pause, terminate); an action whose goal already "
            "holds is left out (it answers 200, unchanged)"
        },
    )
    filename = fields.String(required=True, allow_none=True)
    created_at = _time("when the task was created (UTC)")
    updated_at = _time("when the task last changed (UTC)")
    started_at = _time("when a worker first started it (UTC)")
    finished_at = _time("when it became COMPLETED, FAILED or REVOKED (UTC)")
    last_row = _count("data rows consumed so far (rows_imported + error_count)")
    rows_imported = _count(
        "rows the task holds now: imported (for an export: written); 0 once REVOKED"
    )
    rows_rolled_back = _count("rows its rollback removed (REVOKED); 0 otherwise")
    error_count = _count("rows that could not be imported")
    max_errors = _count("the task becomes FAILED when error_count passes this")
    bytes_total = _count("size of the upload")
    bytes_done = _count("bytes of the upload read so far")
    progress = fields.Float(
        required=True,
        allow_none=True,
        validate=validate.Range(0, 1),
        metadata={"description": "0 to 1; exactly 1 when COMPLETED; null when REVOKED"},
    )
    rows_per_second = fields.Float(
        required=True, allow_none=True, metadata={"description": "null unless PROCESSING"}
    )
    eta_seconds = fields.Float(
        required=True, allow_none=True, metadata={"description": "null unless PROCESSING"}
    )
    error = fields.String(
        required=True, allow_none=True, metadata={"description": "why the task FAILED"}
    )
    header = fields.List(
        fields.String(),
        allow_none=True,
        metadata={"description": "the CSV's column names (GET /tasks/<id> only, not in lists)"},
    )
    options = fields.Dict(
        required=True,
        allow_none=True,
        metadata={
            "description": "an import's options (has_header, delimiter, encoding); "
            "an export's filters and raw"
        },
    )
    paused_at = _time("when the task was last PAUSED (UTC)")
    requested_at = _time("when the last action was accepted (UTC)")


def _task_schema() -> type[ma.Schema]:
    """TaskSchema: the base fields plus every kind's own, named once in the spec."""
    extra = {}
    for job in KINDS.values():
        extra.update(job.task_fields)
    return type("TaskSchema", (BaseTaskSchema,), extra)


TaskSchema = _task_schema()


class ErrorBodySchema(ma.Schema):
    code = fields.Integer(
        required=True,
        metadata={"description": "the HTTP status code"},
        validate=validate.Range(400, 599),
    )
    message = fields.String(required=True, metadata={"description": "what went wrong, in words"})
    status = fields.String(
        validate=validate.OneOf(S.ALL),
        metadata={"description": "the task's status, when it is the reason"},
    )


class ErrorSchema(ma.Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


def _cursor(pattern: str) -> fields.String:
    return fields.String(
        load_default=None,
        validate=validate.Regexp(pattern, error="not a cursor this server made"),
        metadata={"description": "opaque; from `next`"},
    )


class PageArgs(ma.Schema):
    """A page of rows (entries, row errors)."""

    limit = fields.Integer(
        load_default=100, validate=validate.Range(1, 1000), metadata={"description": "page size"}
    )
    cursor = _cursor(ROW_CURSOR)


class TaskPageArgs(PageArgs):
    """A page of tasks, newest first."""

    cursor = _cursor(TASK_CURSOR)


class TaskListArgs(TaskPageArgs):
    status = fields.String(
        load_default=None, validate=validate.OneOf(S.ALL), metadata={"description": "filter"}
    )


class EntryListArgs(PageArgs):
    cursor = _cursor(ENTRY_CURSOR)
    task_id = fields.Integer(
        load_default=None,
        validate=validate.Range(0, MAX_ID),
        metadata={"description": "only the rows of this task"},
    )


_NEXT = {"description": "relative path of the next page; null on the last page"}


class TaskListSchema(ma.Schema):
    tasks = fields.List(fields.Nested(TaskSchema), required=True)
    next = fields.String(allow_none=True, required=True, metadata=_NEXT)


class EntrySchema(ma.Schema):
    id = fields.String(required=True, metadata={"description": "`<task_id>:<row_number>`"})
    task_id = fields.Integer(required=True)
    row_number = fields.Integer(required=True)
    data = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class EntryListSchema(ma.Schema):
    entries = fields.List(fields.Nested(EntrySchema), required=True)
    next = fields.String(allow_none=True, required=True, metadata=_NEXT)


class RowErrorSchema(ma.Schema):
    row_number = fields.Integer(required=True)
    line_number = fields.Integer(required=True)
    raw = fields.String(required=True)
    reason = fields.String(required=True)


class RowErrorListSchema(ma.Schema):
    errors = fields.List(fields.Nested(RowErrorSchema), required=True)
    next = fields.String(allow_none=True, required=True, metadata=_NEXT)


class HealthArgs(ma.Schema):
    workers = fields.Integer(
        validate=validate.Range(min=0, max=1000),
        metadata={
            "description": "answer 503 unless at least this many workers are live "
            "(default: 1 on the embedded broker, 0 with Redis)"
        },
    )


class HealthSchema(ma.Schema):
    database = fields.String(required=True, metadata={"description": '"ok" or the error'})
    broker = fields.String(required=True, metadata={"description": '"ok" or the error'})
    workers = fields.Integer(
        required=True, validate=validate.Range(min=0), metadata={"description": "live workers"}
    )


class UploadSchema(ma.Schema):
    """The multipart upload: the file and its optional import options."""

    class Meta:
        unknown = ma.EXCLUDE

    file = Upload(
        required=True,
        metadata={"description": "the CSV file"},
        error_messages={"required": "no file part: send the CSV as multipart field 'file'"},
    )
    has_header = fields.Boolean(
        load_default=True, metadata={"description": "false: the columns are col1, col2, ..."}
    )
    delimiter = fields.String(
        load_default=",",
        validate=[
            validate.Length(equal=1, error="must be one character"),
            validate.NoneOf(['"', "\r", "\n"], error="cannot be a quote or a line break"),
        ],
    )
    encoding = fields.String(
        load_default="utf-8",
        validate=validate.Regexp(
            r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,39}$", error="not the name of an encoding"
        ),
        metadata={"description": "any ASCII-compatible Python codec; a BOM is stripped"},
    )
    max_errors = fields.Integer(
        load_default=1000,
        validate=validate.Range(0, MAX_BIGINT),
        metadata={"description": "the task becomes FAILED when error_count passes this"},
    )


def encode_cursor(key: int | tuple[int, int]) -> str:
    if isinstance(key, tuple):
        return ".".join(format(part, "x") for part in key)
    return format(key, "x")


def decode_cursor(cursor: str) -> int | tuple[int, int]:
    """Return the key inside a cursor; ValueError if it is not one of ours."""
    if not re.fullmatch(ENTRY_CURSOR, cursor):
        raise ValueError("invalid cursor")
    if "." in cursor:
        task, row = cursor.split(".")
        return int(task, 16), int(row, 16)
    return int(cursor, 16)
