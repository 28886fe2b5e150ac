"""Imported rows and row errors, paged by key."""

import orjson

from app.core import queries
from app.web.api import Blueprint, next_link, page_cursor, store, within_budget
from app.web.errors import ApiError
from app.web.schemas import EntryListArgs, EntryListSchema, PageArgs, RowErrorListSchema

blp = Blueprint("entries", __name__, description="Imported rows and row errors")


def _require_task(conn, task_id: int):
    task = queries.get_task(conn, task_id)
    if task is None:
        raise ApiError(404, f"task {task_id} not found")
    return task


@blp.route("/csv_entries")
@blp.arguments(EntryListArgs, location="query")
@blp.response(200, EntryListSchema)
@blp.alt_response(404, schema="Error", description="unknown task_id")
def list_entries(args):
    """Imported rows in import order; `task_id` filters."""
    task_id = args["task_id"]
    after = page_cursor(args)
    if after is not None and not isinstance(after, tuple):  # a row number: in task_id
        after = (task_id or 0, after)
    with store().read() as conn:  # one snapshot: the rows and their headers
        if task_id is not None:
            _require_task(conn, task_id)
        rows = queries.entries_page(conn, args["limit"], after, task_id)
        texts = queries.headers(conn, {r.task_id for r in rows})
    headers = {k: orjson.loads(v or "[]") for k, v in texts.items()}
    # An entry's JSON is about its data plus its header's names (its keys): a page of
    # a 10,000-column import stops long before `limit` rows.
    rows, cut = within_budget(rows, lambda r: len(r.data) + len(texts[r.task_id] or "") + 64)
    entries = [
        {
            "id": f"{r.task_id}:{r.row_number}",
            "task_id": r.task_id,
            "row_number": r.row_number,
            "data": dict(zip(headers[r.task_id], orjson.loads(r.data), strict=False)),
        }
        for r in rows
    ]
    # Within one task the cursor is the row number, else the key (task_id, row_number).
    key = (lambda r: r.row_number) if task_id is not None else (lambda r: (r.task_id, r.row_number))
    return {"entries": entries, "next": next_link(rows, args, key, cut)}


@blp.route("/tasks/<int:task_id>/errors")
@blp.arguments(PageArgs, location="query")
@blp.response(200, RowErrorListSchema)
@blp.alt_response(404, schema="Error")
def list_errors(args, task_id):
    """The rows that could not be imported, with line number, text and reason."""
    with store().read() as conn:
        _require_task(conn, task_id)
        rows = queries.errors_page(conn, task_id, args["limit"], page_cursor(args))
    rows, cut = within_budget(rows, lambda r: len(r.raw) * 2 + len(r.reason) + 64)
    errors = [
        {"row_number": r.row_number, "line_number": r.line_number, "raw": r.raw, "reason": r.reason}
        for r in rows
    ]
    next_page = next_link(rows, args, lambda r: r.id, cut, task_id=task_id)
    return {"errors": errors, "next": next_page}
