"""POST /: upload a CSV and start its import."""

import os
from collections.abc import Callable

import orjson
from flask import current_app
from werkzeug.datastructures import FileStorage

from app.core.dispatch import enqueue
from app.core.uploads import adopt, clean_filename, insufficient_storage
from app.kinds.imports import parser as importer
from app.web import limits
from app.web.api import Blueprint, store, task_dict, task_links
from app.web.errors import ApiError
from app.web.schemas import TaskSchema, UploadSchema

blp = Blueprint("uploads", __name__, description="Upload a CSV file to import")


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
@blp.alt_response(400, schema="Error", description="bad upload; no task is created")
@blp.alt_response(413, schema="Error", description="upload over MAX_UPLOAD_MB")
@blp.alt_response(507, schema="Error", description="no room to store the upload; nothing is kept")
@blp.doc(
    requestBody={
        "content": {"multipart/form-data": {"encoding": {"file": {"contentType": "text/csv"}}}}
    },
    responses={202: {"links": task_links("id")}},  # int: merged into @blp.response(202)
)
def upload(form):
    """Upload a CSV (multipart field `file`) and start importing it."""
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
    path, size = adopt(file)
    try:
        if size == 0:
            raise ApiError(400, "the file is empty (0 bytes)")
        options = importer.CsvOptions(
            has_header=form["has_header"],
            delimiter=form["delimiter"],
            encoding=form["encoding"],
            max_field_kb=current_app.config["MAX_FIELD_KB"],
        )
        try:
            layout = importer.inspect(path, options)
            if check is not None:
                check(layout.header)
        except importer.UploadRejected as exc:
            raise ApiError(400, str(exc)) from None
    except ApiError:
        os.unlink(path)
        raise
    try:
        task_id = store().create_task(
            kind=kind,
            filename=clean_filename(file.filename),
            upload_path=path,
            options=orjson.dumps(
                {k: form[k] for k in ("has_header", "delimiter", "encoding")}
            ).decode(),
            header=orjson.dumps(layout.header).decode(),
            bytes_total=size,
            bytes_done=layout.data_offset,
            line_number=layout.data_line,
            max_errors=form["max_errors"],
            client=limits.client(),
        )
    except Exception as exc:
        os.unlink(path)  # no task, no file: nothing half-made
        error = insufficient_storage(exc)
        if error is None:
            raise
        raise error from None
    enqueue(task_id)
    task = store().get(task_id)
    return task_dict(task), 202, {"Location": f"/tasks/{task_id}"}
