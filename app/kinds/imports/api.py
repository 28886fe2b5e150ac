"""POST /: upload a CSV (or name an object already in the bucket) and start its import."""

import io
from collections.abc import Callable

import marshmallow as ma
import orjson
from flask import current_app, request
from werkzeug.datastructures import FileStorage

from app.core import storage, uploads
from app.core.dispatch import enqueue
from app.kinds.imports import parser as importer
from app.web import limits
from app.web.api import Blueprint, store, task_dict, task_links
from app.web.errors import ApiError, _validation_message
from app.web.schemas import TaskSchema, UploadSchema

blp = Blueprint("uploads", __name__, description="Upload a CSV file to import")


class SourceSchema(UploadSchema):
    """Import an object already in STORAGE_URL's bucket: no upload."""

    class Meta:
        unknown = ma.RAISE
        exclude = ("file",)

    source = ma.fields.String(
        required=True,
        validate=ma.validate.Regexp(r"^s3://[^/]+/.+", error="must be s3://bucket/key"),
        metadata={"description": "s3://bucket/key, in STORAGE_URL's bucket"},
    )


@blp.before_request
def _source_import():
    """A JSON body names an object to import instead of carrying the file."""
    if request.endpoint == "uploads.upload" and request.method == "POST" and request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, 'send a JSON object: {"source": "s3://bucket/key", ...}')
        try:
            args = SourceSchema().load(body)
        except ma.ValidationError as exc:
            raise ApiError(400, _validation_message({"json": exc.messages})) from None
        return import_source(args)
    return None


@blp.route("/", methods=["POST"])
@limits.starts_task
@blp.arguments(UploadSchema, location="multipart")
@blp.response(
    202,
    TaskSchema,
    description="the task, created and queued",
    headers={
        "Location": {
            "description": "the task's path, /tasks/<id>",
            "required": True,
            "schema": {"type": "string"},
        }
    },
)
@blp.alt_response(400, schema="Error", description="bad upload or source; no task is created")
@blp.alt_response(413, schema="Error", description="upload over MAX_UPLOAD_MB")
@blp.alt_response(503, schema="Error", description="object storage failed; nothing is kept")
@blp.alt_response(507, schema="Error", description="no room to store the upload; nothing is kept")
@blp.doc(
    requestBody={
        "content": {
            "multipart/form-data": {"encoding": {"file": {"contentType": "text/csv"}}},
            "application/json": {"schema": SourceSchema},
        }
    },
    responses={202: {"links": task_links("id")}},  # int: merged into @blp.response(202)
)
def upload(form):
    """Upload a CSV (multipart field `file`), or name an object (JSON `source`); import it."""
    return start_task(form, "import")


def start_task(form: dict, kind: str, check: Callable[[list[str]], object] | None = None):
    """Store an uploaded CSV, check its start, create a queued task of `kind`: the 202.

    `check(header)` may refuse the header (parser.UploadRejected, a 400).
    """
    file = form["file"]
    if not isinstance(file, FileStorage):
        raise ApiError(400, "no file part: send the CSV as multipart field 'file'")
    if not file.filename:
        raise ApiError(400, "the file has no name: choose a file to upload")
    head = uploads.head(file)
    try:
        if not head:
            raise ApiError(400, "the file is empty (0 bytes)")
        layout = _inspect(head, form, check)
    except ApiError:
        uploads.discard(file)  # inspected before it is committed: no file, no object
        raise
    location, size = uploads.adopt(file)
    return _create(kind, location, size, uploads.clean_filename(file.filename), layout, form)


def import_source(args: dict):
    """Create an import of an object already in storage (checked as an upload is)."""
    location = args["source"]
    try:
        size, head = storage.for_config(current_app.config).read_source(location)
    except storage.StorageUnavailable as exc:
        raise ApiError(503, f"object storage failed: {exc}") from None
    except storage.StorageError as exc:
        raise ApiError(400, str(exc)) from None
    if not head:
        raise ApiError(400, f"{location} is empty (0 bytes)")
    layout = _inspect(head, args)
    name = uploads.clean_filename(location.rsplit("/", 1)[-1])
    return _create("import", location, size, name, layout, args, source=True)


def _inspect(head: bytes, form: dict, check=None) -> importer.Layout:
    options = importer.CsvOptions(
        has_header=form["has_header"],
        delimiter=form["delimiter"],
        encoding=form["encoding"],
        max_field_kb=current_app.config["MAX_FIELD_KB"],
    )
    try:
        layout = importer.inspect(io.BytesIO(head), options)
        if check is not None:
            check(layout.header)
        return layout
    except importer.UploadRejected as exc:
        raise ApiError(400, str(exc)) from None


def _create(kind, location, size: int, name: str, layout, form: dict, source: bool = False):
    options = {k: form[k] for k in ("has_header", "delimiter", "encoding")}
    if source:
        options["source"] = True  # never deleted: the service did not create it
    try:
        task_id = store().create_task(
            kind=kind,
            filename=name,
            upload_path=location,
            options=orjson.dumps(options).decode(),
            header=orjson.dumps(layout.header).decode(),
            bytes_total=size,
            bytes_done=layout.data_offset,
            line_number=layout.data_line,
            max_errors=form["max_errors"],
            client=limits.client(),
        )
    except Exception as exc:
        if not source:
            storage.delete(location)  # no task, no file: nothing half-made
        error = uploads.insufficient_storage(exc)
        if error is None:
            raise
        raise error from None
    enqueue(task_id)
    task = store().get(task_id)
    return task_dict(task), 202, {"Location": f"/tasks/{task_id}"}
